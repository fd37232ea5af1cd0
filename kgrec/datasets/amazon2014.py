"""Convert McAuley's 2014 Amazon product data (one category) into the kgrec layout.

Inputs, as published on https://jmcauley.ucsd.edu/data/amazon/index_2014.html:

- ``reviews_<Category>_5.json.gz``: the 5-core reviews, one JSON object per line with
  ``reviewerID``, ``asin`` and ``unixReviewTime`` (day precision) among other fields;
- ``meta_<Category>.json.gz``: product metadata, one Python literal (``{'asin': ...}``, not JSON)
  per line, with optional ``title``, ``price``, ``brand``, ``categories`` (a list of category
  paths) and ``related`` (``also_bought``, ``also_viewed``, ``bought_together`` ASIN lists).

Outputs (gzip CSV with a header, written with a fixed gzip timestamp so equal inputs give equal files):

- ``interactions.csv.gz``: ``user_id,item_id,seq_index``: a review is a purchase proxy, and
  ``seq_index`` is its 0-based position in that reviewer's history ordered by ``unixReviewTime``.
  Ties (reviews of the same day) are broken by ASIN, so the order is deterministic but arbitrary
  within a day; a reviewer's repeated review of one product keeps only the earliest.
- ``items.csv.gz``: ``item_id,brand,categories,title,price`` for every reviewed product;
  categories are the distinct names of all its category paths, in order, ``|``-joined.
- ``kg_triples.csv.gz``: ``head,relation,tail`` with ``produced_by`` (ASIN -> brand),
  ``belongs_to`` (ASIN -> category) and ``also_bought`` / ``also_viewed`` / ``bought_together``
  (ASIN -> ASIN; tails may be products outside the 5-core).

HTML entities in titles and brands (``&amp;``) are unescaped. A value that breaks kgrec's id rule
(:func:`kgrec.limits.id_problem`) is left out and counted in the returned summary.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgrec.datasets.records import open_text
from kgrec.limits import MAX_TEXT_LENGTH, id_problem

RELATED = ("also_bought", "also_viewed", "bought_together")


@dataclass
class ConversionSummary:
    """Counts of what :func:`convert` wrote and what it left out."""

    users: int = 0
    items: int = 0
    interactions: int = 0
    triples: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """Count one value left out for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def parse_loose_json(line: str, path: Path, number: int) -> dict[str, Any]:
    """One record of McAuley's files: strict JSON, or the Python literal the metadata files use."""
    try:
        value = json.loads(line)
    except ValueError:
        try:
            value = ast.literal_eval(line)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(
                f"{path.name} line {number}: neither JSON nor a Python literal ({exc})"
            ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} line {number}: expected an object, got {type(value).__name__}")
    return value


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line of a (gzipped) McAuley file."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, parse_loose_json(line, path, number)


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(html.unescape(value).split())
    return text or None


def _id(value: object, what: str, summary: ConversionSummary) -> str | None:
    text = _text(value)
    if text is None:
        return None
    if id_problem(text) is not None:
        summary.skip(f"{what} breaks the id rule")
        return None
    return text


def _price(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return repr(float(value))
    return ""


def _categories(value: object, summary: ConversionSummary) -> list[str]:
    names: list[str] = []
    for path in value if isinstance(value, list) else []:
        for name in path if isinstance(path, list) else []:
            category = _id(name, "category", summary)
            if category is not None and category not in names:
                names.append(category)
    return names


def _write_gzip_csv(path: Path, header: Sequence[str], rows: Iterator[Sequence[object]]) -> int:
    """Write rows to ``path`` (via a temporary file, then renamed); returns the row count."""
    partial = path.with_name(path.name + ".tmp")
    count = 0
    with (
        open(partial, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed,
        io.TextIOWrapper(packed, encoding="utf-8", newline="") as text,
    ):
        writer = csv.writer(text)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    partial.replace(path)
    return count


def _histories(reviews: Path, summary: ConversionSummary) -> dict[str, list[tuple[int, str]]]:
    earliest: dict[tuple[str, str], int] = {}
    for number, record in read_records(reviews):
        user, item, when = record.get("reviewerID"), record.get("asin"), record.get("unixReviewTime")
        if not isinstance(when, int) or isinstance(when, bool):
            raise ValueError(f"{reviews.name} line {number}: unixReviewTime {when!r} is not an integer")
        user_id, item_id = _id(user, "reviewerID", summary), _id(item, "asin", summary)
        if user_id is None or item_id is None:
            summary.skip("review without a valid reviewerID or asin")
            continue
        key = (user_id, item_id)
        if key in earliest:
            summary.skip("repeated review of one product")
        earliest[key] = min(when, earliest.get(key, when))
    histories: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for (user_id, item_id), when in earliest.items():
        histories[user_id].append((when, item_id))
    return histories


def convert(reviews: Path, meta: Path, out: Path) -> ConversionSummary:
    """Write ``interactions.csv.gz``, ``items.csv.gz`` and ``kg_triples.csv.gz`` into ``out``."""
    summary = ConversionSummary()
    out.mkdir(parents=True, exist_ok=True)
    histories = _histories(reviews, summary)
    reviewed = {item for history in histories.values() for _, item in history}

    def interaction_rows() -> Iterator[tuple[str, str, int]]:
        for user_id in sorted(histories):
            for index, (_, item_id) in enumerate(sorted(histories[user_id])):
                yield user_id, item_id, index

    summary.interactions = _write_gzip_csv(
        out / "interactions.csv.gz", ("user_id", "item_id", "seq_index"), interaction_rows()
    )
    summary.users = len(histories)

    items: list[tuple[str, str, str, str, str]] = []
    triples: list[tuple[str, str, str]] = []
    for _, record in read_records(meta):
        asin = _text(record.get("asin"))
        if asin not in reviewed:
            continue
        brand = _id(record.get("brand"), "brand", summary)
        categories = _categories(record.get("categories"), summary)
        title = _text(record.get("title")) or ""
        if len(title) > MAX_TEXT_LENGTH:
            summary.skip("title longer than the text limit (cut)")
            title = title[:MAX_TEXT_LENGTH]
        items.append((asin, brand or "", "|".join(categories), title, _price(record.get("price"))))
        reviewed.discard(asin)  # a product listed twice in the metadata keeps its first record
        if brand is not None:
            triples.append((asin, "produced_by", brand))
        triples.extend((asin, "belongs_to", category) for category in categories)
        related = record.get("related") if isinstance(record.get("related"), dict) else {}
        for relation in RELATED:
            tails = related.get(relation)
            for tail in tails if isinstance(tails, list) else []:
                tail_id = _id(tail, relation, summary)
                if tail_id is not None:
                    triples.append((asin, relation, tail_id))
    # Reviewed products with no metadata record still get an items row, so the catalogue is complete.
    items.extend((asin, "", "", "", "") for asin in sorted(reviewed))
    summary.items = _write_gzip_csv(
        out / "items.csv.gz", ("item_id", "brand", "categories", "title", "price"), iter(items)
    )
    _write_gzip_csv(out / "kg_triples.csv.gz", ("head", "relation", "tail"), iter(triples))
    for _, relation, _ in triples:
        summary.triples[relation] = summary.triples.get(relation, 0) + 1
    return summary
