"""Threads started at once, for tests of what a serving process does when its requests meet together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def together(call: Callable[[], Any], threads: int = 4) -> list[tuple[str, float]]:
    """``call`` in ``threads`` threads started at once: how each ended (its exception's class name,
    or ``ok``) and how long it took."""
    start = threading.Barrier(threads)
    ended: list[tuple[str, float]] = []

    def one() -> None:
        start.wait()
        began = time.monotonic()
        try:
            call()
            outcome = "ok"
        except Exception as exc:
            outcome = type(exc).__name__
        ended.append((outcome, time.monotonic() - began))

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(ended) == threads
    return ended
