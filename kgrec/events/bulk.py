"""``kgrec events import``: stream an event file through the API's validation and write path.

Rows are converted (see :mod:`kgrec.events.formats`), validated exactly like
``POST /v1/events`` and written with the same atomic, idempotent statement, in
batches. Bad rows go to a reject file with their line number and reason;
everything else is applied, but events of users erased after them (``erased``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgrec.config import Settings
from kgrec.datasets.records import BadCsvRecord, CsvReader, open_text, write_csv_rows
from kgrec.events import formats
from kgrec.events.ingest import EventsRefused, commit, prepare, refusals_read_the_graph
from kgrec.events.validation import Event, FieldError, validate_each
from kgrec.gateway import GraphGateway
from kgrec.limits import MAX_IMPORT_BATCH

FORMATS = ("rees46", "taobao", "csv", "movielens-tags")


@dataclass(frozen=True)
class Reject:
    """A row that was not imported."""

    line: int
    field: str
    reason: str


@dataclass
class ImportSummary:
    """What an event import did."""

    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    erased: int = 0  # events of users erased after them (kgrec.events.ingest.prepare)
    rejected: list[Reject] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        """Rows processed per second."""
        return self.rows / self.seconds if self.seconds else 0.0


def _expect_header(reader: Iterator[list[str]], columns: Sequence[str], what: str) -> None:
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != list(columns):
        raise ValueError(f"not {what}: the header must be {','.join(columns)}")


def _converter(fmt: str, reader: Iterator[list[str]], mapping: Mapping[str, str]) -> formats.Converter:
    if fmt == "rees46":
        _expect_header(reader, formats.REES46_COLUMNS, "a rees46 file")
        return formats.rees46
    if fmt == "taobao":
        return formats.taobao
    if fmt == "movielens-tags":
        _expect_header(reader, formats.MOVIELENS_TAG_COLUMNS, "a MovieLens tags file")
        return formats.movielens_tag
    header = next(reader, None)
    if header is None:
        raise ValueError("the CSV file is empty")
    return formats.csv_converter(header, mapping)


def import_events(
    gateway: GraphGateway,
    path: Path,
    fmt: str,
    settings: Settings,
    *,
    mapping: Mapping[str, str] | None = None,
    batch_size: int = MAX_IMPORT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import an event file; ``on_progress(bytes_read, rows)`` is called after each batch."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    summary = ImportSummary()
    started = time.perf_counter()
    text = open_text(path)  # a truncated .gz or a byte that is not UTF-8 stops it, naming file and line
    # One writer thread: while the graph applies batch N, this thread reads and
    # validates batch N+1. Their writes commute (decayed sums, counters, min/max
    # times; an id in both is caught by the Event constraint, which makes commit()
    # prepare that batch again), but the reads that refuse rows do not: a tag on an
    # item batch N creates, or a category path that closes a loop with batch N's,
    # must see batch N: such a batch waits for the previous write first. Every
    # batch waits for it before handing over its own, which keeps memory bounded.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgrec-import")
    pending: Future[None] | None = None
    with text, writer:
        reader = CsvReader(text)
        convert = _converter(fmt, reader, mapping or {})
        lines: list[int] = []
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal pending, batch, lines
            now_ms = int(time.time() * 1000)
            events, event_lines = _validated(batch, lines, settings, summary, now_ms)
            if pending is not None and refusals_read_the_graph(events):
                pending.result()
            write = _prepared_write(gateway, settings, events, event_lines, summary, now_ms)
            if pending is not None:
                pending.result()
            pending = writer.submit(write) if write is not None else None
            batch, lines = [], []
            if on_progress is not None:
                on_progress(text.bytes_read, summary.rows)

        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except BadCsvRecord as bad:  # one record: a reject, as a row of the wrong shape is
                summary.rows += 1
                summary.rejected.append(Reject(bad.line, "row", bad.reason))
                continue
            line = reader.line_num
            if not fields:
                continue
            summary.rows += 1
            try:
                batch.append(convert(fields))
                lines.append(line)
            except formats.RowError as exc:
                summary.rejected.append(Reject(line, "row", str(exc)))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        if pending is not None:
            pending.result()
    summary.rejected.sort(key=lambda r: r.line)
    summary.seconds = time.perf_counter() - started
    return summary


def _validated(
    batch: Sequence[dict[str, Any]],
    lines: Sequence[int],
    settings: Settings,
    summary: ImportSummary,
    now_ms: int,
) -> tuple[list[Event], list[int]]:
    """The batch's valid events and their lines; the others become rejects (no graph read)."""
    checked = validate_each(batch, max_skew_s=settings.max_clock_skew_s, now_ms=now_ms)
    events: list[Event] = []
    event_lines: list[int] = []
    for line, result in zip(lines, checked, strict=True):
        if isinstance(result, FieldError):
            summary.rejected.append(Reject(line, result.field, result.reason))
        else:
            events.append(result)
            event_lines.append(line)
    return events, event_lines


def _prepared_write(
    gateway: GraphGateway,
    settings: Settings,
    events: list[Event],
    event_lines: list[int],
    summary: ImportSummary,
    now_ms: int,
) -> Callable[[], None] | None:
    """Check valid events against the graph and aggregate them; returns the write to run (None if
    nothing to write). Run only after every earlier batch's write: its refusals read the graph."""
    if not events:
        return None
    while True:  # each refusal (tags on unknown items, then paths that would loop) drops its rows
        try:
            prepared = prepare(gateway, events, settings, now_ms)
            break
        except EventsRefused as refused:  # those rows are rejects, the rest goes in
            bad = {e.index for e in refused.errors}
            summary.rejected.extend(Reject(event_lines[e.index], e.field, e.reason) for e in refused.errors)
            events = [e for index, e in enumerate(events) if index not in bad]
            event_lines = [line for index, line in enumerate(event_lines) if index not in bad]
            if not events:
                return None

    def write() -> None:
        result = commit(gateway, prepared, events, settings, now_ms)
        summary.applied += result.applied
        summary.duplicates += result.duplicates
        summary.erased += result.erased

    return write


def write_rejects(path: Path, rejects: Sequence[Reject]) -> None:
    """Write rejected rows as CSV: line, field, reason."""
    write_csv_rows(path, ["line", "field", "reason"], ((r.line, r.field, r.reason) for r in rejects))
