"""The impression journal: what a process showed, copied into a memory-mapped local file before it
answers and shipped to the impression stream (kgrec/impressions.py) by a thread of its own.

Why. Recording used to be one synchronous round trip to the impressions server per response. On
a loaded machine that round trip was the whole p99 overhead (README, "Recording impressions").
A journal append is a copy into a shared file mapping: the bytes are in the kernel's page cache
at once, so they survive kill -9 of the process and of every server, as the server's AOF write
did; only an OS crash can lose the last seconds, as with ``appendfsync no``. It is a mapping and
not ``write(2)`` because a system call releases the GIL: under load another request thread then
holds it for up to the 5 ms switch interval, and that wait was the p99 cost of recording.

Files, in one directory per graph (``<data dir>/impression-journal/<graph>/``):

* ``<pid>-<random>.jnl``: :data:`JOURNAL_BYTES` allocated up front (``posix_fallocate``: a full
  disk fails when a journal is made, never in the middle of a copy), zero-filled, then one JSON
  line per impression; the first zero byte ends what was written. Its process holds
  ``flock(LOCK_EX)`` on it until it is shipped. A full journal is sealed and a fresh one started.
  A journal nobody holds belongs to a process that died: it is an *orphan*, and whoever finds one
  ships it and deletes it.
* ``<same>.shipped``: how many bytes of the journal are in the stream (ASCII digits).

A journal is created under ``.new``, locked, and only then renamed, so nobody can take a
journal for an orphan before its writer holds it. Shipping is idempotent (the stream script
skips an impression whose id is kept already), so a crash between a batch and its offset
ships that batch again, harmlessly.

The shipper pauses :data:`SHIP_INTERVAL_S` after a wake-up, so impressions ship in batches: one
round trip per batch (one per impression cost this process about nine times the CPU).

Erasure. Erasing a user blanks their lines (spaces up to the newline, so no offset moves and
shipping skips them) in every journal of the erasing host at once, and records the erasure (a
hash of the user id and its time) in the impression store: the stream script then drops the
user's lines recorded before it, whichever host ships them, and every process's shipper looks
for new erasures every :data:`ORPHAN_SCAN_S` and blanks those users' lines in its own journals
(:func:`scrub_file`).

Reading one's writes. A reader that must see every impression recorded so far on this host
(attribution, ``GET /v1/impressions/{id}``, experiment results, erasure) calls :meth:`settle`
first. It ships its own journal, the orphans, and the unshipped tail of every other live
journal itself (their shippers then find those impressions stored and skip them), so it never
waits for another process. Impressions recorded on another host (several API machines) are seen
once that host has shipped them, within :data:`SHIP_INTERVAL_S` and a round trip.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import mmap
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kgrec.erasure import user_hash

log = logging.getLogger(__name__)

SUFFIX = ".jnl"
SHIPPED = ".shipped"
NEW = ".new"
JOURNAL_BYTES = 16 << 20  # one journal file (about 20,000 impressions of 20 items)
BATCH = 500  # impressions per shipping round trip
READ_CHUNK = 1 << 16  # how much of another process's journal is read at a time
ORPHAN_SCAN_S = 10.0  # how often the shipper looks for journals of processes that died
RETRY_S = 0.5  # how long shipping waits after a failure (the impressions server is down)
SHIP_INTERVAL_S = 0.1  # the shipper's pause after a wake-up, so that impressions ship in batches
ABANDONED_NEW_S = 60.0  # a .new file, or an offset without its journal, this old lost its process
NEWLINE = ord("\n")
ERASURE_SKEW_MS = 60_000  # an erasure recorded this much later than its time is still seen

Ship = Callable[[list[bytes]], None]  # stores a batch of journal lines in the stream; raises on failure
# The erasures (user hash -> erasure time, epoch ms) recorded at or after a time: see Journal.
Erasures = Callable[[int], dict[str, int]]
# The start of a line ImpressionStore.record writes: its recording time and its user (JSON).
_LINE_HEAD = re.compile(rb'^\{"r":"[^"]*","c":(\d+),"s":"[^"]*","u":("(?:[^"\\]|\\.)*")', re.MULTILINE)

_JOURNALS: weakref.WeakSet[Journal] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for journal in list(_JOURNALS):
        journal._forget_parents_files()


os.register_at_fork(after_in_child=_forget_after_fork)


def _read_offset(path: Path) -> int | None:
    """A journal's shipped offset (None when its file is missing, 0 when it is unreadable)."""
    try:
        return int(path.read_bytes().strip() or b"0")
    except FileNotFoundError:
        return None
    except ValueError:
        return 0


