"""One refresh at a time of a serving process's cached view of the graph (the active model, the
catalogue, an experiment's model version), with a bounded wait for the others.

Without it, a view refreshed under a lock turns a stalled graph server into a queue: each request
waits for the failed reads of all the requests before it, then makes its own. With it, while one
thread refreshes, the others go on with the value held, or, when there is none (the first load,
or the view was marked stale by this process's own write), wait for that refresh, at most the
gateway's bound, and share its failure instead of repeating it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from kgrec.gateway.base import GraphTimeout, GraphUnavailable

T = TypeVar("T")


class SingleFlight:
    """Runs a view's refresh in one thread at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rounds = 0  # refreshes finished, so a waiter knows whether one ended while it waited
        self._failure: GraphUnavailable | None = None  # how the latest one ended, when it failed

    def fresh(
        self,
        refresh: Callable[[], T],
        held: T | None,
        checked_at: float,
        every_s: float,
        wait_s: float | None,
    ) -> T:
        """``held`` while its check (``checked_at``, monotonic; -inf: marked stale) is under
        ``every_s`` old, else :meth:`run`, which serves it meanwhile only when not marked stale:
        this process's own write must show in its next answer."""
        if held is not None and time.monotonic() - checked_at < every_s:
            return held
        return self.run(refresh, None if checked_at == -math.inf else held, wait_s)

    def run(self, refresh: Callable[[], T], held: T | None, wait_s: float | None) -> T:
        """``refresh()`` in this thread, unless another thread is running it: then ``held`` when it
        is not None, else that refresh's outcome (its failure re-raised, or this thread's own
        refresh after its success, which finds the view fresh), waited for at most ``wait_s``
        seconds (None: without a limit). ``refresh`` checks for itself whether it is due."""
        if not self._lock.acquire(blocking=False):
            if held is not None:
                return held
            rounds = self._rounds
            if not self._lock.acquire(timeout=-1 if wait_s is None else wait_s):
                raise GraphTimeout(f"the graph server did not answer an earlier read within {wait_s:g} s")
            failure = self._failure
            if failure is not None and self._rounds != rounds:
                self._lock.release()
                raise type(failure)(*failure.args) from failure
        try:
            value = refresh()
        except GraphUnavailable as exc:
            self._failure = exc
            raise
        else:
            self._failure = None
            return value
        finally:
            self._rounds += 1
            self._lock.release()


__all__ = ["SingleFlight"]
