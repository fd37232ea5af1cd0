"""The kgrec dataset layout: a folder a user can fill with their own data.

- ``interactions.csv[.gz]``: ``user_id,item_id`` plus optional ``ts`` (ISO-8601 or
  Unix seconds) or ``seq_index``, ``type`` and ``value``;
- ``items.csv[.gz]`` (optional): ``item_id,brand,categories,title,price``, with
  categories ``|``-separated;
- ``kg_triples.csv[.gz]`` (optional): ``head,relation,tail``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from graph_schema.allow_list import ATTRIBUTE_RELATIONS, BEHAVIOURS, KNOWLEDGE_RELATIONS
from kgrec.datasets.records import (
    InteractionRecord,
    ItemRecord,
    Problems,
    TripleRecord,
    find_file,
    parse_timestamp_ms,
    read_csv,
)

MAX_ID_LENGTH = 256
KNOWN_RELATIONS = (*KNOWLEDGE_RELATIONS, *ATTRIBUTE_RELATIONS)


def _id_problem(name: str, value: str) -> str | None:
    if not value:
        return f"{name} is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"{name} is longer than {MAX_ID_LENGTH} characters"
    return None


def _optional_float(name: str, text: str) -> float | None:
    if not text.strip():
        return None
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{name} {text!r} is not a finite number")
    return number


class LayoutDataset:
    """Reads a folder in the kgrec dataset layout."""

    def __init__(self, folder: Path, name: str | None = None, default_type: str = "purchase") -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.default_type = default_type
        self.problems = Problems()
        if find_file(self.folder, "interactions.csv") is None:
            raise FileNotFoundError(f"{self.folder}: no interactions.csv or interactions.csv.gz")

    def interactions(self) -> Iterator[InteractionRecord]:
        """Valid interaction rows; bad rows are recorded in ``self.problems``."""
        path = find_file(self.folder, "interactions.csv")
        assert path is not None
        for line, row in read_csv(path, ("user_id", "item_id"), self.problems):
            user_id, item_id = row["user_id"].strip(), row["item_id"].strip()
            reason = _id_problem("user_id", user_id) or _id_problem("item_id", item_id)
            if reason:
                self.problems.add(path, line, reason)
                continue
            kind = (row.get("type") or "").strip() or self.default_type
            if kind not in BEHAVIOURS:
                self.problems.add(path, line, f"type {kind!r} is not one of {', '.join(BEHAVIOURS)}")
                continue
            try:
                ts = parse_timestamp_ms(row["ts"]) if (row.get("ts") or "").strip() else None
            except ValueError:
                self.problems.add(path, line, f"ts {row['ts']!r} is neither ISO-8601 nor Unix seconds")
                continue
            seq_text = (row.get("seq_index") or "").strip()
            if seq_text and not seq_text.isdigit():
                self.problems.add(path, line, f"seq_index {seq_text!r} is not a non-negative integer")
                continue
            try:
                value = _optional_float("value", row.get("value") or "")
            except ValueError as exc:
                self.problems.add(path, line, f"value: {exc}")
                continue
            yield InteractionRecord(
                user_id=user_id,
                item_id=item_id,
                type=kind,
                ts=ts,
                seq=int(seq_text) if seq_text else None,
                value=value,
            )

    def items(self) -> Iterator[ItemRecord]:
        """Catalogue rows from items.csv, if present."""
        path = find_file(self.folder, "items.csv")
        if path is None:
            return
        for line, row in read_csv(path, ("item_id",), self.problems):
            item_id = row["item_id"].strip()
            reason = _id_problem("item_id", item_id)
            if reason:
                self.problems.add(path, line, reason)
                continue
            try:
                price = _optional_float("price", row.get("price") or "")
            except ValueError as exc:
                self.problems.add(path, line, f"price: {exc}")
                continue
            categories = tuple(c.strip() for c in (row.get("categories") or "").split("|") if c.strip())
            yield ItemRecord(
                item_id=item_id,
                brand=(row.get("brand") or "").strip() or None,
                categories=categories,
                title=(row.get("title") or "").strip() or None,
                price=price,
            )

    def triples(self) -> Iterator[TripleRecord]:
        """Knowledge-graph triples from kg_triples.csv, if present."""
        path = find_file(self.folder, "kg_triples.csv")
        if path is None:
            return
        for line, row in read_csv(path, ("head", "relation", "tail"), self.problems):
            head, relation, tail = row["head"].strip(), row["relation"].strip(), row["tail"].strip()
            reason = _id_problem("head", head) or _id_problem("tail", tail)
            if reason:
                self.problems.add(path, line, reason)
                continue
            if relation not in KNOWN_RELATIONS:
                self.problems.add(
                    path, line, f"relation {relation!r} is not one of {', '.join(KNOWN_RELATIONS)}"
                )
                continue
            yield TripleRecord(head, relation, tail)
