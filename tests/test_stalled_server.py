"""A graph server that is alive but does not answer (SIGSTOP: a stalled host, a swapping server),
under a real gunicorn API. Embedded, the graph server is also the job queue's broker and result
store, so the graph's reads and writes, and the job endpoints, all meet the stall; then the
impression store stalls. Then the server stalls at a chosen point of a request: between the
queue's connection check and its ping, and during an erasure's log rewrite; the graph server
dies right after an erasure's deletion; the impressions server stalls in a 404 erasure's rewrite."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from graph_schema.statements import admin
from kgrec import erasure
from kgrec.catalogue import CatalogueView
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer, ServerInfo, _sigkill
from kgrec.errors import NotFound
from kgrec.gateway import open_gateway
from kgrec.impressions import ImpressionStore, impressions_redis_url
from kgrec.job_queue import FOLD_IN_ITEMS, JobQueueUnavailable, answered, job_client
from kgrec.migrations import migrate
from kgrec.model_store import ActiveModel
from kgrec.rules import RulesView
from kgrec.serving import Serving
from tests.conftest import embedded_only
from tests.processes import ApiProcess
from tests.test_erasure_residue import show
from tests.threads import together

KEY = "test-key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}
BOUND_S = 3


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


@embedded_only
def test_a_stalled_graph_server_is_answered_503_within_the_bound(tmp_path: Path) -> None:
    """Each request is answered within KGREC_SERVING_TIMEOUT_S (a few times it at most), not after
    the clients' own waits (300 s on the graph, 120 s on the result store, none on the broker); a
    write the API gave up on may still land once the server goes on, and sending it again is safe."""
    settings = Settings(data_dir=tmp_path / "var")
    server = EmbeddedServer(settings.data_dir)
    info = server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)
    env = {
        "KGREC_DATA_DIR": str(settings.data_dir),
        "KGREC_API_KEYS": KEY,
        "KGREC_SERVING_TIMEOUT_S": str(BOUND_S),
    }
    api = ApiProcess(env, log=tmp_path / "gunicorn.log").start()
    event = {
        "event_id": "while-stalled",
        "user_id": "u-stall",
        "item_id": "p-stall",
        "type": "view",
        "ts": int(time.time() * 1000),
    }

    def post_event() -> requests.Response:
        return requests.post(f"{api.url}/v1/events", json=[event], headers=AUTH, timeout=60)

    def train() -> requests.Response:
        return requests.post(f"{api.url}/v1/models/train", headers=AUTH, timeout=60)

    def get(path: str) -> Callable[[], requests.Response]:
        return lambda: requests.get(f"{api.url}{path}", headers=AUTH, timeout=60)

    try:
        assert get("/readyz")().json()["error"] == "no_model"  # the graph answers
        queued = train()
        assert queued.status_code == 200, queued.text  # no worker: it stays queued
        job = f"/v1/jobs/{queued.json()['id']}"
        assert get(job)().json()["state"] == "PENDING"

        os.kill(info.pid, signal.SIGSTOP)
        try:
            # Twice each: the second call reconnects to the same stopped server.
            answers = {
                f"{name} {attempt}": timed(call)
                for attempt in (1, 2)
                for name, call in [
                    ("readyz", get("/readyz")),
                    ("event", post_event),
                    ("job", get(job)),
                    ("train", train),
                    ("queue", get("/v1/queue")),
                ]
            }
        finally:
            os.kill(info.pid, signal.SIGCONT)
        for name, (answer, waited) in answers.items():
            assert waited < 10 * BOUND_S, f"{name}: {waited:.1f} s"  # before: 120 s, 300 s, or never
            if name.startswith("queue"):
                assert answer.status_code == 200 and answer.json() == {"broker": False, "workers": []}
                continue
            error = "queue_unavailable" if name.startswith(("job", "train")) else "graph_unavailable"
            assert answer.status_code == 503 and answer.json()["error"] == error, f"{name}: {answer.text}"
            assert int(answer.headers["Retry-After"]) > 0
        detail = answers["event 1"][0].json()["detail"]
        assert (
            f"did not answer within {BOUND_S} s" in detail
            and "sending the same request again is safe" in detail
        )

        # The server goes on: the job is readable again, and the event resent is in the graph once,
        # whether or not the one the API gave up on landed.
        assert get(job)().json()["state"] == "PENDING"
        resent = post_event()
        assert resent.status_code == 200, resent.text
        assert resent.json()["applied"] + resent.json()["duplicates"] == 1
        with open_gateway(settings) as gateway:
            views = gateway.run_query(
                "MATCH (:User {id: 'u-stall'})-[r:INTERACTED]->(:Item {id: 'p-stall'}) RETURN r.n_view AS n",
                {},
            )
        assert [row["n"] for row in views] == [1]

        # The impression store stalls: reading an impression is a 503 that names it, within the bound.
        impressions = server.impressions.running()
        assert impressions is not None
        os.kill(impressions.pid, signal.SIGSTOP)
        try:
            looked_up, waited = timed(get(f"/v1/impressions/{uuid.uuid4().hex}"))
        finally:
            os.kill(impressions.pid, signal.SIGCONT)
        assert looked_up.status_code == 503 and looked_up.json()["error"] == "impressions_unavailable", (
            looked_up.text
        )
        assert waited < 5 * BOUND_S, f"{waited:.1f} s"  # before: 30 s whatever the bound
        assert get(f"/v1/impressions/{uuid.uuid4().hex}")().status_code == 404  # it answers again
    finally:
        os.kill(info.pid, signal.SIGCONT)
        api.stop()
        server.stop()


@embedded_only
def test_requests_that_meet_a_stall_together_each_wait_one_bound(tmp_path: Path) -> None:
    """A serving process's threads that meet a stalled server at once are each refused within about
    the bound, not one bound later for every thread before them: the catalogue view and the active
    model are refreshed by one thread while the others go on with what is held (or share the
    refresh's failure), the rules' first load is made by one thread, and reconnecting to the server is not done under a lock. Before, the fourth
    of four threads waited four bounds in each case."""
    settings = Settings(data_dir=tmp_path / "var")
    server = EmbeddedServer(settings.data_dir)
    info = server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)
    gateway = open_gateway(settings, timeout_s=BOUND_S)
    catalogue, model = CatalogueView(gateway), ActiveModel(gateway, settings.data_dir)
    rules = RulesView(gateway)  # not read yet: its first load is due
    held = catalogue.snapshot()
    assert model.get() is None  # no model trained: nothing is held
    time.sleep(1)  # both are due a check

    def request_with_catalogue() -> None:  # a request takes the catalogue, then reads for itself
        catalogue.snapshot()
        gateway.read(admin.PING)

    os.kill(info.pid, signal.SIGSTOP)
    try:
        outcomes = {
            "catalogue": together(request_with_catalogue),
            "model": together(model.get),
            "rules": together(rules.rules),
            "reconnect": together(lambda: gateway.read(admin.PING)),
        }
    finally:
        os.kill(info.pid, signal.SIGCONT)
    try:
        for name, ended in outcomes.items():
            assert {outcome for outcome, _ in ended} == {"GraphTimeout"}, f"{name}: {ended}"
            assert max(waited for _, waited in ended) < 2 * BOUND_S, f"{name}: {ended}"  # before: 4 bounds
        # The server goes on: both views answer again.
        time.sleep(1)
        assert catalogue.snapshot().revision == held.revision and model.get() is None
        assert rules.rules().rules == []
    finally:
        rules.close()
        gateway.close()
        server.stop()


def test_celery_giving_up_on_a_result_subscription_is_the_queues_503_and_the_client_is_rebuilt() -> None:
    """Sending a task subscribes to its result first; on a result store that does not answer,
    Celery gives up with a RuntimeError and asks for the app to be rebuilt. That is the queue's
    503 (not a 500), and the next call gets a new client."""
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        settings = Settings(redis_url=f"redis://127.0.0.1:{listener.getsockname()[1]}/0", serving_timeout_s=1)
        client = job_client(settings)
        with pytest.raises(JobQueueUnavailable, match="did not answer") as refused, answered(client):
            client.send_task(FOLD_IN_ITEMS, args=[["an-item"]], retry=False)
        assert isinstance(refused.value.__cause__, RuntimeError), refused.value.__cause__
        assert job_client(settings) is not client
        with pytest.raises(RuntimeError, match="not the queue's"), answered(job_client(settings)):
            raise RuntimeError("not the queue's")
    finally:
        listener.close()


class StopBefore:
    """A TCP relay in front of a redis-server (the graph server, or the impressions' given their
    pid and port) that, once told a command, stops the server (SIGSTOP) just before it relays that
    command's first sending: the server stalls at exactly that point of a request, whichever
    connection it comes on. Or, told some bytes, it kills the server (SIGKILL) once it has the
    answer to the first sending that holds them, and then relays that answer: the server is gone
    by the time its client learns that the write was made."""

    def __init__(self, info: ServerInfo) -> None:
        self._info = info
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._command: bytes | None = None
        self._kill_after: bytes | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.stopped = threading.Event()
        self.killed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop_before(self, command: str) -> None:
        """Stop the server before the next sending of ``command`` (its name, e.g. ``PUBLISH``)."""
        self.stopped.clear()
        self._command = f"${len(command)}\r\n{command}\r\n".encode()  # the name as RESP sends it

    def kill_after_answer_to(self, needle: str) -> None:
        """Kill the server once it has answered the next sending that holds ``needle``."""
        self._kill_after = needle.encode()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:  # closed
                return
            far = socket.create_connection((self._info.host, self._info.port))
            self._sockets += [near, far]
            asked = threading.Event()  # this connection sent the bytes to kill after
            threading.Thread(target=self._pump, args=(near, far, True, asked), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near, False, asked), daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, to_server: bool, asked: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if to_server:
                    with self._lock:
                        if self._command is not None and self._command in data:
                            os.kill(self._info.pid, signal.SIGSTOP)
                            self._command = None
                            self.stopped.set()
                        if self._kill_after is not None and self._kill_after in data:
                            self._kill_after = None
                            asked.set()
                elif asked.is_set():  # the answer (one small reply) is read: the server dies first
                    _sigkill(self._info.pid)
                    self.killed.set()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@contextlib.contextmanager
def server_behind_relay(tmp_path: Path) -> Iterator[tuple[Settings, EmbeddedServer, StopBefore, ServerInfo]]:
    """A migrated embedded server and a :class:`StopBefore` relay in front of it that every client
    uses (its record names the relay's port); settings at :data:`BOUND_S`."""
    settings = Settings(data_dir=tmp_path / "var", serving_timeout_s=BOUND_S)
    server = EmbeddedServer(settings.data_dir)
    info = server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)
    relay = StopBefore(info)
    server.info_path.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(info, port=relay.port))))
    try:
        yield settings, server, relay, info
    finally:
        if not relay.killed.is_set():
            os.kill(info.pid, signal.SIGCONT)
        server.info_path.write_text(json.dumps(dataclasses.asdict(info)))
        relay.close()
        server.stop()


