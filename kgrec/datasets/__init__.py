"""Data sets kgrec can import: the built-in public ones, or any folder in the kgrec layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kgrec.datasets.kgat import KgatDataset
from kgrec.datasets.layout import LayoutDataset
from kgrec.datasets.movielens import MovieLensDataset
from kgrec.datasets.records import (
    EntityRecord,
    InteractionRecord,
    ItemRecord,
    Problems,
    RowProblem,
    TripleRecord,
)

BUILTIN = {
    "amazon-beauty": "amazon-beauty-kg",
    "movielens": "movielens-ml-latest-small",
    "kgat-amazon-book": "kgat-amazon-book",
}


class Dataset(Protocol):
    """What the importer needs from a data set."""

    name: str
    problems: Problems
    # True: users with more timed events in one minute than Settings.bot_events_per_minute are flagged
    # as bots on import, as the live event path does.
    flags_bots: bool

    def items(self) -> Iterator[ItemRecord]: ...

    def interactions(self) -> Iterator[InteractionRecord]: ...

    def triples(self) -> Iterator[TripleRecord]: ...

    def entities(self) -> Iterator[EntityRecord]:
        """Kinds and names of knowledge-graph entities (``entities.csv``); empty when the data has none."""
        ...


def open_dataset(name_or_path: str, data_dir: Path) -> Dataset:
    """A built-in data set by name (read from ``data_dir``), or a folder in the kgrec layout."""
    if name_or_path == "movielens":
        return MovieLensDataset(data_dir / BUILTIN["movielens"])
    if name_or_path == "kgat-amazon-book":
        return KgatDataset(data_dir / BUILTIN["kgat-amazon-book"])
    if name_or_path == "amazon-beauty":
        return LayoutDataset(data_dir / BUILTIN["amazon-beauty"], name="amazon-beauty")
    folder = Path(name_or_path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a built-in data set ({', '.join(BUILTIN)}) nor a folder"
        )
    return LayoutDataset(folder)


__all__ = [
    "BUILTIN",
    "Dataset",
    "EntityRecord",
    "InteractionRecord",
    "ItemRecord",
    "RowProblem",
    "TripleRecord",
    "open_dataset",
]
