"""The Celery app, built with Flask's ``celery_init_app`` pattern.

Broker and result backend come from REDIS_URL; in embedded mode they are
logical databases 1 and 2 of the embedded graph server's redis-server.

    celery -A workers.celery_app:celery_app worker    (or: kgrec worker)
"""

from __future__ import annotations

from celery import Celery, Task
from flask import Flask

from app import create_app
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer


def redis_urls(settings: Settings) -> tuple[str, str]:
    """(broker URL, result backend URL) for these settings."""
    if settings.redis_url:
        base = (
            settings.redis_url.rsplit("/", 1)[0] if settings.redis_url.count("/") > 2 else settings.redis_url
        )
        return settings.redis_url, f"{base}/2"
    info = EmbeddedServer(settings.data_dir, settings.aof_fsync).running()
    if info is None:
        raise RuntimeError("the embedded graph server (also the Celery broker) is not running")
    return info.redis_url(1), info.redis_url(2)


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery settings: late acks so a task lost with its worker is redelivered."""
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
        "broker_transport_options": {"visibility_timeout": 3600},
        "include": ["workers.tasks"],
        "beat_schedule": {
            "prune-faded-edges": {"task": "workers.tasks.prune_graph", "schedule": settings.prune_interval_s},
            "fold-in-new-items": {
                "task": "workers.tasks.fold_in_items",
                "schedule": settings.fold_in_interval_s,
            },
        },
    }


def celery_init_app(app: Flask) -> Celery:
    """Attach a Celery app whose tasks run inside the Flask app context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(app.config["CELERY"])
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def make_celery(settings: Settings | None = None) -> Celery:
    """The worker's Celery app, bound to a Flask app built from the environment."""
    settings = settings or Settings.from_env()
    flask_app = create_app(settings)
    flask_app.config["CELERY"] = celery_config(settings)
    return celery_init_app(flask_app)
