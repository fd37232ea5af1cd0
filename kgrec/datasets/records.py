"""The records every dataset reader yields, and the problems it reports.

Records are named tuples: a data set yields millions of them, and they are only read.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, TypeVar

from pydantic_core import PydanticCustomError

from kgrec.events.validation import ValidationClock, field_problem, value_problem
from kgrec.field_types import date_time_ms, is_number_text, whole_number
from kgrec.limits import MAX_EPOCH_MS, id_problem

T = TypeVar("T")


# The record types are field lists of one form (a duplicate finder pairs them); they share no logic.
class ItemRecord(NamedTuple):
    """One catalogue item."""

    item_id: str
    brand: str | None = None
    categories: tuple[str, ...] = ()
    title: str | None = None
    price: float | None = None
    description: str | None = None  # plain text, for topics only


class InteractionRecord(NamedTuple):
    """One user–item event from a data set (ts in epoch ms, or None when unknown)."""

    user_id: str
    item_id: str
    type: str
    ts: int | None = None
    seq: int | None = None
    value: float | None = None


class TripleRecord(NamedTuple):
    """One knowledge-graph triple ``head -relation-> tail``.

    ``user_id`` and ``ts`` say who stated it and when, for knowledge users give
    (MovieLens tags): the evaluation split drops what a test user stated at or
    after their held-out interaction, and ``kgrec import`` what an erased user
    stated before their erasure. Catalogue knowledge leaves them None.
    """

    head: str
    relation: str
    tail: str
    user_id: str | None = None
    ts: int | None = None
    # (file, line) the triple was read from, for a report that names its row; None where unknown
    source: tuple[str, int] | None = None


class EntityRecord(NamedTuple):
    """A knowledge-graph entity that is not an item: its id, kind (``artist``, ``genre``...) and name."""

    entity_id: str
    kind: str | None = None
    name: str | None = None
    # (file, line) the entity was read from, for a report that names its row; None where unknown
    source: tuple[str, int] | None = None


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


class BadRow(ValueError):
    """A row a reader skips: the message is the reason it reports."""


def check_ids(*columns: tuple[str, str | None]) -> None:
    """Raise BadRow ("column reason") for the first ``(column, value)`` that breaks the id rule.

    A None value is an optional column left empty.
    """
    for name, value in columns:
        problem = None if value is None else id_problem(value)
        if problem is not None:
            raise BadRow(f"{name} {problem}")


def check_field(name: str, value: object) -> None:
    """Raise BadRow ("name reason") when ``value`` breaks the API's bound on the field ``name``
    (:func:`kgrec.events.validation.field_problem`): every entry point enforces the same ones.
    A None value is an optional column left empty."""
    if value is not None and (problem := field_problem(name, value)) is not None:
        raise BadRow(f"{name} {problem}")


def check_value(kind: str, value: float | None) -> None:
    """Raise BadRow when an interaction of type ``kind`` may not carry ``value`` (the events API's
    rule, :func:`kgrec.events.validation.value_problem`: none on a review, no negative revenue)."""
    problem = value_problem(kind, value)
    if problem is not None:
        raise BadRow(f"value: {problem}")


def check_time(column: str, text: str, ts: int | None, clock: ValidationClock | None) -> int | None:
    """``ts`` (epoch ms, read from ``text`` in ``column``), or BadRow when it is more than the
    clock's skew ahead of it (``KGREC_MAX_CLOCK_SKEW_S``), as the events API refuses such a time.

    Every loader whose rows carry times keeps a ``clock`` (None until
    :func:`kgrec.importer.prepare` sets the import's) and runs each time through this.
    """
    ahead = None if ts is None or clock is None else clock.ahead(ts, "the import's clock")
    if ahead is not None:
        raise BadRow(f"{column} {text.strip()[:60]!r} {ahead}")
    return ts


class UnreadableFile(ValueError):
    """A data file that cannot be read as UTF-8 text (or gzip): the message names the file and,
    where it is known, the line."""


class BadCsvRecord(UnreadableFile):
    """One record :class:`CsvReader` cannot read, text after a closing quote, whose record ends with
    its line: the records after it can still be read. ``line``: where it starts; ``reason``: why."""

    def __init__(self, message: str, line: int, reason: str) -> None:
        super().__init__(message)
        self.line = line
        self.reason = reason


class TextFile:
    """A data file opened for reading as UTF-8 text, gunzipped when it is ``*.gz``.

    Read it by iterating (or ``readline``); a byte that is not UTF-8, a truncated or corrupt
    gzip stream raises :class:`UnreadableFile` naming the file, and the line for a bad byte,
    instead of a bare ``UnicodeDecodeError`` or ``EOFError``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        stream = gzip.GzipFile(fileobj=self._raw, mode="rb") if path.suffix == ".gz" else self._raw
        # utf-8-sig: a byte order mark (as Excel writes) is not part of the first header name
        self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        self._lines = 0  # lines handed out so far

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._text.close()
        self._raw.close()  # a GzipFile leaves the file it was given open

    @property
    def bytes_read(self) -> int:
        """How far reading has come in the file as stored (compressed, for a ``.gz``), for progress."""
        return self._raw.tell()

    def __iter__(self) -> TextFile:
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readline(self) -> str:
        """The next line with its line end; "" at the end of the file."""
        try:
            line = self._text.readline()
        except UnicodeDecodeError as exc:
            raise UnreadableFile(self._undecodable(exc)) from None
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            reason = "it ends early (truncated)" if isinstance(exc, EOFError) else f"not valid gzip ({exc})"
            raise UnreadableFile(f"{self.path}: cannot read past line {self._lines}: {reason}") from None
        if line:
            self._lines += 1
        return line

    def _undecodable(self, exc: UnicodeDecodeError) -> str:
        """Where the first byte that is not UTF-8 is: the decoder reads in blocks, so read the raw
        lines again to find its line."""
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rb") as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    byte = line[bad.start : bad.start + 1].hex()
                    return f"{self.path} line {number}: not UTF-8 (byte 0x{byte} at column {bad.start + 1})"
        return f"{self.path}: not UTF-8 ({exc.reason})"


def open_text(path: Path) -> TextFile:
    """Open a CSV/text file, transparently gunzipping ``*.gz`` (see :class:`TextFile`)."""
    return TextFile(path)


class CsvReader:
    """``csv.reader`` over a :class:`TextFile`, strict: a quote that is never closed (the file ends
    inside a quoted field) or a field over the csv module's size limit raises
    :class:`UnreadableFile`, and text after a closing quote :class:`BadCsvRecord` (a reader that
    goes on past it may),
    each naming the file and the line where the record starts, instead of a bare ``csv.Error`` or
    a field that swallowed the rows after it.
    """

    def __init__(self, handle: TextFile) -> None:
        self.path = handle.path
        self._reader = csv.reader(handle, strict=True)

    @property
    def line_num(self) -> int:
        """The line the last record returned ends on."""
        return self._reader.line_num

    def __iter__(self) -> CsvReader:
        return self

    def __next__(self) -> list[str]:
        start = self._reader.line_num + 1
        try:
            return next(self._reader)
        except csv.Error as exc:
            reason = str(exc)
            if reason == "unexpected end of data":
                reason = "a quoted field is never closed (the file ends inside it)"
            if not reason.endswith("expected after '\"'"):
                # csv stops inside the record (a quoted field may go on over lines): the lines read
                # after it would be taken out of step, so only text after a closing quote, whose
                # record ends with its line, is one record the reader can go on past
                raise UnreadableFile(f"{self.path} line {start}: not valid CSV: {reason}") from None
            message = f"{self.path} line {start}: not valid CSV: {reason}"
            raise BadCsvRecord(message, start, f"not valid CSV: {reason}") from None


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

    Rows with the wrong number of fields, and records with text after a closing quote
    (:class:`BadCsvRecord`), are reported and skipped.
    """
    with open_text(path) as handle:
        reader = CsvReader(handle)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing required column(s) {', '.join(missing)}")
        width = len(header)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except BadCsvRecord as bad:  # one record: the records after it can still be read
                problems.add(path, bad.line, bad.reason)
                continue
            line = reader.line_num
            if not fields:
                continue
            if len(fields) != width:
                problems.add(path, line, f"expected {width} fields, found {len(fields)}")
                continue
            yield line, dict(zip(header, fields, strict=True))


def located_rows(
    path: Path, required: tuple[str, ...], problems: Problems, parse: Callable[[dict[str, str]], T]
) -> Iterator[tuple[int, T]]:
    """``(line, parse(row))`` for each row of a headed CSV file; rows it refuses (BadRow) go to
    ``problems``."""
    for line, row in read_csv(path, required, problems):
        try:
            record = parse(row)
        except BadRow as exc:
            problems.add(path, line, str(exc))
            continue
        yield line, record


def parsed_rows(
    path: Path, required: tuple[str, ...], problems: Problems, parse: Callable[[dict[str, str]], T]
) -> Iterator[T]:
    """``parse(row)`` for each row of a headed CSV file; rows it refuses (BadRow) go to ``problems``."""
    for _, record in located_rows(path, required, problems, parse):
        yield record


def write_csv_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a small report (e.g. rejected rows) as CSV with a header."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


_NOT_FINITE = frozenset({"inf", "infinity", "nan"})
# Far past 9999 (MAX_EPOCH_MS), so that the caller's range check names a time after it as such.
_MOST_SECONDS = 10**18


def whole_seconds_ms(text: str) -> int | None:
    """Unix seconds written as a whole number (:func:`kgrec.field_types.whole_number`: ASCII digits;
    white space around allowed), as epoch milliseconds; None for any other text. The range is the
    caller's to check."""
    seconds = whole_number(text.strip(), _MOST_SECONDS)
    return None if seconds is None else seconds * 1000


def parse_timestamp_ms(text: str, *, utc_without_offset: bool = False) -> int:
    """Parse a data-set time into epoch milliseconds, from 1970 to 9999 as the API's times
    (:data:`kgrec.limits.MAX_EPOCH_MS`): Unix seconds (ASCII digits, a fraction or exponent allowed;
    not ``1_000`` or another script's digits, which ``float()`` takes), or a date-time as the API
    reads one (:func:`kgrec.field_types.date_time_ms`: RFC 3339 with an offset; without one, or a
    date alone, it is refused). ``utc_without_offset``: a format that states its times are UTC (REES46's
    ``event_time``, ``2019-10-01 00:00:00 UTC``) reads any ISO-8601 time, with `` UTC`` or no
    offset, as UTC.

    Raises ValueError whose message quotes the value and says why (``'inf' is not a finite
    number of seconds``, ``'1e300' is after 9999``), to follow the column's name.
    """
    stripped = text.strip()
    if stripped.lstrip("+-").lower() in _NOT_FINITE:
        raise ValueError(f"{text!r} is not a finite number of seconds")
    seconds = is_number_text(stripped)
    if seconds:
        ms = float(stripped) * 1000
    elif not utc_without_offset:
        try:
            return date_time_ms(stripped, numbers="Unix seconds")
        except PydanticCustomError as exc:
            raise ValueError(exc.message()) from None
    else:
        try:
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00").replace(" UTC", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is neither ISO-8601 nor Unix seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ms = moment.timestamp() * 1000
    # compared as a float, before round(): 1e300 seconds must not become a clipped integer
    if ms < 0:
        raise ValueError(f"{text!r} is before 1970")
    if ms > MAX_EPOCH_MS:
        raise ValueError(f"{text!r} is after 9999")
    return round(ms) if seconds else int(ms)
