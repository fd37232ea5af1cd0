"""The records every dataset reader yields, and the problems it reports."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class ItemRecord:
    """One catalogue item."""

    item_id: str
    brand: str | None = None
    categories: tuple[str, ...] = ()
    title: str | None = None
    price: float | None = None


@dataclass(frozen=True)
class InteractionRecord:
    """One user–item event from a data set (ts in epoch ms, or None when unknown)."""

    user_id: str
    item_id: str
    type: str
    ts: int | None = None
    seq: int | None = None
    value: float | None = None


@dataclass(frozen=True)
class TripleRecord:
    """One knowledge-graph triple ``head -relation-> tail``."""

    head: str
    relation: str
    tail: str


@dataclass(frozen=True)
class RowProblem:
    """A row that was skipped, with where it was and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Problems:
    """Collects skipped rows while a reader streams a file."""

    rows: list[RowProblem] = field(default_factory=list)

    def add(self, file: Path | str, line: int, reason: str) -> None:
        """Record that ``file`` line ``line`` was skipped for ``reason``."""
        self.rows.append(RowProblem(str(file), line, reason))


def open_text(path: Path) -> io.TextIOBase:
    """Open a CSV/text file, transparently gunzipping ``*.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_csv(
    path: Path, required: tuple[str, ...], problems: Problems
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` for each well-formed row of a headed CSV file.

    Rows with the wrong number of fields are reported and skipped.
    """
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing required column(s) {', '.join(missing)}")
        width = len(header)
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            if len(fields) != width:
                problems.add(path, line, f"expected {width} fields, found {len(fields)}")
                continue
            yield line, dict(zip(header, fields, strict=True))


def write_csv_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a small report (e.g. rejected rows) as CSV with a header."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def parse_timestamp_ms(text: str) -> int:
    """Parse Unix seconds (int or float) or an ISO-8601 time into epoch milliseconds."""
    text = text.strip()
    try:
        return round(float(text) * 1000)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
