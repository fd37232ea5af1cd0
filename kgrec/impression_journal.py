"""The impression journal: what a process showed, appended to a local file before it answers and
shipped to the impression stream (kgrec/impressions.py) by a thread of its own.

Why. Recording used to be one synchronous round trip to the impressions server per response. On
a loaded machine that round trip's wake-up was the whole p99 overhead (README, "Recording
impressions"). An append is one ``write(2)`` into the page cache: it costs microseconds, and it
survives kill -9 of the process and of every server, as the server's AOF write did. Only an OS
crash can lose the last seconds, as with ``appendfsync no``.

Files, in one directory per graph (``<data dir>/impression-journal/<graph>/``):

* ``<pid>-<random>.jnl``: one line per impression, each appended by one ``write``. Its process
  holds ``flock(LOCK_EX)`` on it for life. A journal nobody holds belongs to a process that died:
  it is an *orphan*, and whoever finds one ships it and deletes it.
* ``<same>.shipped``: how many bytes of the journal are in the stream (ASCII digits).

A journal is created under ``.new``, locked, and only then renamed, so nobody can take a
journal for an orphan before its writer holds it. Shipping is idempotent (the stream script
skips an impression whose id is kept already), so a crash between a batch and its offset
ships that batch again, harmlessly.

Reading one's writes. A reader that must see every impression recorded so far on this host
(attribution, ``GET /v1/impressions/{id}``, experiment results, erasure) calls :meth:`settle`
first. It ships the orphans, and it waits until every live journal's offset reaches the size
that journal had when the call began. Impressions recorded on another host (several API
machines) are seen once that host has shipped them, normally within milliseconds.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".jnl"
SHIPPED = ".shipped"
NEW = ".new"
BATCH = 500  # impressions per shipping round trip
ROTATE_BYTES = 64 << 20  # a fully shipped journal this large is replaced by a fresh one
ORPHAN_SCAN_S = 10.0  # how often the shipper looks for journals of processes that died
RETRY_S = 0.5  # how long shipping waits after a failure (the impressions server is down)
SETTLE_POLL_S = 0.002
SETTLE_TIMEOUT_S = 5.0
EXIT_FLUSH_S = 2.0  # how long a clean exit waits for its journal to be shipped
ABANDONED_NEW_S = 60.0  # a .new file this old lost its creator

Ship = Callable[[list[bytes]], None]  # stores a batch of journal lines in the stream; raises on failure

_JOURNALS: weakref.WeakSet[Journal] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for journal in list(_JOURNALS):
        journal._forget_parents_file()


os.register_at_fork(after_in_child=_forget_after_fork)


def _read_offset(path: Path) -> int:
    """A journal's shipped offset (0 when its file is missing or unreadable)."""
    try:
        return int(path.read_bytes().strip() or b"0")
    except (FileNotFoundError, ValueError):
        return 0


def _lines(data: bytes) -> Iterator[bytes]:
    """The complete lines of ``data`` (a trailing partial line was never acknowledged)."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        yield data[start : end + 1]
        start = end + 1


def _ship_lines(ship: Ship, data: bytes, on_progress: Callable[[int], None]) -> None:
    """Ship ``data``'s complete lines in batches, reporting the bytes done after each batch."""
    batch: list[bytes] = []
    done = pending = 0
    for line in _lines(data):
        batch.append(line)
        pending += len(line)
        if len(batch) >= BATCH:
            ship(batch)
            done, pending, batch = done + pending, 0, []
            on_progress(done)
    if batch:
        ship(batch)
        on_progress(done + pending)


