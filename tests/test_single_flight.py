"""The contract of a serving view's refresh (kgrec/single_flight.py), with loads that the test
holds and releases, so each interleaving happens for certain. Against a stalled graph server, in
the views that use it: tests/test_stalled_server.py. Then the bounded cache of such flights
(RecentlyUsed) that serving, exploration and the rules keep per model version."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from kgrec.gateway import GraphTimeout
from kgrec.single_flight import RecentlyUsed, SingleFlight


class HeldLoad:
    """A load that answers ``answers`` in turn, each only once the test releases it."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.calls = 0

    def __call__(self, held: object) -> object:
        self.calls += 1
        self.started.release()
        assert self.release.acquire(timeout=10)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def started(pool: ThreadPoolExecutor, view: SingleFlight[object], load: HeldLoad) -> Future[object]:
    """A get() whose load has begun."""
    future = pool.submit(view.get, load)
    assert load.started.acquire(timeout=10)
    return future


def waiting(pool: ThreadPoolExecutor, call: Callable[[], object]) -> Future[object]:
    """``call`` in another thread, given time to reach the lock."""
    future = pool.submit(call)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.3)
    return future


def test_while_one_thread_loads_the_others_are_served_the_value_held() -> None:
    view: SingleFlight[object] = SingleFlight(every_s=0)
    first = HeldLoad("v1", "v2")
    first.release.release()
    assert view.get(first) == "v1"
    with ThreadPoolExecutor(2) as pool:
        loading = started(pool, view, first)
        assert view.get(first) == "v1"  # at once: no second load, no wait
        first.release.release()
        assert loading.result(timeout=10) == "v2"
    assert first.calls == 2 and view.held() == "v2"


def test_after_a_stale_mark_the_next_answer_comes_from_a_load_begun_after_it() -> None:
    """This process's own write (a promote, a catalogue change) marks the view stale: its next
    answer must show the write, even while a load that began before the write is under way."""
    view: SingleFlight[object] = SingleFlight(every_s=60)
    load = HeldLoad("old", "begun-before-the-write", "after-the-write")
    load.release.release()
    assert view.get(load) == "old"
    view.stale()
    with ThreadPoolExecutor(2) as pool:
        before = started(pool, view, load)
        view.stale()  # the write lands while that load is under way
        after = waiting(pool, lambda: view.get(load))  # not "old", nor the load begun before
        load.release.release()
        assert before.result(timeout=10) == "begun-before-the-write"
        assert load.started.acquire(timeout=10)
        load.release.release()
        assert after.result(timeout=10) == "after-the-write"
    assert view.get(load) == "after-the-write"  # fresh for 60 s: no more loads
    assert load.calls == 3


def test_threads_with_nothing_held_share_a_graph_failure_instead_of_repeating_it() -> None:
    view: SingleFlight[object] = SingleFlight(every_s=1)
    load = HeldLoad(GraphTimeout("the graph server did not answer within 3 s"), "v1")
    with ThreadPoolExecutor(3) as pool:
        first = started(pool, view, load)
        waiters = [waiting(pool, lambda: view.get(load)) for _ in range(2)]
        load.release.release()
        for future in [first, *waiters]:
            with pytest.raises(GraphTimeout, match="within 3 s"):
                future.result(timeout=10)
    assert load.calls == 1
    load.release.release()
    assert view.get(load) == "v1"  # the next call loads again


def test_a_failure_that_is_not_the_graphs_is_not_shared() -> None:
    """A waiter re-raises only a graph failure (a 503); after any other (a missing artifact) it
    loads for itself, rather than answer with an earlier round's failure."""
    view: SingleFlight[object] = SingleFlight(every_s=1)
    load = HeldLoad(GraphTimeout("earlier"), FileNotFoundError("no artifact"), "v1")
    load.release.release()
    with pytest.raises(GraphTimeout):
        view.get(load)
    with ThreadPoolExecutor(2) as pool:
        first = started(pool, view, load)
        waiter = waiting(pool, lambda: view.get(load))
        load.release.release()
        with pytest.raises(FileNotFoundError):
            first.result(timeout=10)
        assert load.started.acquire(timeout=10)
        load.release.release()
        assert waiter.result(timeout=10) == "v1"


def test_nothing_is_held_when_the_load_answers_none() -> None:
    """No model trained yet: every call asks the graph again."""
    view: SingleFlight[object] = SingleFlight(every_s=60)
    load = HeldLoad(None, None, "v1")
    for _ in range(3):
        load.release.release()
    assert view.get(load) is None and view.get(load) is None and view.held() is None
    assert view.get(load) == "v1" and load.calls == 3


def test_a_held_value_that_does_not_serve_the_caller_is_waited_for_like_a_stale_one() -> None:
    # A cache valid for some inputs only (a version's arms, for one catalogue's facts): a caller
    # whose inputs the held value does not fit never gets it, and waits for the load under way.
    view: SingleFlight[object] = SingleFlight(every_s=float("inf"))
    load = HeldLoad("for-a", "for-b")
    load.release.release()
    assert view.get(load, lambda v: v == "for-a") == "for-a"
    assert view.get(load, lambda v: v == "for-a") == "for-a" and load.calls == 1  # held: no load
    assert load.started.acquire(timeout=1)  # the first load's start
    with ThreadPoolExecutor(2) as pool:
        loading = pool.submit(view.get, load, lambda v: v == "for-b")  # a load for b, under way
        assert load.started.acquire(timeout=10)
        # b's caller does not get the held "for-a", and the load it waits for fits it: no second load
        waiter = waiting(pool, lambda: view.get(HeldLoad(), lambda v: v == "for-b"))
        load.release.release()
        assert loading.result(timeout=10) == "for-b" and waiter.result(timeout=10) == "for-b"
    assert load.calls == 2


