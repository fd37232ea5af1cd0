"""The kgrec dataset layout: a folder a user can fill with their own data.

- ``interactions.csv[.gz]``: ``user_id,item_id`` plus optional ``ts`` (Unix seconds, or an RFC 3339
  date-time with an offset, as the API reads one: :func:`kgrec.datasets.records.parse_timestamp_ms`)
  or ``seq_index``, ``type`` and ``value`` (none on a review, and a purchase's not
  negative, as the events API has it);
- ``items.csv[.gz]`` (optional): ``item_id,brand,categories,title,price`` plus an optional
  ``description`` (plain text, at most ``MAX_DESCRIPTION_LENGTH`` characters), with
  categories ``|``-separated;
- ``kg_triples.csv[.gz]`` (optional): ``head,relation,tail``, any relation name
  that :func:`graph_schema.relation_names.relation_problem` accepts;
- ``entities.csv[.gz]`` (optional): ``entity_id,kind,name``, the kind and name of
  knowledge-graph entities (kind: :func:`kgrec.limits.kind_problem`).

Ids follow kgrec's id rule (:func:`kgrec.limits.id_problem`); a row that breaks
it, or any other rule, is skipped and reported with its line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from graph_schema.allow_list import BEHAVIOURS
from graph_schema.relation_names import relation_problem
from kgrec.category_tree import repeated_category
from kgrec.datasets.records import (
    BadRow,
    EntityRecord,
    InteractionRecord,
    ItemRecord,
    Problems,
    TripleRecord,
    check_field,
    check_ids,
    check_time,
    check_value,
    find_file,
    located_rows,
    parse_timestamp_ms,
    parsed_rows,
)
from kgrec.events.validation import ValidationClock, field_problem
from kgrec.field_types import whole_number
from kgrec.limits import MAX_GRAPH_INTEGER, kind_problem


def _optional_float(name: str, text: str) -> float | None:
    if not text.strip():
        return None
    try:
        number = float(text)
    except ValueError as exc:
        raise BadRow(f"{name}: {exc}") from None
    if not math.isfinite(number):
        raise BadRow(f"{name}: {name} {text!r} is not a finite number")
    check_field(name, number)
    return number


def _interaction(
    row: dict[str, str], default_type: str, clock: ValidationClock | None = None
) -> InteractionRecord:
    user_id, item_id = row["user_id"].strip(), row["item_id"].strip()
    check_ids(("user_id", user_id), ("item_id", item_id))
    kind = (row.get("type") or "").strip() or default_type
    if kind not in BEHAVIOURS:
        raise BadRow(f"type {kind!r} is not one of {', '.join(BEHAVIOURS)}")
    try:
        ts = parse_timestamp_ms(row["ts"]) if (row.get("ts") or "").strip() else None
    except ValueError as exc:
        raise BadRow(f"ts {exc}") from None
    check_time("ts", row.get("ts") or "", ts, clock)
    seq_text = (row.get("seq_index") or "").strip()
    seq = whole_number(seq_text, MAX_GRAPH_INTEGER) if seq_text else None
    if seq_text and seq is None:
        raise BadRow(f"seq_index {seq_text[:60]!r} is not a whole number from 0 to 2**63 - 1")
    value = _optional_float("value", row.get("value") or "")
    check_value(kind, value)
    return InteractionRecord(
        user_id=user_id,
        item_id=item_id,
        type=kind,
        ts=ts,
        seq=seq,
        value=value,
    )


def _item(row: dict[str, str]) -> ItemRecord:
    item_id = row["item_id"].strip()
    brand = (row.get("brand") or "").strip() or None
    categories = tuple(c.strip() for c in (row.get("categories") or "").split("|") if c.strip())
    check_ids(("item_id", item_id), ("brand", brand), *(("categories", c) for c in categories))
    repeated = repeated_category(categories)
    if repeated is not None:
        raise BadRow(
            f"categories lists {repeated!r} twice: a path goes from general to specific without repeats "
            f"(got {row.get('categories')!r})"
        )
    if categories:
        check_field("categories", list(categories))
    title = (row.get("title") or "").strip() or None
    check_field("title", title)
    description = (row.get("description") or "").strip() or None
    check_field("description", description)
    return ItemRecord(
        item_id=item_id,
        brand=brand,
        categories=categories,
        title=title,
        price=_optional_float("price", row.get("price") or ""),
        description=description,
    )


def _triple(row: dict[str, str]) -> TripleRecord:
    head, relation, tail = row["head"].strip(), row["relation"].strip(), row["tail"].strip()
    check_ids(("head", head), ("tail", tail))
    problem = relation_problem(relation)
    if problem is not None:
        raise BadRow(f"relation {problem}")
    return TripleRecord(head, relation, tail)


def _entity(row: dict[str, str]) -> EntityRecord:
    entity_id = row["entity_id"].strip()
    kind = (row.get("kind") or "").strip() or None
    name = (row.get("name") or "").strip() or None
    check_ids(("entity_id", entity_id))
    problem = None if kind is None else kind_problem(kind)
    if problem is not None:
        raise BadRow(f"kind {problem}")
    if name is not None and (problem := field_problem("title", name)) is not None:
        raise BadRow(f"name {problem}")  # an entity's name is bounded as an item's title is
    return EntityRecord(entity_id, kind, name)


class LayoutDataset:
    """Reads a folder in the kgrec dataset layout."""

    flags_bots = True

    def __init__(self, folder: Path, name: str | None = None, default_type: str = "purchase") -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.default_type = default_type
        self.problems = Problems()
        # the import's clock: a ts more than its skew ahead is refused, as the events API refuses
        # it (kgrec.importer.prepare sets it; None: only 9999 bounds a time)
        self.clock: ValidationClock | None = None
        if find_file(self.folder, "interactions.csv") is None:
            raise FileNotFoundError(f"{self.folder}: no interactions.csv or interactions.csv.gz")

    def interactions(self) -> Iterator[InteractionRecord]:
        """Valid interaction rows; bad rows are recorded in ``self.problems``."""
        path = find_file(self.folder, "interactions.csv")
        assert path is not None
        parse = partial(_interaction, default_type=self.default_type, clock=self.clock)
        yield from parsed_rows(path, ("user_id", "item_id"), self.problems, parse)

    def items(self) -> Iterator[ItemRecord]:
        """Catalogue rows from items.csv, if present; a repeated item_id is reported and skipped
        (the first row wins: merged, a later row's empty title or price replaced the first's)."""
        path = find_file(self.folder, "items.csv")
        if path is None:
            return
        first_line: dict[str, int] = {}
        for line, item in located_rows(path, ("item_id",), self.problems, _item):
            first = first_line.setdefault(item.item_id, line)
            if first != line:
                again = f"item_id {item.item_id!r} is listed again (first on line {first})"
                self.problems.add(path, line, f"{again}; the first row is kept")
                continue
            yield item

    def triples(self) -> Iterator[TripleRecord]:
        """Knowledge-graph triples from kg_triples.csv, if present."""
        path = find_file(self.folder, "kg_triples.csv")
        if path is not None:
            for line, triple in located_rows(path, ("head", "relation", "tail"), self.problems, _triple):
                yield triple._replace(source=(str(path), line))

    def entities(self) -> Iterator[EntityRecord]:
        """Entity kinds and names from entities.csv, if present."""
        path = find_file(self.folder, "entities.csv")
        if path is not None:
            for line, entity in located_rows(path, ("entity_id",), self.problems, _entity):
                yield entity._replace(source=(str(path), line))
