"""The job queue: task names, the Celery configuration, and one Celery client per process.

The workers (``workers/``) implement the tasks under these names; the API and the
CLI enqueue them and read their state through :func:`job_client`. Names keep
their historical ``workers.tasks.*`` values so tasks already queued stay valid.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from celery import Celery, states
from celery.app.amqp import AMQP
from kombu import Producer, pools
from kombu.exceptions import OperationalError

from kgrec.config import Settings
from kgrec.errors import NotFound
from kgrec.gateway import GraphUnavailable
from kgrec.runtime import embedded_server
from kgrec.server_refusals import cannot_write_now

TRAIN = "workers.tasks.train"
FOLD_IN_ITEMS = "workers.tasks.fold_in_items"
PRUNE_GRAPH = "workers.tasks.prune_graph"
GUARD_SNAPSHOTS = "workers.tasks.guard_snapshots"
# How often beat checks that the embedded graph could load a snapshot taken now (a label count is
# near an unloadable one for as long as it takes to add or remove two nodes).
SNAPSHOT_GUARD_INTERVAL_S = 60.0
RELINK_TOPICS = "workers.tasks.relink_topics"
# How often beat checks that the graph's topics are the active version's (a promotion that died
# between its topic write and its switch left the candidate's; kgrec.model_versions.relink_active_topics).
TOPIC_REPAIR_INTERVAL_S = 60.0
RETRAIN_IF_DUE = "workers.tasks.retrain_if_due"  # sent by beat only (workers/celery_app.py)
# An incremental update: the dispatcher queues one partition task per part and the merge as their chord.
INCREMENTAL_UPDATE = "workers.tasks.incremental_update"
INCREMENTAL_PARTITION = "workers.tasks.incremental_partition"
INCREMENTAL_MERGE = "workers.tasks.incremental_merge"

# An update's plan names the users it refreshes. It travels to the partitions and the merge as the
# name of a key in the result backend, not in the tasks' arguments: the backend keeps a task's
# arguments and result for a day (``result_extended``), and an erasure must be able to find and
# withdraw a plan that names the erased user (:func:`withdraw_plans`). The merge deletes it.
PLAN_KEY = "kgrec:incremental-plan:"  # + the update's task id
PLANS = "kgrec:incremental-plans"  # the set of the plan keys written (some may have expired)

# Where beat's fold-in sweep goes on from: the last id of its last full page ("" from the start).
SWEEP_AFTER = "kgrec:fold-in-sweep-after"
DELIVERIES_KEY = "kgrec:deliveries:"  # + a task id: how many times a worker has started it
# A task whose worker dies under it (reject_on_worker_lost) is requeued by Celery every time, with
# no limit: an out-of-memory training would restart for ever and hold the only worker. So the
# tasks that ask for redelivery (workers.tasks.BoundedRedelivery) fail on their delivery past this.
MAX_DELIVERIES = 3

_clients: dict[tuple[str | None, Path, str, float], Celery] = {}
_lock = threading.Lock()


class JobQueueUnavailable(RuntimeError):
    """The job queue's broker or result backend refused the connection or did not answer in time
    (callers answer 503 / retry)."""


_QUEUE_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError)


@contextlib.contextmanager
def answered(client: Celery) -> Iterator[None]:
    """Raise :class:`JobQueueUnavailable` for a broker or backend that does not answer (kombu wraps
    the publisher's connection errors; Celery's Redis backend raises redis-py's own), or that
    answers but will not write for now (:mod:`kgrec.server_refusals`)."""
    try:
        yield
    except _QUEUE_ERRORS as exc:
        raise JobQueueUnavailable(f"the job queue did not answer: {exc}") from exc
    except redis.ResponseError as exc:
        if not cannot_write_now(exc):
            raise
        raise JobQueueUnavailable(f"the job queue cannot write now: {exc}") from exc
    except RuntimeError as exc:
        # Celery gives up reconnecting a sent task's result subscription with a RuntimeError whose
        # cause is the connection error, and asks for the app to be rebuilt: the next call does.
        if not isinstance(exc.__cause__, _QUEUE_ERRORS):
            raise
        with _lock:
            for key in [key for key, known in _clients.items() if known is client]:
                del _clients[key]
        raise JobQueueUnavailable(f"the job queue did not answer: {exc.__cause__}") from exc


def redis_urls(settings: Settings) -> tuple[str, str]:
    """(broker URL, result backend URL) for these settings.

    With REDIS_URL, the backend is database 2 of that server; in embedded mode
    they are databases 1 and 2 of the embedded graph server's redis-server.
    """
    if settings.redis_url:
        # only the database number changes: the query (rediss' ssl_cert_reqs, timeouts) is kept, but
        # a `db` in it would win over the path
        url = urlsplit(settings.redis_url)
        query = urlencode([(k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "db"])
        return settings.redis_url, urlunsplit(url._replace(path="/2", query=query))
    if not settings.embedded:
        # an embedded server that happens to run for the data directory is another deployment
        raise GraphUnavailable("NEO4J_URI is set but REDIS_URL is not: set REDIS_URL to the Celery broker")
    info = embedded_server(settings).running()
    if info is None:
        raise GraphUnavailable("the embedded graph server (also the Celery broker) is not running")
    return info.redis_url(1), info.redis_url(2)


WORKER_SOFT_SHUTDOWN_S = 10.0  # well within kgrec up's 25 s grace before SIGKILL
# In a worker's environment: SIGTERM starts Celery's cold shutdown (see WORKER_SOFT_SHUTDOWN_S)
# instead of the warm one, which waits for a training to finish however long it takes.
WORKER_SHUTDOWN_ENV = {"REMAP_SIGTERM": "SIGQUIT"}
# In the environment of the worker kgrec up starts: kgrec up's pid. Its death SIGTERMs the worker
# (PR_SET_PDEATHSIG), but that cold shutdown can hang for good on the broker that died with it (the
# embedded graph server): a heartbeat retrying its connection for ever, a blocking read of the pool's
# pipe. So a worker whose parent is gone SIGKILLs itself and its pool WORKER_ORPHAN_EXIT_S later
# (workers/celery_app.py): the soft shutdown's time, and a margin for cancelling tasks and the pool.
WORKER_PARENT_ENV = "KGREC_WORKER_PARENT_PID"
WORKER_ORPHAN_EXIT_S = WORKER_SOFT_SHUTDOWN_S + 5.0


def beat_entry(task: str, interval_s: float) -> dict[str, object]:
    """Beat's entry for ``task`` every ``interval_s``: a run not started within one interval expires,
    since the next tick queues another; without it, ticks queued behind a long training ran back to
    back for hours after it."""
    return {"task": task, "schedule": interval_s, "options": {"expires": interval_s}}


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery settings of workers and clients: late acks, so a task lost with its worker is redelivered."""
    broker, backend = redis_urls(settings)
    return {
        "broker_url": broker,
        "result_backend": backend,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "result_extended": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.job_visibility_timeout_s},
        # A cold shutdown (SIGQUIT, and SIGTERM under `kgrec up`/`kgrec worker`: WORKER_SHUTDOWN_ENV)
        # lets running tasks finish for this long, then cancels the rest; their unacknowledged
        # messages go back on the queue, and the next worker runs them again (a training rewrites
        # the version its job names). Without it they would wait out the visibility timeout.
        "worker_soft_shutdown_timeout": WORKER_SOFT_SHUTDOWN_S,
        # Training may go to a queue of its own, so that only GPU workers take it.
        "task_routes": {TRAIN: {"queue": settings.train_queue}},
        "beat_schedule": {
            "prune-faded-edges": beat_entry(PRUNE_GRAPH, settings.prune_interval_s),
            "fold-in-new-items": beat_entry(FOLD_IN_ITEMS, settings.fold_in_interval_s),
            "guard-snapshots": beat_entry(GUARD_SNAPSHOTS, SNAPSHOT_GUARD_INTERVAL_S),
            "relink-topics": beat_entry(RELINK_TOPICS, TOPIC_REPAIR_INTERVAL_S),
        },
    }


