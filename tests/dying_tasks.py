"""Tasks for the workers of tests only (``celery worker --include tests.dying_tasks``): one kills the
pool process running it, as the kernel's OOM killer kills a training; one runs long, as a training
does when its worker is stopped."""

from __future__ import annotations

import os
import signal
import time

from celery import shared_task

from workers.tasks import BoundedRedelivery

KILL_ITSELF = "tests.kill_itself"
RUN_LONG = "tests.run_long"


@shared_task(name=KILL_ITSELF, acks_late=True, reject_on_worker_lost=True, base=BoundedRedelivery)
def kill_itself() -> None:
    """SIGKILL the process running this task (a pool child: the worker starts another)."""
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(name=RUN_LONG, acks_late=True, reject_on_worker_lost=True, base=BoundedRedelivery)
def run_long(seconds: float = 600.0) -> None:
    """Run for ``seconds`` (past the worker's soft shutdown: a stop hands it back)."""
    time.sleep(seconds)
