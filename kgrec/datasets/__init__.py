"""Data sets kgrec can import: the built-in public ones, or a folder recognised by its files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, cast

from kgrec.datasets.demo_shop import DemoShopDataset
from kgrec.datasets.kgat import KgatDataset
from kgrec.datasets.kgcn import KgcnDataset
from kgrec.datasets.layout import LayoutDataset
from kgrec.datasets.movielens import MovieLensDataset
from kgrec.datasets.recbole import RecboleDataset, atomic_name
from kgrec.datasets.records import (
    EntityRecord,
    InteractionRecord,
    ItemRecord,
    Problems,
    RowProblem,
    TripleRecord,
    find_file,
)

BUILTIN = {
    "amazon-beauty": "amazon-beauty-kg",
    "movielens": "movielens-ml-latest-small",
    "kgat-amazon-book": "kgat-amazon-book",
    "movielens-100k-freebase": "movielens-100k-freebase",
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


class DerivedKnowledge(Protocol):
    """A data set some of whose knowledge relations are derived from its own interactions.

    A split that holds (user, item) pairs out for testing must not train on knowledge counted from
    those pairs' interactions (a co-purchase link of a test purchase names the test item). A data set
    whose triples include such relations declares them, and rebuilds them for a split: the generic
    split (:func:`training_triples`) asks it and never names a data set. A data set without
    ``derived_relations`` derives none: its triples are copied as they are.
    """

    # The relations of triples() that are counted from interactions() (the others are not touched).
    derived_relations: tuple[str, ...]

    def derived_triples(self, held_out: Iterable[tuple[str, str]]) -> Iterator[TripleRecord]:
        """The ``derived_relations`` triples rebuilt from the interactions of every (user, item) pair
        except the ``held_out`` ones, as the data set derives them from all of its interactions."""
        ...


def training_triples(
    dataset: object, triples: Iterable[TripleRecord], held_out: Iterable[tuple[str, str]]
) -> Iterator[TripleRecord]:
    """``triples`` of ``dataset`` for a split that holds the ``held_out`` (user, item) pairs out.

    The triples of the data set's :attr:`DerivedKnowledge.derived_relations` are dropped and
    :meth:`DerivedKnowledge.derived_triples` of the other pairs' interactions put in their place; a
    data set that declares none keeps its ``triples`` as they are.
    """
    derived = tuple(getattr(dataset, "derived_relations", ()))
    if not derived:
        yield from triples
        return
    yield from (t for t in triples if t.relation not in derived)
    yield from cast(DerivedKnowledge, dataset).derived_triples(held_out)


def stated_before(triple: TripleRecord, moment: int | None) -> bool | None:
    """Whether ``triple`` was stated before ``moment`` (epoch ms), for a split that must not train on
    knowledge stated later (a MovieLens tag carries its user and time); None when the triple or the
    moment has no time, which each split settles: the evaluation's holds a test user's undated
    statements out, bench/incremental.py's time split keeps undated triples (catalogue knowledge)."""
    if triple.ts is None or moment is None:
        return None
    return triple.ts < moment


# How a folder's layout is recognised: the files it must hold (each plain or .gz), first match wins.
LAYOUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kgrec", ("interactions.csv",)),
    ("KGAT/KGIN", ("train.txt", "test.txt")),
    ("KGCN/RippleNet", ("ratings_final.txt",)),
    ("MovieLens", ("ratings.csv", "movies.csv")),
)
# RecBole's atomic files are named after the data set (<name>.inter), so no fixed file name finds them.
RECBOLE = "RecBole atomic files"


def folder_layout(folder: Path) -> str | None:
    """The name of the layout ``folder`` is in (:data:`LAYOUTS`), or None when it is in none."""
    for layout, files in LAYOUTS:
        if all(find_file(folder, stem) is not None for stem in files):
            return layout
    return RECBOLE if atomic_name(folder) is not None else None