def _write_offset(fd: int, shipped: int) -> None:
    """Overwrite an offset file in place (never truncated: a reader never sees it empty)."""
    os.pwrite(fd, str(shipped).encode().ljust(20), 0)


def _written(fd: int, start: int) -> bytes:
    """What a journal holds from ``start`` to its first zero byte (the end of what was written)."""
    chunks: list[bytes] = []
    while chunk := os.pread(fd, READ_CHUNK, start):
        end = chunk.find(b"\0")
        if end >= 0:
            chunks.append(chunk[:end])
            break
        chunks.append(chunk)
        start += len(chunk)
    return b"".join(chunks)


def _lines(data: bytes) -> Iterator[bytes]:
    """The complete lines of ``data`` (a line still being copied has no newline yet)."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        yield data[start : end + 1]
        start = end + 1


def _ship_lines(ship: Ship, data: bytes, on_progress: Callable[[int], None]) -> None:
    """Ship ``data``'s complete lines in batches (not the lines an erasure blanked), reporting the
    bytes done after each batch."""
    batch: list[bytes] = []
    done = pending = 0
    for line in _lines(data):
        pending += len(line)
        if line.isspace():
            continue
        batch.append(line)
        if len(batch) >= BATCH:
            ship(batch)
            done, pending, batch = done + pending, 0, []
            on_progress(done)
    if batch:
        ship(batch)
    if pending:
        on_progress(done + pending)


def scrub_file(path: Path, erased: dict[str, int]) -> int:
    """Blank, in the journal at ``path``, every complete line of an erased user recorded at or
    before their erasure (``erased``: user hash -> erasure time); returns how many.

    Only those lines' bytes change, each with one write: the lines around them, the offsets and
    a line still being appended stay as they are.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0  # shipped and removed since the listing
    try:
        data = _written(fd, 0)
        blanked = 0
        for match in _LINE_HEAD.finditer(data):
            end = data.find(b"\n", match.end())
            if end < 0:
                break  # being appended
            erased_at = erased.get(user_hash(json.loads(match.group(2))))
            if erased_at is not None and int(match.group(1)) <= erased_at:
                os.pwrite(fd, b" " * (end - match.start()), match.start())
                blanked += 1
        return blanked
    finally:
        os.close(fd)


