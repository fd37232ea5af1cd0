"""A task for the workers of tests only (``celery worker --include tests.dying_tasks``): it kills the
pool process running it, as the kernel's OOM killer kills a training."""

from __future__ import annotations

import os
import signal

from celery import shared_task

from workers.tasks import BoundedRedelivery

KILL_ITSELF = "tests.kill_itself"


@shared_task(name=KILL_ITSELF, acks_late=True, reject_on_worker_lost=True, base=BoundedRedelivery)
def kill_itself() -> None:
    """SIGKILL the process running this task (a pool child: the worker starts another)."""
    os.kill(os.getpid(), signal.SIGKILL)