@contextlib.contextmanager
def api_behind_relay(tmp_path: Path) -> Iterator[tuple[ApiProcess, StopBefore, ServerInfo]]:
    """:func:`server_behind_relay`, and an API at :data:`BOUND_S`."""
    with server_behind_relay(tmp_path) as (settings, _server, relay, info):
        env = {
            "KGREC_DATA_DIR": str(settings.data_dir),
            "KGREC_API_KEYS": KEY,
            "KGREC_SERVING_TIMEOUT_S": str(BOUND_S),
        }
        api = ApiProcess(env, log=tmp_path / "gunicorn.log")
        try:
            yield api.start(), relay, info
        finally:
            os.kill(info.pid, signal.SIGCONT)
            api.stop()


@embedded_only
def test_a_broker_that_stalls_after_the_queues_connection_check_is_answered_within_the_bound(
    tmp_path: Path,
) -> None:
    """``GET /v1/queue`` checks the connection, then publishes its ping to the workers. kombu
    retried that publish without limit, reconnecting each time, so a broker that stalled between
    the two held the request for good; now it is one try, and the answer is ``broker: false``."""
    with api_behind_relay(tmp_path) as (api, relay, info):
        queue = f"{api.url}/v1/queue"
        assert requests.get(queue, headers=AUTH, timeout=60).json() == {"broker": True, "workers": []}
        relay.stop_before("PUBLISH")  # the ping's: the check (PING) has answered by then
        answer, waited = timed(lambda: requests.get(queue, headers=AUTH, timeout=60))
        assert relay.stopped.is_set()
        os.kill(info.pid, signal.SIGCONT)
        assert waited < 10 * BOUND_S, f"{waited:.1f} s"  # before: never
        assert answer.status_code == 200 and answer.json() == {"broker": False, "workers": []}
        assert requests.get(queue, headers=AUTH, timeout=60).json()["broker"] is True