def test_a_waiter_that_the_load_under_way_does_not_serve_loads_for_itself() -> None:
    view: SingleFlight[object] = SingleFlight(every_s=float("inf"))
    load = HeldLoad("for-b")
    with ThreadPoolExecutor(2) as pool:
        loading = pool.submit(view.get, load, lambda v: v == "for-b")
        assert load.started.acquire(timeout=10)
        own = HeldLoad("for-c")
        own.release.release()
        waiter = waiting(pool, lambda: view.get(own, lambda v: v == "for-c"))
        load.release.release()
        assert loading.result(timeout=10) == "for-b" and waiter.result(timeout=10) == "for-c"
    assert (load.calls, own.calls) == (1, 1)


def test_a_failed_refresh_leaves_a_stale_mark_to_be_answered() -> None:
    # A process that wrote marks its view stale; a poller's refresh that then fails must not count
    # as the load after the mark, or the writer's next answer would be the value before its write.
    view: SingleFlight[object] = SingleFlight(every_s=float("inf"))
    assert view.get(lambda _held: "before") == "before"
    view.stale()

    def failing(_held: object) -> object:
        raise GraphTimeout("the graph server did not answer")

    with pytest.raises(GraphTimeout):
        view.refresh(failing)
    assert view.get(lambda _held: "after") == "after"
    assert view.refresh(lambda held: f"{held}, polled") == "after, polled"
    assert view.get(lambda _held: "unasked") == "after, polled"  # nothing marked: held


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: RecentlyUsed[str, int] = RecentlyUsed(3)
    for n, key in enumerate("abc"):
        cache.put(key, n)
    assert cache.get("a") == 0  # a use: "b" is now the least recently used
    cache.put("d", 3)
    assert [key for key, _ in cache.items()] == ["c", "a", "d"]
    assert cache.peek("c") == 2  # not a use: "c" goes next
    assert cache.setdefault("e", lambda: 4) == 4 and cache.setdefault("a", lambda: -1) == 0
    assert [key for key, _ in cache.items()] == ["d", "e", "a"]
    cache.put("d", 5)  # a new value for a key held is a use too
    assert cache.pop("e") == 4 and cache.pop("e") is None
    assert [key for key, _ in cache.items()] == ["a", "d"] and "e" not in cache and len(cache) == 2


def test_an_entry_in_use_is_never_dropped() -> None:
    """A version whose load is under way keeps its flight, however long ago it was asked for, so a
    thread asking meanwhile waits for that load rather than starting a second one; the entry just
    used stays too, over the bound when every other entry is in use."""
    cache: RecentlyUsed[str, SingleFlight[object]] = RecentlyUsed(2, SingleFlight.loading)
    load = HeldLoad("arms")
    building = cache.setdefault("building", lambda: SingleFlight(float("inf")))
    with ThreadPoolExecutor(1) as pool:
        future = started(pool, building, load)
        for k in range(5):
            cache.put(f"failed-{k}", SingleFlight(float("inf")))
        assert cache.peek("building") is building
        assert [key for key, _ in cache.items()] == ["building", "failed-4"]
        load.release.release()
        assert future.result(timeout=10) == "arms"
    cache.put("next", SingleFlight(float("inf")))  # "building" is idle now: the least recently used
    assert [key for key, _ in cache.items()] == ["failed-4", "next"]
    busy: RecentlyUsed[str, int] = RecentlyUsed(1, lambda _value: True)
    busy.put("a", 1)
    busy.put("b", 2)
    assert [key for key, _ in busy.items()] == ["a", "b"]


def test_an_entry_kept_while_in_use_goes_at_a_lookup_once_idle() -> None:
    """A quiet process adds nothing after the load ends: a lookup trims the cache back to its bound
    (before, the side version's flight stayed until the next entry was added)."""
    cache: RecentlyUsed[str, SingleFlight[object]] = RecentlyUsed(1, SingleFlight.loading)
    load = HeldLoad("side model")
    side = cache.setdefault("side", lambda: SingleFlight(float("inf")))
    with ThreadPoolExecutor(1) as pool:
        future = started(pool, side, load)
        cache.put("active", SingleFlight(float("inf")))
        assert cache.get("active") is not None  # over the bound, but "side" is loading
        assert [key for key, _ in cache.items()] == ["side", "active"]
        load.release.release()
        assert future.result(timeout=10) == "side model"
    assert cache.get("active") is not None
    assert [key for key, _ in cache.items()] == ["active"]


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads switched every microsecond, so that unguarded steps interleave."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("switching_often")
def test_threads_using_the_cache_together_share_an_entry_and_keep_the_bound() -> None:
    """Threads asking for one key together get one value (one flight, loaded once), and threads
    that get, put and drop keys at once leave at most the bound held."""
    cache: RecentlyUsed[int, object] = RecentlyUsed(4)
    threads = 8
    for key in range(200):
        start = threading.Barrier(threads)

        def ask(key: int = key, start: threading.Barrier = start) -> object:
            start.wait()
            return cache.setdefault(key, object)

        with ThreadPoolExecutor(threads) as pool:
            made = [pool.submit(ask) for _ in range(threads)]
            assert len({id(future.result(timeout=10)) for future in made}) == 1, key

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(3_000):
            key = rng.randrange(12)
            [cache.get, cache.pop, lambda k: cache.put(k, k), lambda _k: cache.items()][rng.randrange(4)](key)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(churn, seed) for seed in range(threads)]:
            future.result(timeout=60)
    assert len(cache) <= 4 and len(cache.items()) == len(cache)
