"""Failures of the core that an adapter (the API, the CLI) reports in its own terms."""

from __future__ import annotations


class NoActiveModel(Exception):
    """No model version is active yet: nothing can be ranked until the first training."""

    def __init__(self, detail: str = "no model has been trained yet (run `kgrec train`)") -> None:
        super().__init__(detail)
        self.detail = detail


class ArgumentProblem(Exception):
    """An argument the core cannot answer for; ``field`` names it and ``value`` is what it was."""

    def __init__(self, field: str, value: object, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.value = value
        self.detail = detail


class NotFound(ArgumentProblem):
    """The thing an id names does not exist; ``field`` names the argument that carried the id."""


class MigrationsPending(Exception):
    """The graph lacks migrations this code reads by (``ids``): ``kgrec migrate`` has not run yet."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.detail = (
            f"the graph lacks {len(ids)} migration(s) this version reads by: {', '.join(ids)} "
            "(run `kgrec migrate`); until then some reads miss data (folded-in items, for one)"
        )
        super().__init__(self.detail)