@embedded_only
def test_an_erasure_whose_log_rewrite_stalls_is_answered_within_the_bound(tmp_path: Path) -> None:
    """After deleting, an erasure rewrites the servers' logs: with clients that waited 30 s and
    retried ten times, a graph server that stalled there held ``DELETE /v1/users/{id}`` for
    minutes (and the snapshot guard's setting ended in a 500). Now each call waits the serving
    bound, and the answer says the user is erased and the graph's log was not rewritten (the
    impression store's still is); a repeat is a 404."""
    with api_behind_relay(tmp_path) as (api, relay, info):

        def erase(user: str) -> requests.Response:
            return requests.delete(f"{api.url}/v1/users/{user}", headers=AUTH, timeout=60)

        # The snapshot guard's setting, then the rewrite itself (its first INFO has answered).
        for user, command in [("u-guard", "CONFIG"), ("u-rewrite", "BGREWRITEAOF")]:
            event = {"event_id": f"e-{user}", "user_id": user, "item_id": "p-1", "type": "view"}
            posted = requests.post(
                f"{api.url}/v1/events",
                json=[{**event, "ts": int(time.time() * 1000)}],
                headers=AUTH,
                timeout=60,
            )
            assert posted.status_code == 200, posted.text
            relay.stop_before(command)
            answer, waited = timed(lambda user=user: erase(user))
            assert relay.stopped.is_set(), command
            os.kill(info.pid, signal.SIGCONT)
            assert waited < 10 * BOUND_S, f"{command}: {waited:.1f} s"  # before: minutes
            assert answer.status_code == 200, f"{command}: {answer.text}"
            assert answer.json()["erased"] is True and answer.json()["logs"]["graph"] == "unavailable"
            assert answer.json()["logs"].get("impressions", "rewritten") == "rewritten", answer.text
            assert erase(user).status_code == 404  # the deletion was done


