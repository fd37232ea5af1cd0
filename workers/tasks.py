"""Celery tasks. Each is idempotent, so a redelivery after a worker crash is harmless."""

from __future__ import annotations

from typing import Any

from celery import Task, chord, current_app, shared_task, signals
from celery.worker import state as worker_state

from kgrec import job_queue
from kgrec.maintenance import prune
from kgrec.model_versions import relink_active_topics
from kgrec.retrain_schedule import check_and_claim, next_update
from workers.context import graph, settings
from workers.training.config import TrainConfig, for_variant
from workers.training.incremental import PartitionRows, UpdatePlan, finish_update, plan_update, run_partition
from workers.training.item_fold_in import embed_new_items, sweep_page
from workers.training.job import start_training, version_name

FOLD_IN_SWEEP_LIMIT = 1_000


class BoundedRedelivery(Task):  # type: ignore[misc]
    """A task redelivered when its worker dies (``reject_on_worker_lost``), at most
    :data:`~kgrec.job_queue.MAX_DELIVERIES` times: Celery requeues such a message with no limit
    (``retry_on_worker_lost`` would bound it, but as a new message with a RETRY state in between and
    a reason naming only the signal). Past the limit the job fails with a one-line reason, and its
    message is acknowledged."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.request.called_directly:
            job_queue.check_redelivery(self.app, self.request.id)
        return super().__call__(*args, **kwargs)


# The bounded tasks this worker received (its main process): id -> Celery's request. Read at its
# shutdown, pruned of the acknowledged ones at each receipt.
_bounded_requests: dict[str, Any] = {}


@signals.task_received.connect
def _note_bounded_request(request: Any = None, **_: object) -> None:
    """Keep the requests of bounded tasks for :func:`_uncount_handed_back`: by the time the worker's
    shutdown signal comes, the cold shutdown has cancelled them and Celery's own state forgot them."""
    for task_id in [task_id for task_id, kept in _bounded_requests.items() if kept.acknowledged]:
        del _bounded_requests[task_id]
    if request is not None and isinstance(request.task, BoundedRedelivery):
        _bounded_requests[request.id] = request


@signals.worker_shutting_down.connect
def _uncount_handed_back(**_: object) -> None:
    """Take back the count of each bounded task this worker started and hands back unacknowledged
    (a cold shutdown cancels the running tasks after the soft shutdown, and their messages go back on
    the queue): otherwise every stop of `kgrec up` during a long training counted as a death, and its
    start past MAX_DELIVERIES failed it as out of memory. A start whose worker ended without a
    shutdown (its pool child or the whole worker killed) stays counted. Uncounting here, where the
    worker knows it hands the message back, keeps a single counter; a mark set at each start and
    cleared at each end could not tell a death from a hand-back. A task that still finishes later in
    the shutdown is done, its count unused."""
    for task_id, request in list(_bounded_requests.items()):
        started = request.time_start is not None  # accepted by a pool process: it counted the start
        if started and not request.acknowledged and task_id not in worker_state.successful_requests:
            job_queue.uncount_delivery(request.task.app, task_id)
    _bounded_requests.clear()


@shared_task(name=job_queue.PRUNE_GRAPH, acks_late=True)
def prune_graph() -> dict[str, int]:
    """Prune faded interest edges and expired event ids (scheduled by beat)."""
    result = prune(graph(), settings())
    return {"edges": result.edges, "events": result.events}


@shared_task(name=job_queue.GUARD_SNAPSHOTS, acks_late=True)
def guard_snapshots() -> dict[str, int]:
    """Hold off the graph's snapshots while it could not load one back (scheduled by beat)."""
    return graph().guard_snapshots()


@shared_task(name=job_queue.RELINK_TOPICS, acks_late=True)
def relink_topics() -> dict[str, str | None]:
    """Write the active version's topics back when a promotion died before its switch (scheduled by
    beat; :func:`kgrec.model_versions.relink_active_topics`)."""
    return {"relinked": relink_active_topics(graph(), settings().data_dir)}


@shared_task(name=job_queue.FOLD_IN_ITEMS, acks_late=True, reject_on_worker_lost=True, base=BoundedRedelivery)
def fold_in_items(item_ids: list[str] | None = None, limit: int = FOLD_IN_SWEEP_LIMIT) -> dict[str, Any]:
    """Give items created after training an embedding under the active version (idempotent).

    The API enqueues this with the new ids of an event batch; beat runs it with
    no ids as a sweep, which catches whatever an enqueue missed. A sweep takes
    ``limit`` items in id order after where the last one stopped, and starts again
    from the first after a short page, so items it cannot fold in never hold back the rest.
    """
    gateway = graph()
    if item_ids is None:
        after = job_queue.sweep_after(current_app)
        item_ids = sweep_page(gateway, after, limit)
        job_queue.set_sweep_after(current_app, item_ids[-1] if len(item_ids) == limit else "")
    return embed_new_items(gateway, settings(), item_ids)


