"""The workers' Celery app: the shared job-queue configuration plus the task modules. No web app.

Broker and result backend come from REDIS_URL; in embedded mode they are
logical databases 1 and 2 of the embedded graph server's redis-server
(:mod:`kgrec.job_queue`).

    celery -A workers.worker:celery_app worker    (or: kgrec worker)
"""

from __future__ import annotations

from celery import Celery

from kgrec.config import Settings
from kgrec.job_queue import RETRAIN_IF_DUE, celery_config
from workers import context


def retrain_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """Beat's entry for the scheduled-retraining check (none when both triggers are off)."""
    if settings.retrain_interval_s <= 0 and settings.retrain_after_events <= 0:
        return {}
    return {
        "retrain-if-due": {
            "task": RETRAIN_IF_DUE,
            "schedule": settings.retrain_check_interval_s,
        }
    }


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
