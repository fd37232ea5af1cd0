"""The workers' Celery app: the shared job-queue configuration plus the task modules. No web app.

Broker and result backend come from REDIS_URL; in embedded mode they are
logical databases 1 and 2 of the embedded graph server's redis-server
(:mod:`kgrec.job_queue`).

    celery -A workers.worker:celery_app worker    (or: kgrec worker)
"""

from __future__ import annotations

from celery import Celery

from kgrec.config import Settings
from kgrec.job_queue import celery_config
from workers import context


def make_celery(settings: Settings | None = None) -> Celery:
    """The worker's Celery app for ``settings`` (default: the environment); tasks use the same settings."""
    settings = settings or Settings.from_env()
    context.configure(settings)
    celery = Celery("kgrec-worker")
    celery.config_from_object({**celery_config(settings), "include": ["workers.tasks"]})
    celery.set_default()
    return celery