@dataclass
class _OwnFile:
    """The journal this process appends to."""

    path: Path
    fd: int  # O_RDWR | O_APPEND, flock'd for the process's life
    offset_fd: int
    size: int = 0  # bytes appended
    shipped: int = 0  # bytes in the stream

    @property
    def offset_path(self) -> Path:
        return self.path.with_suffix(SHIPPED)

    def save_offset(self, shipped: int) -> None:
        self.shipped = shipped
        text = str(shipped).encode()
        os.pwrite(self.offset_fd, text.ljust(20), 0)

    def close(self) -> None:
        for fd in (self.fd, self.offset_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Journal:
    """One directory of impression journals: this process's own, and the orphans it ships."""

    def __init__(self, directory: Path, ship: Ship) -> None:
        self.directory = directory
        self.ship = ship
        self._lock = threading.Lock()  # appends, opening and rotating the own file
        self._progress = threading.Condition()  # notified when the own file's offset moves
        self._wake = threading.Event()
        self._own: _OwnFile | None = None
        self._pid = 0  # the process that opened _own
        self._shipper_pid = 0  # the process whose shipper thread runs
        self._failing = False
        _JOURNALS.add(self)

    # --- the writer -------------------------------------------------------------------------------

    def append(self, line: bytes) -> None:
        """Append one line (ending in a newline) to this process's journal; the shipper is woken.

        Raises OSError when the file cannot take it (a full disk): nothing of it stays behind.
        """
        with self._lock:
            own = self._own_file()
            try:
                written = os.write(own.fd, line)
                if written != len(line):
                    raise OSError(f"short write to {own.path} ({written} of {len(line)} bytes)")
            except OSError:
                os.ftruncate(own.fd, own.size)  # no partial line for the shipper
                raise
            own.size += len(line)
        self._wake.set()

    def _own_file(self) -> _OwnFile:
        """This process's journal, created (and its shipper started) on first use."""
        if self._own is not None and self._pid == os.getpid():
            return self._own
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        new = self.directory / f"{name}{NEW}"
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.directory / f"{name}{SUFFIX}"
        offset_fd = os.open(path.with_suffix(SHIPPED), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        own = _OwnFile(path, fd, offset_fd)
        own.save_offset(0)
        os.rename(new, path)
        self._own, self._pid = own, os.getpid()
        if self._shipper_pid != self._pid:
            self._shipper_pid = self._pid
            threading.Thread(target=self._ship_forever, name="impression-shipper", daemon=True).start()
            atexit.register(self._flush_at_exit)
        return own

    def _forget_parents_file(self) -> None:
        """In a forked child: drop the parent's journal (the child's lock would keep it from being
        found as an orphan once the parent dies); the child opens its own on first append."""
        own, self._own = self._own, None
        self._lock = threading.Lock()
        self._progress = threading.Condition()
        self._wake = threading.Event()
        if own is not None:
            own.close()

    # --- the shipper ------------------------------------------------------------------------------

    def _ship_forever(self) -> None:
        pid = os.getpid()
        last_scan = 0.0
        while os.getpid() == pid:
            self._wake.wait(ORPHAN_SCAN_S)
            self._wake.clear()
            try:
                self._ship_own()
                if time.monotonic() - last_scan >= ORPHAN_SCAN_S:
                    self.ship_orphans()
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
        """Ship what this process appended since the last round; rotate a large shipped file."""
        with self._lock:
            own, end = self._own, self._own.size if self._own is not None else 0
        if own is None or own.shipped >= end:
            return
        start = own.shipped
        data = os.pread(own.fd, end - start, start)

        def progress(done: int) -> None:
            own.save_offset(start + done)
            with self._progress:
                self._progress.notify_all()

        _ship_lines(self.ship, data, progress)
        if own.shipped >= ROTATE_BYTES:
            self._rotate(own)

    def _rotate(self, old: _OwnFile) -> None:
        with self._lock:
            if self._own is not old or old.shipped < old.size:
                return
            self._own = None
            self._own_file()
        old.offset_path.unlink(missing_ok=True)
        old.path.unlink(missing_ok=True)
        old.close()

    def _flush_at_exit(self) -> None:
        """On a clean exit: let the shipper finish (briefly) and remove the journal if it did."""
        own = self._own
        if own is None or self._pid != os.getpid():
            return
        self._wake.set()
        with self._progress:
            done = self._progress.wait_for(lambda: own.shipped >= own.size, EXIT_FLUSH_S)
        if not done:
            log.warning("impression journal %s: left for the next process to ship", own.path)
            return
        with self._lock:
            self._own = None
        own.offset_path.unlink(missing_ok=True)
        own.path.unlink(missing_ok=True)
        own.close()

    # --- orphans and settling ---------------------------------------------------------------------

    def _journals(self, suffix: str = SUFFIX) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == suffix)
        except FileNotFoundError:
            return []

    def _ship_orphan(self, path: Path) -> bool:
        """Ship and delete ``path`` if its process is gone; False if a live process holds it."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if os.fstat(fd).st_nlink == 0:  # another process shipped and removed it meanwhile
                return True
            offset_path = path.with_suffix(SHIPPED)
            start = _read_offset(offset_path)
            size = os.fstat(fd).st_size
            data = os.pread(fd, max(0, size - start), start)
            _ship_lines(self.ship, data, lambda done: offset_path.write_bytes(str(start + done).encode()))
            offset_path.unlink(missing_ok=True)  # first: a journal without offset is shipped again from 0
            path.unlink(missing_ok=True)
            log.info("impression journal %s: shipped %d bytes a process left", path, size - start)
            return True
        finally:
            os.close(fd)

    def ship_orphans(self) -> None:
        """Ship the journals of processes that ended (and drop their abandoned ``.new`` files)."""
        own = self._own.path if self._own is not None and self._pid == os.getpid() else None
        for path in self._journals():
            if path != own:
                self._ship_orphan(path)
        for new in self._journals(NEW):  # its process died creating it: nothing in it was answered
            with contextlib.suppress(FileNotFoundError):
                if time.time() - new.stat().st_mtime > ABANDONED_NEW_S:
                    new.unlink()

    def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until every impression appended on this host before the call is in the stream.

        Ships orphans itself; waits for live processes' shippers. Returns False if some journal
        had not caught up by ``timeout_s`` (its process is stuck): the caller goes on without it.
        Raises what shipping an orphan raised (the impressions server is down).
        """
        deadline = time.monotonic() + timeout_s
        own = self._own if self._pid == os.getpid() else None
        own_target = 0
        if own is not None:
            with self._lock:
                own_target = own.size
            self._wake.set()
        others: list[tuple[Path, int]] = []
        for path in self._journals():
            if own is None or path != own.path:
                with contextlib.suppress(FileNotFoundError):  # shipped and removed since the listing
                    others.append((path, path.stat().st_size))
        for path, size in others:
            if self._ship_orphan(path):
                continue
            while path.exists() and _read_offset(path.with_suffix(SHIPPED)) < size:
                if time.monotonic() >= deadline:
                    log.warning("impression journal %s: not shipped within %.1f s", path, timeout_s)
                    return False
                time.sleep(SETTLE_POLL_S)
        if own is not None:
            with self._progress:
                caught_up = self._progress.wait_for(
                    lambda: own.shipped >= own_target, max(0.0, deadline - time.monotonic())
                )
            if not caught_up:
                log.warning("impression journal %s: not shipped within %.1f s", own.path, timeout_s)
                return False
        return True
