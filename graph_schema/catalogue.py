"""The Cypher catalogue: every statement kgrec sends, as a named constant.

A :class:`Statement` carries its text, whether it reads or writes, and an
example value for each parameter. The examples declare the parameters to the
Neo4j lint and let the gateway refuse a call whose parameters do not match.
The keys of the example rows are the row fields the lint accepts (``r.<key>``
after ``UNWIND $rows AS r``), and the keys of a map a statement writes with
``SET n += r.<key>`` must be allow-listed graph properties.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["read", "write"]

_PARAM_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

# Constructs one engine accepts and the other does not, or that replay
# differently from the AOF (timestamp(), rand()): never allowed in the catalogue.
FORBIDDEN_CONSTRUCTS: dict[str, re.Pattern[str]] = {
    "elementId()": re.compile(r"\belementId\s*\(", re.IGNORECASE),
    "id()": re.compile(r"(?<![.\w])id\s*\(", re.IGNORECASE),
    "datetime()": re.compile(r"\b(datetime|date|localdatetime|duration)\s*\(", re.IGNORECASE),
    "EXISTS {}": re.compile(r"\bEXISTS\s*\{", re.IGNORECASE),
    "APOC": re.compile(r"\bapoc\.", re.IGNORECASE),
    "vecf32()": re.compile(r"\bvecf32\s*\(", re.IGNORECASE),
    "timestamp()": re.compile(r"\btimestamp\s*\(", re.IGNORECASE),
    "rand()": re.compile(r"\brand\s*\(", re.IGNORECASE),
}


@dataclass(frozen=True)
class Statement:
    """One named Cypher statement, valid on both Neo4j 5 and FalkorDB."""

    name: str
    cypher: str
    mode: Mode
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        used = set(_PARAM_RE.findall(self.cypher))
        declared = set(self.params)
        if used != declared:
            raise ValueError(
                f"statement {self.name}: parameters used {sorted(used)} != declared {sorted(declared)}"
            )

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise ValueError when ``params`` does not supply exactly the declared parameters."""
        if set(params) != set(self.params):
            raise ValueError(f"statement {self.name} takes {sorted(self.params)}, got {sorted(params)}")


def read(name: str, cypher: str, /, **params: Any) -> Statement:
    """Declare a read statement; keyword arguments are example parameter values."""
    return Statement(name=name, cypher=cypher.strip(), mode="read", params=params)


def write(name: str, cypher: str, /, **params: Any) -> Statement:
    """Declare a write statement; keyword arguments are example parameter values."""
    return Statement(name=name, cypher=cypher.strip(), mode="write", params=params)


def known_ids(name: str, label: str, example: str, returned: Sequence[str] = ()) -> Statement:
    """A read of which of ``$ids`` are ``label`` nodes (one statement for a batch of ids), with
    their ``returned`` properties (each as its own column; null where unset).

    ``label`` and ``returned`` must come from the allow-list (``graph_schema.allow_list``)."""
    columns = "".join(f", n.{key} AS {key}" for key in returned)
    return read(
        name,
        f"""
        UNWIND $ids AS id
        MATCH (n:{label} {{id: id}})
        RETURN n.id AS id{columns}
        """,
        ids=[example],
    )


def _statements_of(modules: list[Any]) -> list[Statement]:
    """Every Statement the modules hold, by name (also those in a dict of them)."""
    found: dict[str, Statement] = {}
    for module in modules:
        for value in vars(module).values():
            candidates = value.values() if isinstance(value, dict) else [value]
            for candidate in candidates:
                if isinstance(candidate, Statement):
                    other = found.get(candidate.name)
                    if other is not None and other is not candidate:
                        raise ValueError(f"two statements are named {candidate.name}")
                    found[candidate.name] = candidate
    return sorted(found.values(), key=lambda s: s.name)


def all_statements() -> list[Statement]:
    """Every statement in ``graph_schema.statements``, found by walking its modules."""
    from graph_schema import statements as package

    modules = pkgutil.iter_modules(package.__path__)
    return _statements_of([importlib.import_module(f"{package.__name__}.{info.name}") for info in modules])


def bench_statements() -> list[Statement]:
    """The statements only the benchmarks and the tests' checks send (``graph_schema.bench_statements``),
    kept out of :func:`all_statements` so that the catalogue holds only what the product runs."""
    from graph_schema import bench_statements as module

    return _statements_of([module])