def _folder(name_or_path: str, data_dir: Path) -> Path:
    """The folder a data set that is not built in names: a path, or a folder's name in ``data_dir``."""
    folder = Path(name_or_path)
    if not folder.is_dir() and (data_dir / name_or_path).is_dir():
        folder = data_dir / name_or_path  # a data set folder by its name in the data sets folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a built-in data set ({', '.join(BUILTIN)}) nor a folder, "
            f"here or in {data_dir}"
        )
    return folder


def import_source(name_or_path: str, data_dir: Path) -> str:
    """How the graph's import record names a data set, one name however it was given: a built-in
    one by its name, also when given as its folder (by path, or its folder's name in ``data_dir``),
    any other folder by its absolute path (so that ``kgrec up --import`` with it finds the folder
    from any directory). The record keeps each data set's first import under this name."""
    if name_or_path in BUILTIN:
        return name_or_path
    folder = _folder(name_or_path, data_dir).resolve()
    builtin = (name for name, stored in BUILTIN.items() if (data_dir / stored).resolve() == folder)
    return next(builtin, str(folder))


def recorded_source(recorded: str, data_dir: Path) -> str:
    """The name :func:`import_source` gives today to a data set an import record names ``recorded``.

    Records kept before built-in data sets were named by their name hold their folder's absolute
    path; compared as they are, the same data set would look like another. A folder no longer
    there keeps the recorded name.
    """
    try:
        return import_source(recorded, data_dir)
    except FileNotFoundError:
        return recorded


def open_dataset(name_or_path: str, data_dir: Path) -> Dataset:
    """A built-in data set by name (read from ``data_dir``), or a folder recognised by its files
    (a path, or the name of a folder in ``data_dir``).

    A folder with ``interactions.csv`` is in the kgrec layout (a demo shop when it also holds
    ``demo_shop.json``: :class:`DemoShopDataset`), one with ``train.txt`` and
    ``test.txt`` in the KGAT/KGIN layout, one with ``ratings_final.txt`` in the KGCN/RippleNet
    layout, and one with MovieLens' ``ratings.csv`` and ``movies.csv`` is read as MovieLens.
    """
    if name_or_path in BUILTIN and not (data_dir / BUILTIN[name_or_path]).is_dir():
        raise FileNotFoundError(
            f"the built-in data set {name_or_path!r} is not in {data_dir} (no folder "
            f"{BUILTIN[name_or_path]}); get it with: kgrec data fetch {name_or_path}"
        )
    if name_or_path == "movielens":
        return MovieLensDataset(data_dir / BUILTIN["movielens"])
    if name_or_path == "kgat-amazon-book":
        return KgatDataset(data_dir / BUILTIN["kgat-amazon-book"], name="kgat-amazon-book")
    if name_or_path == "movielens-100k-freebase":
        return RecboleDataset(data_dir / BUILTIN[name_or_path], name=name_or_path)
    if name_or_path == "amazon-beauty":
        return LayoutDataset(data_dir / BUILTIN["amazon-beauty"], name="amazon-beauty")
    folder = _folder(name_or_path, data_dir)
    layout = folder_layout(folder)
    if layout == "KGAT/KGIN":
        return KgatDataset(folder)
    if layout == "KGCN/RippleNet":
        return KgcnDataset(folder)
    if layout == "MovieLens":
        return MovieLensDataset(folder)
    if layout == RECBOLE:
        return RecboleDataset(folder)
    if layout is None:
        expected = "; ".join(f"{' + '.join(files)} ({name})" for name, files in LAYOUTS)
        expected += f"; <name>.inter ({RECBOLE})"
        raise FileNotFoundError(f"{folder}: no data set layout recognised; expected one of: {expected}")
    if DemoShopDataset.recognises(folder):
        return DemoShopDataset(folder)
    return LayoutDataset(folder)


__all__ = [
    "BUILTIN",
    "Dataset",
    "DemoShopDataset",
    "DerivedKnowledge",
    "EntityRecord",
    "InteractionRecord",
    "ItemRecord",
    "KgatDataset",
    "KgcnDataset",
    "LayoutDataset",
    "MovieLensDataset",
    "RecboleDataset",
    "RowProblem",
    "TripleRecord",
    "folder_layout",
    "import_source",
    "open_dataset",
    "recorded_source",
    "training_triples",
]
