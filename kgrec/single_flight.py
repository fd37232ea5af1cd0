"""One refresh at a time of a serving process's cached view of the graph (the active model, the
catalogue, an experiment's model version, the rules, a version's exploration arms), while the
other threads go on with the value held.

Without it, a view refreshed under a lock turns a stalled graph server into a queue: each request
waits for the failed reads of all the requests before it, then makes its own. With it, while one
thread refreshes, the others go on with the value held; when there is none (the first load, or
the view was marked stale by this process's own write, which its next answer must show) they
wait for that refresh and share its failure instead of repeating it. Every graph call of a
refresh is bounded by the gateway, so that wait is too.

:class:`RecentlyUsed` bounds the caches of such flights (and of results compiled per model
version) that a process keeps, without dropping a flight whose load is under way.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from kgrec.gateway.base import GraphUnavailable

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[T]):
    """A value read from the graph again at most every ``every_s``, by one thread at a time.

    None is never held: a view whose load answers None (no model trained yet) asks again on
    every call.
    """

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._lock = threading.Lock()
        # (value, when the load that made it began, the stale marks it had seen): one tuple, so a
        # reader always gets a value with its own check time.
        self._state: tuple[T | None, float, int] = (None, -math.inf, 0)
        self._marks = 0  # stale() calls so far
        self._rounds = 0  # refreshes finished, so a waiter knows whether one ended while it waited
        self._failure: GraphUnavailable | None = None  # how the latest one ended, when the graph failed it

    def held(self) -> T | None:
        """The value held, without asking the graph (None before the first load)."""
        return self._state[0]

    def loading(self) -> bool:
        """Whether a load is under way (its threads hold this flight, whoever else forgets it)."""
        return self._lock.locked()

    def stale(self) -> None:
        """Make the next call wait for a load that begins after this one (this process just wrote)."""
        self._marks += 1

    def refresh(self, load: Callable[[T | None], T | None]) -> T | None:
        """Load now, after any load under way, whatever is held (a poller that looks for changes);
        unlike :meth:`stale`, the other threads go on with the value held meanwhile."""
        return self.get(load, lambda _held: False)

    def get(
        self, load: Callable[[T | None], T | None], usable: Callable[[T], bool] | None = None
    ) -> T | None:
        """The value, loaded by ``load(previous value)`` when it is ``every_s`` old or marked
        stale; while another thread loads it, the value held, unless marked stale since (then
        that load's outcome: its graph failure re-raised, or a fresh check by this thread).

        ``usable``: whether a held value serves this caller at all (a cache valid for some inputs
        only, e.g. one catalogue's facts); one that does not is waited for like a stale one.
        """
        value, checked_at, marks = self._state
        current = marks == self._marks and (value is None or usable is None or usable(value))
        if value is not None and current and time.monotonic() - checked_at < self._every_s:
            return value
        if not self._lock.acquire(blocking=False):
            if value is not None and current:
                return value
            rounds = self._rounds
            self._lock.acquire()
            failure = self._failure
            if failure is not None and self._rounds != rounds:
                self._lock.release()
                raise type(failure)(*failure.args) from failure
        try:
            value, checked_at, held_marks = self._state
            if (
                value is not None
                and held_marks == self._marks
                and (usable is None or usable(value))
                and time.monotonic() - checked_at < self._every_s
            ):
                return value  # loaded by the refresh this thread waited for
            marks, began = self._marks, time.monotonic()
            try:
                fresh = load(value)
            except GraphUnavailable as exc:
                # Shared without its traceback, whose frames would keep the load's inputs (a
                # model, say) alive for as long as the failure is held.
                self._failure = type(exc)(*exc.args)
                # The value held is served a while longer, but a stale mark stays unanswered:
                # the next call after it still loads.
                self._state = (value, began, held_marks)
                raise
            except BaseException:
                self._failure = None  # not the graph's: each waiter tries for itself
                raise
            self._failure = None
            self._state = (fresh, began, marks)
            return fresh
        finally:
            self._rounds += 1
            self._lock.release()


class RecentlyUsed(Generic[K, V]):
    """At most ``size`` values by key, the least recently used dropped first, for the caches of
    flights and compiled results a serving process keeps per model version; safe across threads.

    Never dropped: the entry just used, and one ``in_use`` says a thread still needs (a flight
    whose load is under way, which a thread asking later must share rather than load again);
    meanwhile the cache holds more than ``size``. A lookup (:meth:`get`, :meth:`peek`) of a cache
    over its bound trims it again, so that an entry kept while in use is dropped once idle even
    when nothing new is added (a quiet process); under the bound, a lookup costs no more than a
    dict's.
    """

    def __init__(self, size: int, in_use: Callable[[V], bool] = lambda _value: False) -> None:
        self._size = size
        self._in_use = in_use
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, V] = OrderedDict()  # least recently used first

    def get(self, key: K) -> V | None:
        """``key``'s value, now the most recently used (None when not held)."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            if len(self._entries) > self._size:
                self._trim(key)
            return value

    def peek(self, key: K) -> V | None:
        """``key``'s value, not counted as a use (None when not held)."""
        with self._lock:
            if len(self._entries) > self._size:
                self._trim(key)
            return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Hold ``value`` as ``key``'s, the most recently used."""
        with self._lock:
            self._entries[key] = value
            self._use(key)

    def setdefault(self, key: K, make: Callable[[], V]) -> V:
        """``key``'s value, ``make()`` held as it when there is none; the most recently used."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                value = self._entries[key] = make()
            self._use(key)
            return value

    def pop(self, key: K) -> V | None:
        """Drop ``key``; its value (None when not held)."""
        with self._lock:
            return self._entries.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """The entries, least recently used first."""
        with self._lock:
            return list(self._entries.items())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _use(self, key: K) -> None:
        self._entries.move_to_end(key)
        self._trim(key)

    def _trim(self, keep: K) -> None:
        """Drop the least recently used entries over the bound, but ``keep`` and those in use."""
        idle = [old for old, value in self._entries.items() if old != keep and not self._in_use(value)]
        for old in idle[: max(0, len(self._entries) - self._size)]:
            del self._entries[old]


__all__ = ["RecentlyUsed", "SingleFlight"]