_ONE_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def client_config(settings: Settings) -> dict[str, object]:
    """:func:`celery_config` for a client (the API, the CLI), whose every wait on the broker and the
    result backend is bounded by ``serving_timeout_s``: without it, a stalled server (alive, not
    answering) held a request for 120 s (the backend's socket timeout) or for good (the broker's)."""
    config = celery_config(settings)
    bound = settings.serving_timeout_s
    transport = cast("dict[str, object]", config["broker_transport_options"])
    return {
        **config,
        "broker_connection_timeout": bound,
        "broker_transport_options": {**transport, "socket_timeout": bound, "socket_connect_timeout": bound},
        "redis_socket_timeout": bound,
        "redis_socket_connect_timeout": bound,
        # One more try on a dropped connection, not three (publishing) or twenty (the backend's
        # subscription to a sent task's result): each may wait the whole bound.
        "task_publish_retry_policy": _ONE_RETRY,
        "result_backend_transport_options": {"retry_policy": _ONE_RETRY},
    }


# A publish that asks kombu to retry without a policy retries for ever, reconnecting each time:
# Celery's control and inspect commands (kombu's pidbox: the ping of ``GET /v1/queue``) publish so.
# On a broker that stalled after the connection check, that held the request for good.
_ONE_TRY = {"max_retries": 0}


