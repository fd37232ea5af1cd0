"""``kgrec events import``: stream an event file through the API's validation and write path.

Rows are converted (see :mod:`kgrec.events.formats`), validated exactly like
``POST /v1/events`` and written with the same atomic, idempotent statement, in
batches. Bad rows go to a reject file with their line number and reason;
everything else is applied.
"""

from __future__ import annotations

import csv
import gzip
import io
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kgrec.config import Settings
from kgrec.events import formats
from kgrec.events.ingest import ingest
from kgrec.events.validation import Event, FieldError, validate_each
from kgrec.gateway import GraphGateway

FORMATS = ("rees46", "taobao", "csv")
DEFAULT_BATCH = 5_000


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
    rejected: list[Reject] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        """Rows processed per second."""
        return self.rows / self.seconds if self.seconds else 0.0


def _open(path: Path) -> tuple[BinaryIO, io.TextIOWrapper]:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    stream: BinaryIO = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw  # type: ignore[assignment]
    # Undecodable bytes become U+FFFD so that one bad row is rejected, not the rest of the file.
    return raw, io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")


def _converter(fmt: str, reader: Iterator[list[str]], mapping: Mapping[str, str]) -> formats.Converter:
    if fmt == "rees46":
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(formats.REES46_COLUMNS):
            raise ValueError(f"not a rees46 file: the header must be {','.join(formats.REES46_COLUMNS)}")
        return formats.rees46
    if fmt == "taobao":
        return formats.taobao
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
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import an event file; ``on_progress(bytes_read, rows)`` is called after each batch."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    summary = ImportSummary()
    started = time.perf_counter()
    raw, text = _open(path)
    with raw, text:
        reader = csv.reader(text)
        convert = _converter(fmt, reader, mapping or {})
        lines: list[int] = []
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            _write_batch(gateway, settings, batch, lines, summary)
            batch.clear()
            lines.clear()
            if on_progress is not None:
                on_progress(raw.tell(), summary.rows)

        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            summary.rows += 1
            try:
                if any("\ufffd" in f for f in fields):
                    raise formats.RowError("the row is not valid UTF-8")
                batch.append(convert(fields))
                lines.append(line)
            except formats.RowError as exc:
                summary.rejected.append(Reject(line, "row", str(exc)))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    summary.rejected.sort(key=lambda r: r.line)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_batch(
    gateway: GraphGateway,
    settings: Settings,
    batch: Sequence[dict[str, Any]],
    lines: Sequence[int],
    summary: ImportSummary,
) -> None:
    now_ms = int(time.time() * 1000)
    checked = validate_each(batch, max_skew_s=settings.max_clock_skew_s, now_ms=now_ms)
    events: list[Event] = []
    for line, result in zip(lines, checked, strict=True):
        if isinstance(result, FieldError):
            summary.rejected.append(Reject(line, result.field, result.reason))
        else:
            events.append(result)
    if events:
        result = ingest(gateway, events, settings, now_ms=now_ms)
        summary.applied += result.applied
        summary.duplicates += result.duplicates


def write_rejects(path: Path, rejects: Sequence[Reject]) -> None:
    """Write rejected rows as CSV: line, field, reason."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "field", "reason"])
        for reject in rejects:
            writer.writerow([reject.line, reject.field, reject.reason])
