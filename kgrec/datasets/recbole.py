"""RecBole's atomic files: ``<name>.inter``, with ``<name>.item``, ``<name>.kg`` and ``<name>.link``.

RecBole (github.com/RUCAIBox/RecBole) ships its data sets in this layout, among them
MovieLens-100k with a Freebase knowledge graph (the KB4Rec linkage), which kgrec fetches
as the built-in ``movielens-100k-freebase``. Every file is tab-separated, its first line
the columns as ``name:type`` (``token``, ``token_seq``, ``float``, ``float_seq``); a
``token_seq`` holds space-separated tokens. Each file may also be gzipped (``.gz``).

- ``<name>.inter`` (required): ``user_id``, ``item_id``, and optionally ``rating`` and
  ``timestamp`` (Unix seconds). A row with a rating is a ``rating`` interaction with that
  value, one without a ``purchase``.
- ``<name>.item`` (optional): ``item_id`` and any features. By column name:
  ``movie_title``/``title``/``name`` is the title (a token_seq joined with spaces),
  ``brand`` the brand, ``class``/``genre``/``genres``/``categories``/``category`` the
  categories, ``price`` the price, ``description`` the description. Every other token or
  token_seq column becomes knowledge: a triple ``item -<column>-> <column>:<value>`` per
  value, to an entity of kind ``<column>`` named by the value (``release_year`` gives
  ``1 -release_year-> release_year:1995``). Other float columns are not read.
- ``<name>.kg`` (optional): ``head_id``, ``relation_id``, ``tail_id``.
- ``<name>.link`` (optional): ``item_id``, ``entity_id``: which knowledge-graph entity is
  which item. A triple's end that is linked is that item; any other end is an entity
  with the knowledge graph's own id (a Freebase MID such as ``m.04ctbw8``), or
  ``e:<id>`` where that id already names an item. Relation names pass through
  :func:`kgrec.datasets.kgat.readable_relation` (``film.film.genre`` stays itself) and
  entity kinds come from :func:`kgrec.datasets.kgat.relation_kind`.

``<name>`` is the folder's name when ``<folder name>.inter`` exists (RecBole's own rule),
else the stem of the folder's only ``.inter`` file. ``.user`` files and RecBole's
pre-split ``<name>.train.inter`` files are not read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from graph_schema.allow_list import ATTRIBUTE_RELATIONS
from graph_schema.relation_names import relation_problem
from kgrec.datasets import records
from kgrec.datasets.kgat import EntityKinds, readable_relation
from kgrec.datasets.records import EntityRecord, InteractionRecord, ItemRecord, Problems, TripleRecord
from kgrec.events.validation import ValidationClock
from kgrec.field_types import is_number_text
from kgrec.limits import id_problem, kind_problem

TITLE_COLUMNS = ("movie_title", "title", "name")
CATEGORY_COLUMNS = ("class", "genre", "genres", "categories", "category")
# Columns with a role of their own; every other token column of <name>.item is knowledge.
ROLE_COLUMNS = ("item_id", *TITLE_COLUMNS, "brand", *CATEGORY_COLUMNS, "price", "description")
TOKEN_TYPES = ("token", "token_seq")
SUFFIXES = (".inter", ".item", ".kg", ".link")


def atomic_name(folder: Path) -> str | None:
    """The atomic files' ``<name>`` in ``folder`` (module docstring), or None when it has no ``.inter``."""
    stems = sorted(
        {
            p.name.removesuffix(".gz").removesuffix(".inter")
            for p in folder.glob("*.inter*")
            if p.name.endswith((".inter", ".inter.gz"))
        }
    )
    whole = [s for s in stems if "." not in s]  # not RecBole's pre-split <name>.train.inter
    if folder.name in whole:
        return folder.name
    return whole[0] if len(whole) == 1 else None


def _atomic_rows(
    path: Path, problems: Problems, required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str], dict[str, str]]]:
    """``(line, row, column types)`` per well-formed row of an atomic file; other rows reported.

    A header without every ``required`` column raises ValueError.
    """
    with records.open_text(path) as handle:
        header = handle.readline().rstrip("\r\n")
        if not header:
            return
        names, types = [], {}
        for field in header.split("\t"):
            name, _, kind = field.strip().partition(":")
            names.append(name)
            types[name] = kind or "token"
        missing = [c for c in required if c not in types]
        if missing:
            raise ValueError(f"{path}: missing required column(s) {', '.join(missing)}")
        for line_number, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(names):
                problems.add(path, line_number, f"expected {len(names)} fields, found {len(fields)}")
                continue
            yield line_number, dict(zip(names, (f.strip() for f in fields), strict=True)), types


