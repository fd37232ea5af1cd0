"""One refresh at a time of a serving process's cached view of the graph (the active model, the
catalogue, an experiment's model version, the rules, a version's exploration arms), while the
other threads go on with the value held.

Without it, a view refreshed under a lock turns a stalled graph server into a queue: each request
waits for the failed reads of all the requests before it, then makes its own. With it, while one
thread refreshes, the others go on with the value held; when there is none (the first load, or
the view was marked stale by this process's own write, which its next answer must show) they
wait for that refresh and share its failure instead of repeating it. Every graph call of a
refresh is bounded by the gateway, so that wait is too.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from kgrec.gateway.base import GraphUnavailable

T = TypeVar("T")


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


__all__ = ["SingleFlight"]