@dataclass
class _OwnFile:
    """A journal this process writes (or wrote: sealed, waiting to be shipped)."""

    path: Path
    fd: int  # flock'd until the file is shipped and removed
    offset_fd: int
    map: mmap.mmap
    size: int = 0  # bytes appended
    shipped: int = 0  # bytes in the stream

    @classmethod
    def create(cls, directory: Path) -> _OwnFile:
        """A fresh journal, allocated, locked and mapped, under its final name."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        new = directory / f"{name}{NEW}"
        path = directory / f"{name}{SUFFIX}"
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        offset_fd = -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.posix_fallocate(fd, 0, JOURNAL_BYTES)
            offset_fd = os.open(path.with_suffix(SHIPPED), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            _write_offset(offset_fd, 0)
            own = cls(path, fd, offset_fd, mmap.mmap(fd, JOURNAL_BYTES))
            os.rename(new, path)
        except OSError:
            new.unlink(missing_ok=True)
            if offset_fd >= 0:
                path.with_suffix(SHIPPED).unlink(missing_ok=True)
                os.close(offset_fd)
            os.close(fd)
            raise
        return own

    @property
    def offset_path(self) -> Path:
        return self.path.with_suffix(SHIPPED)

    def append(self, line: bytes) -> bool:
        """Copy ``line`` in; False when it does not fit (the file is full)."""
        end = self.size + len(line)
        if end > len(self.map):
            return False
        # The newline last: a reader in another process takes a line only once it ends in one.
        self.map[self.size : end - 1] = line[:-1]
        self.map[end - 1] = NEWLINE
        self.size = end
        return True

    def save_offset(self, shipped: int) -> None:
        self.shipped = shipped
        _write_offset(self.offset_fd, shipped)

    def remove(self) -> None:
        """Delete the shipped file, then its offset (a reader never finds the journal without one)."""
        self.path.unlink(missing_ok=True)
        self.offset_path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(ValueError, BufferError):
            self.map.close()
        for fd in (self.fd, self.offset_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Journal:
    """One directory of impression journals: this process's own, and the orphans it ships."""

    def __init__(self, directory: Path, ship: Ship, erasures: Erasures | None = None) -> None:
        self.directory = directory
        self.ship = ship
        self.erasures = erasures
        self._erasures_since = int(time.time() * 1000)  # this process's lines are all newer
        self._erasures_seen: set[str] = set()
        self._lock = threading.Lock()  # appends, and switching to a fresh file
        self._ship_lock = threading.Lock()  # one shipment of the own files at a time
        self._wake = threading.Event()
        self._own: _OwnFile | None = None  # the file appends go to
        self._spare: _OwnFile | None = None  # the next one, made by the shipper before it is needed
        self._sealed: list[_OwnFile] = []  # full files not shipped yet
        self._pid = 0  # the process that opened them
        self._shipper_pid = 0  # the process whose shipper thread runs
        self._failing = False
        _JOURNALS.add(self)

    # --- the writer -------------------------------------------------------------------------------

    def append(self, line: bytes) -> None:
        """Append one line (ending in a newline) to this process's journal; the shipper is woken.

        Raises OSError when no journal can be made for it (a full disk): nothing is written.
        """
        with self._lock:
            own = self._own_file()
            if not own.append(line):
                self._sealed.append(own)
                self._own, self._spare = self._spare, None
                if not self._own_file().append(line):
                    raise OSError(f"an impression of {len(line)} bytes does not fit in a journal")
        self._wake.set()

    def _own_file(self) -> _OwnFile:
        """The file appends go to, created (and the shipper started) on first use."""
        if self._own is not None and self._pid == os.getpid():
            return self._own
        self._own, self._pid = _OwnFile.create(self.directory), os.getpid()
        if self._shipper_pid != self._pid:
            self._shipper_pid = self._pid
            threading.Thread(target=self._ship_forever, name="impression-shipper", daemon=True).start()
            atexit.register(self._flush_at_exit)
        return self._own

    def _forget_parents_files(self) -> None:
        """In a forked child: drop the parent's journals (the child's copies of their locks would
        keep them from being found as orphans once the parent dies); the child makes its own."""
        files = [*self._sealed, *(f for f in (self._own, self._spare) if f is not None)]
        self._own, self._spare, self._sealed = None, None, []
        self._lock = threading.Lock()
        self._ship_lock = threading.Lock()
        self._wake = threading.Event()
        for own in files:
            own.close()

    # --- the shipper ------------------------------------------------------------------------------

    def _ship_forever(self) -> None:
        pid = os.getpid()
        last_scan = 0.0
        while os.getpid() == pid:
            if self._wake.wait(ORPHAN_SCAN_S):
                time.sleep(SHIP_INTERVAL_S)  # let a batch gather: each shipment costs a round trip
            self._wake.clear()
            try:
                self._ship_own()
                self._prepare_spare()
                if time.monotonic() - last_scan >= ORPHAN_SCAN_S:
                    self.ship_orphans()
                    self._scrub_own()
                    last_scan = time.monotonic()
                if self._failing:
                    log.warning("impression journal %s: shipping again", self.directory)
                    self._failing = False
            except Exception as exc:  # any failure: keep the journal, try again
                if not self._failing:
                    log.warning("impression journal %s: cannot ship (%s); retrying", self.directory, exc)
                    self._failing = True
                time.sleep(RETRY_S)
                self._wake.set()

    def _ship_own(self) -> None:
        """Ship what this process appended and has not shipped; remove sealed files once shipped."""
        with self._ship_lock:
            with self._lock:
                if self._pid != os.getpid():
                    return
                files = [(own, own.size) for own in self._sealed]
                if self._own is not None:
                    files.append((self._own, self._own.size))
            for own, end in files:
                if own.shipped < end:
                    start = own.shipped
                    data = own.map[start:end]
                    _ship_lines(
                        self.ship, data, lambda done, own=own, start=start: own.save_offset(start + done)
                    )
                if own is not self._own and own.shipped >= own.size:
                    with self._lock:
                        self._sealed.remove(own)
                    own.remove()

    def _prepare_spare(self) -> None:
        """Make the next file before the current one fills (its creation's system calls stay out of
        the request path)."""
        with self._lock:
            own = self._own if self._pid == os.getpid() else None
            needed = own is not None and self._spare is None and own.size > len(own.map) // 2
        if needed:
            spare = _OwnFile.create(self.directory)
            with self._lock:
                if self._spare is None and self._pid == os.getpid():
                    self._spare, spare = spare, None
            if spare is not None:
                spare.remove()

    def _flush_at_exit(self) -> None:
        """On a clean exit: seal the journals, ship them and remove them (left for the next
        process to ship if the impression store cannot take them now)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            self._sealed += [f for f in (self._own, self._spare) if f is not None]
            self._own = self._spare = None
        try:
            self._ship_own()
        except Exception as exc:  # left for the next process to ship
            log.warning("impression journal %s: left for the next process to ship (%s)", self.directory, exc)

    # --- orphans and settling ---------------------------------------------------------------------

    def _journals(self, suffix: str = SUFFIX) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == suffix)
        except FileNotFoundError:
            return []

    def _own_paths(self) -> set[Path]:
        with self._lock:
            if self._pid != os.getpid():
                return set()
            return {f.path for f in (*self._sealed, self._own, self._spare) if f is not None}

    def _ship_other(self, path: Path, live_tail: bool = True) -> None:
        """Ship another process's journal: all of it, then delete it, when that process is gone;
        else (``live_tail``) what its shipper has not shipped yet (its offset stays: a second
        shipment is skipped)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # shipped and removed since the listing
        try:
            offset_path = path.with_suffix(SHIPPED)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # alive
                if not live_tail:
                    return
                shipped = _read_offset(offset_path)
                if shipped is not None:  # else its owner is removing it, shipped
                    _ship_lines(self.ship, _written(fd, shipped), lambda done: None)
                return
            if os.fstat(fd).st_nlink == 0:  # another process shipped and removed it meanwhile
                return
            start = _read_offset(offset_path) or 0  # none: the offset was lost, ship it all again
            data = _written(fd, start)
            offset_fd = os.open(offset_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                _ship_lines(self.ship, data, lambda done: _write_offset(offset_fd, start + done))
            finally:
                os.close(offset_fd)
            path.unlink(missing_ok=True)
            offset_path.unlink(missing_ok=True)
            log.info("impression journal %s: shipped %d bytes a process left", path, len(data))
        finally:
            os.close(fd)

    def ship_orphans(self) -> None:
        """Ship the journals of processes that ended (and drop their abandoned ``.new`` files)."""
        own = self._own_paths()
        for path in self._journals():
            if path not in own:
                self._ship_other(path, live_tail=False)
        # A process that died making a journal (nothing in it was answered), or removing one.
        for stray in (*self._journals(NEW), *self._journals(SHIPPED)):
            with contextlib.suppress(FileNotFoundError):
                if stray.suffix == SHIPPED and stray.with_suffix(SUFFIX).exists():
                    continue
                if time.time() - stray.stat().st_mtime > ABANDONED_NEW_S:
                    stray.unlink()

    def scrub(self, erased: dict[str, int]) -> int:
        """Blank the erased users' lines (user hash -> erasure time) in every journal of this host;
        returns how many lines were blanked."""
        return sum(scrub_file(path, erased) for path in self._journals())

    def _scrub_own(self) -> None:
        """Blank, in this process's journals, the lines of users erased (on any host) since it last
        looked."""
        if self.erasures is None:
            return
        found = self.erasures(self._erasures_since - ERASURE_SKEW_MS)
        fresh = {user: at for user, at in found.items() if user not in self._erasures_seen}
        self._erasures_seen = set(found)
        if fresh:
            self._erasures_since = max(self._erasures_since, *fresh.values())
            with self._ship_lock:
                for path in self._own_paths():
                    scrub_file(path, fresh)

    def settle(self) -> None:
        """Put every impression appended on this host before the call into the stream.

        Ships this process's journals, the orphans, and the unshipped tail of other live
        processes' journals (which their shippers then find stored already). Never waits for
        another process. Raises what shipping raised (the impression store is down).
        """
        self._ship_own()
        own = self._own_paths()
        for path in self._journals():
            if path not in own:
                self._ship_other(path)
