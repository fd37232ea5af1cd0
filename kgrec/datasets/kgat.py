"""The KGAT amazon-book split (train.txt/test.txt, collaborative part only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kgrec.datasets.records import (
    InteractionRecord,
    ItemRecord,
    Problems,
    TripleRecord,
    find_file,
    open_text,
)
from kgrec.limits import id_problem


def _id_map(path: Path, problems: Problems) -> dict[str, str]:
    """remap_id -> org_id from user_list.txt / item_list.txt; an org_id that is no valid id is reported."""
    ids: dict[str, str] = {}
    with open_text(path) as handle:
        next(handle, None)  # header
        for line_number, line in enumerate(handle, start=2):
            parts = line.split()
            if len(parts) < 2:
                continue
            problem = id_problem(parts[0])
            if problem is not None:
                problems.add(path, line_number, f"org_id {problem}")
                continue
            ids[parts[1]] = parts[0]
    return ids


class KgatDataset:
    """Users and items keep their original Amazon ids; every pair is a ``purchase``."""

    name = "kgat-amazon-book"
    flags_bots = False  # no timestamps
    SPLITS = ("train", "test")

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.problems = Problems()
        self.users = _id_map(self._file("user_list.txt"), self.problems)
        self.item_ids = _id_map(self._file("item_list.txt"), self.problems)

    def _file(self, stem: str) -> Path:
        path = find_file(self.folder, stem)
        if path is None:
            raise FileNotFoundError(f"{self.folder}: no {stem}")
        return path

    def split(self, name: str) -> Iterator[InteractionRecord]:
        """Interactions of one split (``train`` or ``test``)."""
        path = self._file(f"{name}.txt")
        with open_text(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                parts = line.split()
                if not parts:
                    continue
                user = self.users.get(parts[0])
                if user is None:
                    self.problems.add(path, line_number, f"user {parts[0]} is not in user_list")
                    continue
                for remap in parts[1:]:
                    item = self.item_ids.get(remap)
                    if item is None:
                        self.problems.add(path, line_number, f"item {remap} is not in item_list")
                        continue
                    yield InteractionRecord(user, item, "purchase")

    def interactions(self) -> Iterator[InteractionRecord]:
        """Both splits: the import loads all the data; evaluation uses :meth:`split`."""
        for name in self.SPLITS:
            yield from self.split(name)

    def items(self) -> Iterator[ItemRecord]:
        """Every item of the item list (no titles or brands in this data set)."""
        return (ItemRecord(item_id) for item_id in self.item_ids.values())

    def triples(self) -> Iterator[TripleRecord]:
        """The KG triples file is not part of this copy of the data set."""
        return iter(())
