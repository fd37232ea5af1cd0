"""The workers' Celery app: the shared job-queue configuration plus the task modules. No web app.

Broker and result backend come from REDIS_URL; in embedded mode they are
logical databases 1 and 2 of the embedded graph server's redis-server
(:mod:`kgrec.job_queue`).

    celery -A workers.worker:celery_app worker    (or: kgrec worker)

The worker ``kgrec up`` starts goes with it even when ``kgrec up`` is killed and its shutdown hangs
(:func:`exit_with_parent`).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from celery import Celery, signals

from kgrec.config import Settings
from kgrec.job_queue import RETRAIN_IF_DUE, WORKER_ORPHAN_EXIT_S, WORKER_PARENT_ENV, beat_entry, celery_config
from workers import context

PARENT_POLL_S = 0.5


def retrain_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """Beat's entry for the scheduled-retraining check (none when both triggers are off)."""
    if settings.retrain_interval_s <= 0 and settings.retrain_after_events <= 0:
        return {}
    return {"retrain-if-due": beat_entry(RETRAIN_IF_DUE, settings.retrain_check_interval_s)}


def make_celery(settings: Settings | None = None) -> Celery:
    """The worker's Celery app for ``settings`` (default: the environment); tasks use the same settings."""
    settings = settings or Settings.from_env()
    context.configure(settings)
    celery = Celery("kgrec-worker")
    config = celery_config(settings)
    config["beat_schedule"] = {**config["beat_schedule"], **retrain_schedule(settings)}  # type: ignore[dict-item]
    celery.config_from_object({**config, "include": ["workers.tasks"]})
    celery.set_default()
    return celery


def exit_with_parent(parent_pid: int, grace_s: float, poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """Watch, from a daemon thread, for this process's parent ``parent_pid`` to die; ``grace_s`` after
    that, SIGKILL this process, and its process group when it leads one (a worker and its pool).

    The SIGTERM of the parent's death (PR_SET_PDEATHSIG) starts the worker's cold shutdown, which ends
    the process well before ``grace_s`` unless it hangs; nothing here depends on what it hangs in.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        time.sleep(grace_s)
        # os.write, not logging or print: the stuck thread may hold their locks.
        os.write(
            2,
            f"kgrec worker: its parent (pid {parent_pid}) is gone and it did not stop within "
            f"{grace_s:.0f}s: killing it\n".encode(),
        )
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="kgrec-exit-with-parent", daemon=True)
    thread.start()
    return thread


@signals.worker_init.connect
def _exit_with_kgrec_up(**_: object) -> None:
    """In the worker kgrec up starts (:data:`~kgrec.job_queue.WORKER_PARENT_ENV` set): go with kgrec up."""
    parent = os.environ.get(WORKER_PARENT_ENV)
    if not parent:
        return
    if not parent.isdigit():
        raise ValueError(f"{WORKER_PARENT_ENV}={parent!r} is not a process id")
    exit_with_parent(int(parent), WORKER_ORPHAN_EXIT_S)