@shared_task(
    bind=True, name=job_queue.TRAIN, acks_late=True, reject_on_worker_lost=True, base=BoundedRedelivery
)
def train(
    self: Task,
    epochs: int = TrainConfig.epochs,
    seed: int = 7,
    device: str = "auto",
    variant: str = "full",
    use_knowledge: bool = True,  # jobs queued before variants existed: False meant interactions only
    gate: bool = False,
) -> dict[str, Any]:
    """Train and activate a new model version; progress is readable at GET /v1/jobs/{id}.

    The version is named after the task id, so a redelivered task rewrites the
    same version rather than adding one. With ``gate`` it is activated only if the
    promotion gate lets it through (the summary's ``gate`` says why).
    """

    def progress(stage: str, fraction: float) -> None:
        self.update_state(state="PROGRESS", meta={"stage": stage, "percent": round(100 * fraction, 1)})

    return start_training(
        graph(),
        settings(),
        for_variant(TrainConfig(epochs=epochs, seed=seed), variant if use_knowledge else "interactions"),
        device=device,
        job_id=self.request.id,
        progress=progress,
        gate=gate,
    )


@shared_task(name=job_queue.RETRAIN_IF_DUE, acks_late=True)
def retrain_if_due() -> dict[str, object]:
    """Queue a gated retraining when the schedule or the new-event count says so (beat runs this)."""

    def enqueue(job_id: str) -> None:
        # between full trainings, an incremental update while the drift is below the threshold
        # (read first: between the record and the send, only the broker can fail)
        kind = next_update(graph(), settings())
        job_queue.record_queued(current_app, job_id)  # GET /v1/jobs/{id} knows it while it waits
        if kind == "incremental":
            incremental_update.apply_async(task_id=job_id)
        else:
            train.apply_async(kwargs={"gate": True}, task_id=job_id)

    def job_state(job_id: str, look_in_broker: bool) -> str:
        return job_queue.scheduled_job_state(current_app, job_id, look_in_broker=look_in_broker)

    return check_and_claim(graph(), settings(), job_state, enqueue)


@shared_task(
    bind=True,
    name=job_queue.INCREMENTAL_UPDATE,
    acks_late=True,
    reject_on_worker_lost=True,
    base=BoundedRedelivery,
)
def incremental_update(self: Task, partitions: int | None = None, since: int | None = None) -> dict[str, Any]:
    """Plan an incremental update of the active version and queue its partitions as a chord.

    The chord's callback (:func:`incremental_merge`, task id ``<this id>-merge``) publishes the
    child version ``job-<this id>`` once every partition has finished; if one fails, nothing is
    written and the active version stays. With one worker process the partitions run one after
    another, with several in parallel.
    """
    current = settings()
    plan = plan_update(graph(), partitions or current.incremental_partitions, since)
    if plan is None:
        return {"version": None, "reason": "no active version, or nothing touched since it"}
    key, kept = job_queue.store_plan(current_app, self.request.id, plan.to_json())
    plan = UpdatePlan.from_json(kept)  # on a redelivery, the plan its first delivery's chord runs on
    merge_id = job_queue.merge_job_id(self.request.id)
    if current_app.backend.get_task_meta(merge_id).get("task_id") is None:  # not on a redelivery
        job_queue.record_queued(current_app, merge_id)  # GET /v1/jobs/{id} knows it while the parts run
    header = [incremental_partition.s(key, part) for part in range(plan.partitions)]
    chord(header)(incremental_merge.s(key, version_name(self.request.id)).set(task_id=merge_id))
    return {
        "version": version_name(self.request.id),
        "parent": plan.parent,
        "merge_job": merge_id,
        "partitions": plan.partitions,
        "items": len(plan.items),
        "users": len(plan.users),
        "drift": plan.lineage["drift"],
    }


def _plan(plan: str | dict[str, Any]) -> UpdatePlan:
    """The plan a partition or merge task names (a dict: a task queued by a kgrec before plan keys)."""
    return UpdatePlan.from_json(plan if isinstance(plan, dict) else job_queue.load_plan(current_app, plan))


@shared_task(
    name=job_queue.INCREMENTAL_PARTITION, acks_late=True, reject_on_worker_lost=True, base=BoundedRedelivery
)
def incremental_partition(plan: str | dict[str, Any], part: int) -> str:
    """Pull one partition's 2-hop subgraph and refresh its seeds' rows (returned encoded, without
    the users' ids, which the merge takes from the plan; writes nothing)."""
    update = _plan(plan)
    return run_partition(graph(), settings(), update, part).encode(update.seeds(part)[1])


@shared_task(
    name=job_queue.INCREMENTAL_MERGE, acks_late=True, reject_on_worker_lost=True, base=BoundedRedelivery
)
def incremental_merge(parts: list[str], plan: str | dict[str, Any], version: str) -> dict[str, Any]:
    """The chord's callback: merge the partitions' rows, write the child version and switch to it;
    then delete the plan."""
    update = _plan(plan)
    rows = [PartitionRows.decode(text, update.seeds(part)[1]) for part, text in enumerate(parts)]
    result = finish_update(graph(), settings(), update, rows, version)
    if isinstance(plan, str):
        job_queue.drop_plan(current_app, plan)
    return result