class _BoundedProducer(Producer):
    """kombu's producer, but a publish asked to retry with no policy is tried once (:data:`_ONE_TRY`);
    the policy a caller gives (``task_publish_retry_policy``) is kept."""

    def publish(self, body: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("retry") and not kwargs.get("retry_policy"):
            kwargs["retry_policy"] = _ONE_TRY
        return super().publish(body, *args, **kwargs)


class _ClientAMQP(AMQP):
    """Celery's messaging for a client: its producers, those of the control commands included, are
    :class:`_BoundedProducer` (a pool like Celery's own, over kombu's pool of broker connections)."""

    @property
    def producer_pool(self) -> pools.ProducerPool:
        if self._producer_pool is None:
            connections = pools.connections[self.app.connection_for_write()]
            self._producer_pool = pools.ProducerPool(
                connections, limit=self.app.pool.limit, Producer=_BoundedProducer
            )
        return self._producer_pool


def job_client(settings: Settings) -> Celery:
    """The process's Celery client for these settings' broker (built on first use, then reused)."""
    key = (settings.redis_url, Path(settings.data_dir), settings.train_queue, settings.serving_timeout_s)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = Celery("kgrec-client", set_as_current=False, amqp=_ClientAMQP)
            client.config_from_object(client_config(settings))
            _clients[key] = client
        return client


def record_queued(app: Celery, job_id: str) -> None:
    """Record ``job_id`` as a queued job in the result backend, before it is sent: Celery's own
    PENDING also means "never heard of it", and :func:`job_status` must tell the two apart. (Sent
    first, a fast worker's STARTED could be overwritten by this PENDING.)"""
    app.backend.store_result(job_id, None, states.PENDING)


class WorkerKeptDying(RuntimeError):
    """A task was started MAX_DELIVERIES times and never finished: its job fails instead of
    restarting again."""


def _deliveries_expiry_s(app: Celery) -> int:
    """How long a delivery count is kept: as long as results, and at least twice the broker's
    visibility timeout, the longest a training may run (a count gone mid-run would lift the limit)."""
    visibility = float(dict(app.conf.broker_transport_options or {}).get("visibility_timeout", 0))
    return int(max(app.backend.expires or 86_400, 2 * visibility))


def count_delivery(app: Celery, task_id: str) -> int:
    """Count one more start of the task ``task_id``; returns the count."""
    key = f"{DELIVERIES_KEY}{task_id}"
    pipe = app.backend.client.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, _deliveries_expiry_s(app))
    return int(pipe.execute()[0])


