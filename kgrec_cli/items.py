"""``kgrec items import FILE``: the catalogue API's upsert, from CSV or JSON Lines.

- JSON Lines (``.jsonl``, ``.ndjson``, or ``--format jsonl``): one item object per line, the body of
  ``POST /v1/items`` item by item (``item_id`` plus any fields).
- CSV (``.csv``, or ``--format csv``): a header naming fields: ``item_id,title,description,brand,
  categories,price,currency,available,stock,listed_at,delisted_at``; ``categories`` ``|``-separated,
  general to specific; an ``attributes`` column holds a JSON object, and a column ``attr:<relation>``
  holds that relation's ``|``-separated values. An empty cell leaves the field out (its stored value is kept).

The whole file is validated first; any bad line is reported (line, field, reason) and nothing is
written. Then it is written in batches of ``MAX_ITEMS_PER_BATCH``, each one atomic, so importing the
same file twice leaves the graph as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from kgrec.catalogue import CatalogueItem, category_loops, validate_items, write_items
from kgrec.config import Settings
from kgrec.datasets.records import CsvReader, open_text
from kgrec.field_types import cell_time
from kgrec.limits import MAX_ITEMS_PER_BATCH
from kgrec.runtime import graph_session
from kgrec_cli.failure import fail

_NUMBERS = {"price": float, "stock": int}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class LineError(ValueError):
    """A line that cannot become an item object."""


def _csv_item(row: dict[str, Any]) -> dict[str, Any]:
    if row.get(None):  # DictReader's key for the cells beyond the header's columns
        raise LineError(f"{len(row[None])} more cell(s) than the header has columns: {row[None]!r}")
    item: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, raw in row.items():
        if column is None or raw is None or raw == "":
            continue
        name = column.strip()
        if name.startswith("attr:"):
            attributes[name[5:]] = raw.split("|")
        elif name == "attributes":
            try:
                attributes.update(json.loads(raw))
            except (ValueError, TypeError) as exc:
                raise LineError(f"attributes is not a JSON object: {exc}") from None
        elif name == "categories":
            item[name] = raw.split("|")
        elif name in _NUMBERS:
            try:
                item[name] = _NUMBERS[name](raw)
            except ValueError:
                item[name] = raw  # validation names the field and says why
        elif name in ("listed_at", "delisted_at"):
            item[name] = cell_time(raw)  # a number in a cell is epoch ms, as a JSON number is
        elif name == "available":
            item[name] = _BOOLEANS.get(raw.strip().lower(), raw)
        else:
            item[name] = raw
    if attributes:
        item["attributes"] = attributes
    return item


def read_items(path: Path, fmt: str | None = None) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    """(line number, item object or LineError) for each item of a CSV or JSON Lines file."""
    name = path.name.lower().removesuffix(".gz")
    kind = fmt or ("csv" if name.endswith(".csv") else "jsonl")
    # the data sets' reader: gunzips *.gz, drops a byte-order mark, and names the file and line of a
    # byte that is not UTF-8 or of a truncated gzip stream
    with open_text(path) as handle:
        if kind == "csv":
            reader = CsvReader(handle)
            header = next(reader, [])
            columns = [c.strip() for c in header]
            twice = sorted({c for c in columns if columns.count(c) > 1})
            if twice:
                yield 1, LineError(f"the header names {', '.join(map(repr, twice))} more than once")
                return
            for fields in reader:
                if not fields:
                    continue
                # as csv.DictReader has it: the cells beyond the header's columns under None
                row: dict[Any, Any] = dict(zip(header, fields, strict=False))
                if len(fields) > len(header):
                    row[None] = fields[len(header) :]
                try:
                    yield reader.line_num, _csv_item(row)
                except LineError as exc:
                    yield reader.line_num, exc
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                yield number, LineError(f"not valid JSON: {exc}")
                continue
            yield number, value if isinstance(value, dict) else LineError("must be a JSON object")


def validate_file(path: Path, fmt: str | None) -> tuple[list[list[CatalogueItem]], list[str], list[int]]:
    """The file's items in batches, every problem as ``line N: field: reason``, and each item's line."""
    batches: list[list[CatalogueItem]] = []
    lines: list[int] = []
    problems: list[str] = []
    pending: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        items, errors = validate_items([item for _, item in pending])
        for error in errors:
            line = pending[error.index][0] if error.index >= 0 else 0
            problems.append(f"line {line}: {error.field}: {error.reason}")
        if items:
            batches.append(items)
            lines.extend(number for number, _ in pending)
        pending.clear()

    for number, item in read_items(path, fmt):
        if isinstance(item, LineError):
            problems.append(f"line {number}: {item}")
            continue
        pending.append((number, item))
        if len(pending) == MAX_ITEMS_PER_BATCH:
            flush()
    if pending:
        flush()
    return batches, problems, lines


@click.group("items")
def items() -> None:
    """The catalogue: import items (as POST /v1/items does)."""


@items.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default=None,
    help="Default: by the file's suffix.",
)
@click.pass_context
def import_command(ctx: click.Context, file: Path, fmt: str | None) -> None:
    """Upsert the items of FILE (CSV or JSON Lines); a file with any bad line writes nothing."""
    settings: Settings = ctx.ensure_object(dict)["settings"]
    batches, problems, lines = validate_file(file, fmt)
    if problems:
        for problem in problems[:50]:
            click.echo(problem, err=True)
        fail(f"{len(problems)} bad line(s) in {file}; nothing was written")
    written = 0
    with graph_session(settings) as gateway:
        # the whole file's category paths against the stored tree and each other, before any write
        loops = category_loops(gateway, [item for batch in batches for item in batch])
        if loops:
            for loop in loops[:50]:
                click.echo(f"line {lines[loop.index]}: {loop.field}: {loop.reason}", err=True)
            fail(f"{len(loops)} bad line(s) in {file}; nothing was written")
        for batch in batches:
            write_items(gateway, batch)
            written += len(batch)
    click.echo(f"{written} item(s) written in {len(batches)} batch(es)")