def _first_column(row: dict[str, str], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in row), None)


def _interaction(row: dict[str, str], clock: ValidationClock | None = None) -> InteractionRecord:
    user_id, item_id = row["user_id"], row["item_id"]
    records.check_ids(("user_id", user_id), ("item_id", item_id))
    seconds, value = _number(row, "timestamp"), _number(row, "rating")
    kind = "rating" if value is not None else "purchase"
    ts = None if seconds is None else round(seconds * 1000)
    records.check_field("value", value)
    records.check_time("timestamp", row.get("timestamp") or "", ts, clock)
    return InteractionRecord(user_id, item_id, kind, ts=ts, value=value)


def _number(row: dict[str, str], column: str) -> float | None:
    """The row's ``column`` as a number; None when it is absent or empty."""
    text = row.get(column)
    if not text:
        return None
    # ASCII digits only: float() also reads 1_000 and other scripts' digits
    number = float(text) if is_number_text(text.strip()) else math.nan
    if not math.isfinite(number):
        raise records.BadRow(f"{column} {text[:40]!r} is not a finite number")
    return number


class RecboleDataset:
    """A folder of RecBole atomic files (module docstring)."""

    # Ratings entered in bulk at sign-up (MovieLens) are not a bot.
    flags_bots = False

    def __init__(self, folder: Path, name: str | None = None) -> None:
        self.folder = Path(folder)
        stem = atomic_name(self.folder)
        if stem is None:
            raise FileNotFoundError(f"{self.folder}: no <name>.inter file (RecBole atomic files)")
        self.name = name or stem
        self.problems = Problems()
        # the import's clock (kgrec.importer.prepare sets it): a timestamp further ahead is refused
        self.clock: ValidationClock | None = None
        self.paths = {s: records.find_file(self.folder, stem + s) for s in SUFFIXES}
        self._links: dict[str, str] | None = None
        self._item_ids: set[str] | None = None

    def interactions(self) -> Iterator[InteractionRecord]:
        """One interaction per row of ``<name>.inter``, in file order."""
        path = self.paths[".inter"]
        assert path is not None
        for line, row, _ in _atomic_rows(path, self.problems, ("user_id", "item_id")):
            try:
                yield _interaction(row, self.clock)
            except records.BadRow as exc:
                self.problems.add(path, line, str(exc))

    def _item_rows(self, problems: Problems) -> Iterator[tuple[int, dict[str, str], dict[str, str]]]:
        path = self.paths[".item"]
        if path is None:
            return
        for line, row, types in _atomic_rows(path, problems, ("item_id",)):
            problem = id_problem(row["item_id"])
            if problem is not None:
                problems.add(path, line, f"item_id {problem}")
                continue
            yield line, row, types

    def items(self) -> Iterator[ItemRecord]:
        """Items of ``<name>.item`` with title, brand, categories, price and description; without
        the file, each item of ``<name>.inter`` once, bare."""
        if self.paths[".item"] is None:
            yield from (ItemRecord(item_id) for item_id in sorted(self.item_ids()))
            return
        for line, row, _ in self._item_rows(self.problems):
            try:
                yield self._item(row)
            except records.BadRow as exc:
                self.problems.add(self.paths[".item"], line, str(exc))

    @staticmethod
    def _item(row: dict[str, str]) -> ItemRecord:
        title_column = _first_column(row, TITLE_COLUMNS)
        category_column = _first_column(row, CATEGORY_COLUMNS)
        title = " ".join(row[title_column].split()) if title_column else ""
        categories = tuple(dict.fromkeys(row[category_column].split())) if category_column else ()
        brand = row.get("brand") or None
        records.check_ids(("brand", brand), *((category_column or "", c) for c in categories))
        price, description = _number(row, "price"), row.get("description") or None
        # the API's bounds, as every loader has them
        for name, value in (("title", title or None), ("price", price), ("description", description)):
            records.check_field(name, value)
        return ItemRecord(
            row["item_id"],
            brand=brand,
            categories=categories,
            title=title or None,
            price=price,
            description=description,
        )

    def item_ids(self) -> set[str]:
        """Every item id of ``<name>.item`` and ``<name>.inter``."""
        if self._item_ids is None:
            ids = {row["item_id"] for _, row, _ in self._item_rows(Problems())}
            inter = self.paths[".inter"]
            assert inter is not None
            ids.update(row["item_id"] for _, row, _ in _atomic_rows(inter, Problems(), ("item_id",)))
            self._item_ids = ids
        return self._item_ids

    def links(self) -> dict[str, str]:
        """Knowledge-graph entity id -> item id, from ``<name>.link`` (empty without it)."""
        if self._links is None:
            self._links = {}
            path = self.paths[".link"]
            if path is not None:
                for line, row, _ in _atomic_rows(path, self.problems, ("item_id", "entity_id")):
                    if row["entity_id"] in self._links:
                        self.problems.add(path, line, f"entity_id {row['entity_id'][:40]!r} is linked twice")
                        continue
                    self._links[row["entity_id"]] = row["item_id"]
        return self._links

    def _attribute_rows(self, problems: Problems) -> Iterator[tuple[str, str, str, str]]:
        """``(item, relation, entity id, value)`` for each value of each knowledge column of ``<name>.item``.

        ``problems`` gets the bad columns and values; :meth:`items` reports the bad rows.
        """
        path = self.paths[".item"]
        for line, row, types in self._item_rows(Problems()):
            for column, text in row.items():
                if column in ROLE_COLUMNS or types.get(column) not in TOKEN_TYPES or not text:
                    continue
                problem = relation_problem(column) or kind_problem(column)
                if problem is not None:
                    problems.add(path, line, f"column {column[:40]!r}: {problem}")
                    continue
                for value in dict.fromkeys(text.split() if types[column] == "token_seq" else [text]):
                    entity_id = f"{column}:{value}"
                    if (problem := id_problem(entity_id)) is not None:
                        problems.add(path, line, f"{column} {problem}")
                        continue
                    yield row["item_id"], column, entity_id, value

    def _end(self, token: str) -> str:
        linked = self.links().get(token)
        if linked is not None:
            return linked
        return f"e:{token}" if token in self.item_ids() else token

    def _kg_rows(self, problems: Problems) -> Iterator[tuple[str, str, str]]:
        """``(head, relation, tail)`` of each valid row of ``<name>.kg``, ends as :meth:`_end` names them."""
        path = self.paths[".kg"]
        if path is None:
            return
        for line, row, _ in _atomic_rows(path, problems, ("head_id", "relation_id", "tail_id")):
            relation = readable_relation(row["relation_id"])
            if relation is None:
                reason = f"relation {row['relation_id'][:40]!r} has no letter or digit to name it by"
                problems.add(path, line, reason)
                continue
            head, tail = self._end(row["head_id"]), self._end(row["tail_id"])
            try:
                records.check_ids(("head_id", head), ("tail_id", tail))
            except records.BadRow as exc:
                problems.add(path, line, str(exc))
                continue
            yield head, relation, tail

    def triples(self) -> Iterator[TripleRecord]:
        """The item features' triples (``<name>.item``), then the knowledge graph's (``<name>.kg``)."""
        for item_id, relation, entity_id, _ in self._attribute_rows(self.problems):
            yield TripleRecord(item_id, relation, entity_id)
        for head, relation, tail in self._kg_rows(self.problems):
            yield TripleRecord(head, relation, tail)

    def entities(self) -> Iterator[EntityRecord]:
        """Each entity that is not an item: feature values (kind = column, named by the value), then the
        knowledge graph's (kind from the relation that most often points at it; no name)."""
        seen: set[str] = set()
        for _, column, entity_id, value in self._attribute_rows(Problems()):
            if entity_id not in seen:
                seen.add(entity_id)
                yield EntityRecord(entity_id, column, value)
        kinds = EntityKinds()
        items = set(self.links().values()) | self.item_ids()
        for head, relation, tail in self._kg_rows(Problems()):
            for end, incoming in ((head, None), (tail, relation)):
                if end in items or end in seen or incoming in ATTRIBUTE_RELATIONS:
                    continue
                kinds.add(end, incoming)
        yield from (EntityRecord(entity_id, kind) for entity_id, kind in kinds.kinds())