@embedded_only
def test_an_erasure_whose_graph_server_dies_after_the_deletion_answers_that_it_was_done(
    tmp_path: Path,
) -> None:
    """After deleting, the erasure withdraws the user's update plans through the process's job
    queue client. Built then for the first time, that client looks up the embedded server, its
    broker: one that had died right after the deletion was a GraphUnavailable, a 503 ("nothing
    was written") that a resend could only meet with a 404. Now it is the erasure's 200, with
    ``update_plans`` null and the graph's log ``unavailable``."""
    with server_behind_relay(tmp_path) as (settings, _server, relay, _info):
        user = f"dies-{uuid.uuid4().hex}"
        with open_gateway(settings) as gateway:
            gateway.run_query("MERGE (:User {id: $id})", {"id": user})
        serving, store = Serving(settings), ImpressionStore(settings)
        try:
            relay.kill_after_answer_to(user)  # the deletion's statement is the first to name them
            answer = serving.erase_user(user, store)
        finally:
            serving.close()
            store.close()
        assert relay.killed.is_set()
    assert answer["erased"] is True and answer["removed"]["user"] == 1
    assert answer["removed"]["update_plans"] is None
    assert answer["logs"] == {"graph": erasure.UNAVAILABLE, "impressions": erasure.REWRITTEN}


@embedded_only
def test_an_erasure_of_no_one_whose_owed_rebuild_meets_a_stalled_log_rewrite_is_still_a_404(
    tmp_path: Path,
) -> None:
    """An erasure that finds nothing to delete still makes the stream's rebuild an earlier one owed
    (tests/test_erasure_residue.py), then rewrites the impression store's log. An impressions
    server that stalled there turned the 404 into a 503 (the tombstone written, the rebuild made);
    now the rewrite is given up within the bound, logged, and the answer is the 404."""
    with server_behind_relay(tmp_path) as (settings, server, _relay, info):
        impressions = server.impressions.running()
        assert impressions is not None
        relay = StopBefore(dataclasses.replace(info, pid=impressions.pid, port=impressions.port))
        relayed = f"redis://:{info.password}@{info.host}:{relay.port}/0"
        store = ImpressionStore(settings.with_overrides(redis_url=relayed))
        serving = Serving(settings)
        user = f"owed-{uuid.uuid4().hex}"
        try:
            show(store, user, int(time.time() * 1000))
            store.settle()
            client = store.client()
            mine = [e.decode() for e, f in client.xrange(store.stream) if f[b"u"] == user.encode()]
            assert store._erase_entries(mine) == 1  # an erasure cut off before its rebuild
            assert client.exists(store.compaction_owed)
            relay.stop_before("BGREWRITEAOF")
            with pytest.raises(NotFound):
                serving.erase_user(user, store)
            assert relay.stopped.is_set()
        finally:
            os.kill(impressions.pid, signal.SIGCONT)
            serving.close()
            store.close()
            relay.close()
        client.close()
        direct = redis.Redis.from_url(
            impressions_redis_url(settings.with_overrides(redis_url=relayed)).replace(
                f":{relay.port}/", f":{impressions.port}/"
            )
        )  # the store's own database, not through the relay, which is closed
        try:
            assert not direct.exists(store.compaction_owed)  # the rebuild was made
            assert user.encode() not in direct.dump(store.stream)
        finally:
            direct.close()