def uncount_delivery(app: Celery, task_id: str) -> None:
    """Take back the count of the current start of ``task_id``: its worker is shutting down and hands
    its message back, which is no death of the worker under it."""
    key = f"{DELIVERIES_KEY}{task_id}"
    pipe = app.backend.client.pipeline(transaction=True)
    pipe.decr(key)
    pipe.expire(key, _deliveries_expiry_s(app))
    pipe.execute()


def check_redelivery(app: Celery, task_id: str) -> None:
    """Count a start of ``task_id``; raise :class:`WorkerKeptDying` when the worker died under each of
    its last MAX_DELIVERIES starts (a start a shutdown handed back is uncounted:
    :func:`uncount_delivery`)."""
    if count_delivery(app, task_id) > MAX_DELIVERIES:
        raise WorkerKeptDying(f"the worker running it died {MAX_DELIVERIES} times (out of memory?)")


def merge_job_id(update_id: str) -> str:
    """The task id of the merge (the chord's callback) of the incremental update ``update_id``."""
    return f"{update_id}-merge"


# What :func:`scheduled_job_state` answers for a job that was never sent: no job was recorded under
# its id (Celery says PENDING), or one was recorded and its message is nowhere in the broker.
NEVER_QUEUED = "NEVER_QUEUED"
# A recorded job found nowhere in the broker is looked for once more this much later: a worker takes
# a message off its queue, then records it among the reserved (``unacked``) with its next command.
SECOND_LOOK_S = 1.0


def in_broker(app: Celery, job_id: str) -> bool:
    """Whether the broker holds the message of ``job_id``: waiting on one of the app's queues, or
    reserved by a worker (kombu's Redis transport keeps a reserved message in its ``unacked`` hash
    until it is acknowledged, which ``task_acks_late`` does once the task has ended). One
    transaction reads every list and the hash, so that a move kombu makes in a transaction of its
    own (a reserved message put back on its queue) cannot fall between two reads."""
    queues = {str(app.conf.task_default_queue)}
    queues.update(str(route["queue"]) for route in dict(app.conf.task_routes or {}).values())
    needle = job_id.encode()
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        pipe = channel.client.pipeline(transaction=True)
        for queue in sorted(queues):
            for priority in channel.priority_steps:  # a list per step, named as kombu names them
                pipe.lrange(f"{queue}{channel.sep}{priority}" if priority else queue, 0, -1)
        pipe.hvals(channel.unacked_key)
        found = pipe.execute()
    return any(needle in message for messages in found for message in messages)


def scheduled_job_state(
    app: Celery, job_id: str, second_look_s: float = SECOND_LOOK_S, *, look_in_broker: bool = True
) -> str:
    """The Celery state of the job the schedule queued under ``job_id``, or :data:`NEVER_QUEUED`
    when it was never sent: the result backend holds no record of it (Celery's bare PENDING would
    say "waiting" for a job that never was), or holds the PENDING record :func:`record_queued`
    writes before the send and the broker holds no message for it (:func:`in_broker`, looked at
    twice ``second_look_s`` apart): the sender died between the two, or the send failed. Without
    ``look_in_broker`` the broker is not asked and that record's PENDING is the answer. An
    incremental update's task ends once it has queued its partitions and merge, so its state is
    the merge's from then on: the update runs until the merge ends (a full training, or an update
    that queued no merge, is its task's state). The merge is not looked for in the broker: a
    chord's callback is sent only when its last partition ends, and the update's SUCCESS says the
    chord was sent."""
    meta = app.backend.get_task_meta(job_id)
    if meta.get("task_id") is None:
        return NEVER_QUEUED
    state = meta["status"]
    if state == states.PENDING and look_in_broker and not in_broker(app, job_id):
        time.sleep(second_look_s)
        state = app.backend.get_task_meta(job_id)["status"]
        if state == states.PENDING and look_in_broker and not in_broker(app, job_id):
            return NEVER_QUEUED
    if state != states.SUCCESS:
        return state
    merge = app.backend.get_task_meta(merge_job_id(job_id))
    return merge["status"] if merge.get("task_id") is not None else state


