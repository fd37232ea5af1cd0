"""The KGCN/RippleNet research layout: ``ratings_final.txt`` with ``kg_final.txt``, or with ``kg.txt``.

A folder in this layout holds (each file may also be gzipped, ``name.txt.gz``):

- ``ratings_final.txt``: ``user item label`` per line (tab or space separated), remapped
  integer ids; label ``1`` is a positive and becomes a ``purchase``; label ``0`` marks the
  negatives KGCN's preprocessing samples, which are not interactions and are skipped;
- the knowledge graph, in one of two forms:
  - ``kg_final.txt``: ``head relation tail`` integers, entities ``0 .. n_items-1`` being
    the items; relations have no names in this form and are called ``r<id>``;
  - the raw form KGCN's ``preprocess.py`` reads: ``kg.txt`` (``head relation tail`` with
    Satori/Freebase entity ids and names such as ``film.film.genre``) and
    ``item_index2entity_id.txt`` (``item_index entity_id``), whose line ``i`` is item ``i``
    of ``ratings_final.txt``. ``kg_rehashed.txt`` / ``item_index2entity_id_rehashed.txt``
    (RippleNet's movie files) are read the same way. When both forms are present, the raw
    form wins, for its relation names.

Items keep their remapped index as id (``"0"``, ``"1"``...), users too. An entity that is
not an item is ``e:<index>``, with the index KGCN's preprocessing gives it (in the raw form:
items first, then each new entity in order of first appearance in ``kg.txt``, head before
tail), so both forms of one data set give the same ids; in the raw form the entity's Satori
id is its name. Raw relations are numbered in order of first appearance in ``kg.txt`` (as
KGCN's preprocessing numbers them, so ``r<id>`` of ``kg_final.txt`` is the same relation) and
named by :func:`kgrec.datasets.kgat.unique_relation_names`: one name each, ``r<id>`` for one
with no letter or digit.

The files carry no time: records come in file order, but that order is not a sequence
(KGCN writes a user's positives in set order, close to item order), so no ``ts`` or ``seq``
is set and leave-last-out's seeded tie-break holds out a random positive per user, much
like KGCN's own random split.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from graph_schema.allow_list import ATTRIBUTE_RELATIONS
from kgrec.datasets.kgat import EntityKinds, integer_lines, unique_relation_names
from kgrec.datasets.records import (
    EntityRecord,
    InteractionRecord,
    ItemRecord,
    Problems,
    TripleRecord,
    find_file,
    open_text,
)
from kgrec.limits import id_problem

RAW_KG = ("kg.txt", "kg_rehashed.txt")
RAW_ITEM_MAP = ("item_index2entity_id.txt", "item_index2entity_id_rehashed.txt")

# (line, head index, tail index, relation name, head name, tail name)
_Row = tuple[int, int, int, str, str | None, str | None]


def _first(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        path = find_file(folder, stem)
        if path is not None:
            return path
    return None


class KgcnDataset:
    """A folder in the KGCN/RippleNet layout (module docstring)."""

    flags_bots = False  # no timestamps

    def __init__(self, folder: Path, name: str | None = None) -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.problems = Problems()
        ratings = find_file(self.folder, "ratings_final.txt")
        if ratings is None:
            raise FileNotFoundError(f"{self.folder}: no ratings_final.txt or ratings_final.txt.gz")
        self.ratings_path = ratings
        kg_raw, item_map = _first(self.folder, RAW_KG), _first(self.folder, RAW_ITEM_MAP)
        self.kg_final = find_file(self.folder, "kg_final.txt")
        if kg_raw is not None and item_map is None and self.kg_final is None:
            raise FileNotFoundError(f"{kg_raw} needs item_index2entity_id.txt beside it (or a kg_final.txt)")
        # kg.txt is read only with its item map; the map alone still gives the number of items
        self.kg_raw = kg_raw if item_map is not None else None
        self.item_map = item_map
        self._satori_items: dict[str, int] | None = None
        self._map_size = 0
        self._n_items: int | None = None
        self._rated: set[int] | None = None
        self._relation_names: dict[str, str] | None = None

    def _ratings(self, problems: Problems) -> Iterator[tuple[int, int, int, int]]:
        """``(line, user, item, label)`` of each valid ratings_final line, in file order."""
        for line_number, (user, item, label) in integer_lines(self.ratings_path, 3, problems):
            if label not in (0, 1):
                problems.add(self.ratings_path, line_number, f"label {label} is neither 0 nor 1")
                continue
            yield line_number, user, item, label

    def interactions(self) -> Iterator[InteractionRecord]:
        """One ``purchase`` per positive line (label 1), in file order; negatives are skipped.

        With an item map, an item beyond it is reported: it could not be an entity of the graph.
        """
        limit = self.n_items() if self.item_map is not None else None
        for line_number, user, item, label in self._ratings(self.problems):
            if limit is not None and item >= limit:
                self.problems.add(self.ratings_path, line_number, f"item {item} is not in the item map")
                continue
            if label == 1:
                yield InteractionRecord(str(user), str(item), "purchase")

    def satori_items(self) -> dict[str, int]:
        """Satori/Freebase entity id -> item index, from ``item_index2entity_id.txt`` (empty without it).

        Item ``i`` is the map's line ``i`` (blank lines aside), as in KGCN's preprocessing,
        where a later line for the same entity id wins. A line without two fields is reported
        and still takes its index, so the items after it keep theirs.
        """
        if self._satori_items is None:
            self._satori_items = {}
            if self.item_map is not None:
                with open_text(self.item_map) as handle:
                    for line_number, line in enumerate(handle, start=1):
                        parts = line.split()
                        if not parts:
                            continue
                        if len(parts) != 2:
                            reason = f"expected item_index entity_id, found {len(parts)} field(s)"
                            self.problems.add(self.item_map, line_number, reason)
                        else:
                            self._satori_items[parts[1]] = self._map_size
                        self._map_size += 1
        return self._satori_items

    def _rated_items(self) -> set[int]:
        """Every item index ``ratings_final.txt`` names, positive or negative (read once)."""
        if self._rated is None:
            self._rated = {item for _, _, item, _ in self._ratings(Problems())}
        return self._rated

    def n_items(self) -> int:
        """Items are entities ``0 .. n_items-1``: the item map's size, else 1 + the largest rated item."""
        if self._n_items is None:
            self.satori_items()
            if self.item_map is not None:
                self._n_items = self._map_size
            else:
                self._n_items = 1 + max(self._rated_items(), default=-1)
        return self._n_items

    def items(self) -> Iterator[ItemRecord]:
        """Items ``0 .. n_items-1`` with an item map (one per line), else every item index the ratings or
        ``kg_final.txt`` name, in index order (no titles or brands in this layout).

        Without a map only indexes that occur become items: one stray large id in the ratings moves
        the item/entity boundary, but creates no item for each index below it.
        """
        if self.item_map is not None:
            return (ItemRecord(str(index)) for index in range(self.n_items()))
        seen = set(self._rated_items())
        n_items = self.n_items()
        for _, h, t, _, _, _ in self._kg_rows(Problems()):
            seen.update(index for index in (h, t) if index < n_items)
        return (ItemRecord(str(index)) for index in sorted(seen))

    def _raw_relation_names(self) -> dict[str, str]:
        """Each raw relation of ``kg.txt`` -> its name: numbered by first appearance, as KGCN's
        preprocessing numbers them, and named once each by :func:`unique_relation_names` (two raw
        relations that read alike, ``film#genre`` and ``film?genre``, stay two relations)."""
        if self._relation_names is None:
            assert self.kg_raw is not None
            numbers: dict[str, int] = {}
            with open_text(self.kg_raw) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 3:
                        numbers.setdefault(parts[1], len(numbers))
            names = unique_relation_names({number: raw for raw, number in numbers.items()})
            self._relation_names = {raw: names[number] for raw, number in numbers.items()}
        return self._relation_names

    def _raw_rows(self, problems: Problems) -> Iterator[_Row]:
        """Rows of ``kg.txt``, entities numbered as KGCN's ``convert_kg`` numbers them."""
        assert self.kg_raw is not None
        relations = self._raw_relation_names()
        index = dict(self.satori_items())
        next_index = self.n_items()
        with open_text(self.kg_raw) as handle:
            for line_number, line in enumerate(handle, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 3:
                    problems.add(self.kg_raw, line_number, f"expected 3 fields, found {len(parts)}")
                    continue
                head, raw_relation, tail = parts
                ends = []
                for satori in (head, tail):  # numbered first, as convert_kg does, so later ids match
                    if satori not in index:
                        index[satori] = next_index
                        next_index += 1
                    ends.append(index[satori])
                yield line_number, ends[0], ends[1], relations[raw_relation], head, tail

    def _final_rows(self, problems: Problems) -> Iterator[_Row]:
        assert self.kg_final is not None
        for line_number, (h, r, t) in integer_lines(self.kg_final, 3, problems):
            yield line_number, h, t, f"r{r}", None, None

    def _kg_rows(self, problems: Problems) -> Iterator[_Row]:
        if self.kg_raw is not None:
            yield from self._raw_rows(problems)
        elif self.kg_final is not None:
            yield from self._final_rows(problems)

    def _end(self, index: int) -> str:
        return str(index) if index < self.n_items() else f"e:{index}"

    def triples(self) -> Iterator[TripleRecord]:
        """Knowledge triples, in file order (none without a knowledge graph)."""
        for _, h, t, relation, _, _ in self._kg_rows(self.problems):
            yield TripleRecord(self._end(h), relation, self._end(t))

    def entities(self) -> Iterator[EntityRecord]:
        """Every knowledge-graph entity that is not an item, with its kind and (raw form) Satori id as name.

        The kind is :func:`kgrec.datasets.kgat.relation_kind` of the relation that most often
        points at the entity (None in the ``kg_final.txt`` form, whose relations have no names).
        """
        kinds = EntityKinds()
        names: dict[str, str] = {}
        n_items = self.n_items()
        for _, h, t, relation, head_name, tail_name in self._kg_rows(Problems()):
            for index, name, incoming in ((h, head_name, None), (t, tail_name, relation)):
                if index < n_items or incoming in ATTRIBUTE_RELATIONS:  # a brand or category
                    continue
                entity_id = self._end(index)
                kinds.add(entity_id, incoming)
                if name is not None and id_problem(name) is None:
                    names.setdefault(entity_id, name)
        for entity_id, kind in kinds.kinds():
            yield EntityRecord(entity_id, kind, names.get(entity_id))