def enqueue(client: Celery, task: str, **kwargs: Any) -> str:
    """Queue ``task`` with ``kwargs`` as a job :func:`job_status` knows at once; returns its id."""
    job_id = str(uuid.uuid4())
    with answered(client):
        record_queued(client, job_id)
        client.send_task(task, kwargs=kwargs, task_id=job_id)
    return job_id


def job_status(client: Celery, job_id: str) -> dict[str, object]:
    """State (PENDING, STARTED, PROGRESS, SUCCESS, FAILURE), and stage, percent, result or error of a job.

    Raises :class:`~kgrec.errors.NotFound` for an id no job was queued under (or one whose record
    expired with the backend's results).
    """
    # One read of the job's record: its state, its info, and whether it was ever queued.
    with answered(client):
        meta = client.backend.get_task_meta(job_id)
    if meta.get("task_id") is None:  # every stored record has one; an unknown id reads as bare PENDING
        raise NotFound("job_id", job_id, f"no job {job_id!r}")
    state, info = meta["status"], meta.get("result")
    body: dict[str, Any] = {"id": job_id, "state": state}
    if state == "PROGRESS" and isinstance(info, dict):
        body.update(stage=info.get("stage"), percent=info.get("percent"))
    elif state == "SUCCESS":
        body.update(percent=100.0, result=info)
    elif state == "FAILURE":
        body["error"] = str(info)
    return body


class PlanWithdrawn(RuntimeError):
    """An incremental update's plan is gone: an erasure withdrew it, or it expired."""


def store_plan(app: Celery, update_id: str, plan: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Keep an update's plan in the result backend (for as long as results are); returns its key
    and the plan kept under it.

    A plan already kept for ``update_id`` stays, and is the one returned: a
    redelivered update (its worker lost after queuing the chord) must not replace the plan its
    first chord's partitions may already have encoded their rows for, since the merge maps their
    user vectors to the plan's seed users by position.
    """
    key = f"{PLAN_KEY}{update_id}"
    client = app.backend.client
    pipe = client.pipeline(transaction=True)
    pipe.set(key, json.dumps(plan), ex=int(app.backend.expires or 86_400), nx=True)
    pipe.sadd(PLANS, key)
    pipe.get(key)
    kept = pipe.execute()[-1]
    return key, json.loads(kept)


def load_plan(app: Celery, key: str) -> dict[str, Any]:
    """The plan :func:`store_plan` kept under ``key``; :class:`PlanWithdrawn` when it is gone."""
    text = app.backend.client.get(key)
    if text is None:
        raise PlanWithdrawn(f"the plan {key} is gone: an erasure withdrew it, or it expired")
    return json.loads(text)


def drop_plan(app: Celery, key: str) -> None:
    """Delete a plan once its update is published."""
    pipe = app.backend.client.pipeline(transaction=True)
    pipe.delete(key)
    pipe.srem(PLANS, key)
    pipe.execute()


def withdraw_plans(app: Celery, user_id: str) -> int:
    """Delete the plans that name ``user_id`` (their updates then fail and publish nothing; the
    next update plans again without the user); returns how many were withdrawn."""
    client = app.backend.client
    withdrawn = 0
    with answered(app):
        for key in client.smembers(PLANS):
            text = client.get(key)
            if text is None or user_id in json.loads(text)["users"]:
                withdrawn += text is not None
                drop_plan(app, key.decode() if isinstance(key, bytes) else key)
    return withdrawn


def sweep_after(app: Celery) -> str:
    """The id the next fold-in sweep starts after ("" from the first item)."""
    value = app.backend.client.get(SWEEP_AFTER)
    return value.decode() if isinstance(value, bytes) else (value or "")


def set_sweep_after(app: Celery, item_id: str) -> None:
    """Where the next fold-in sweep starts: after ``item_id``, or from the first item ("")."""
    app.backend.client.set(SWEEP_AFTER, item_id)
