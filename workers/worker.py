"""Entry point for ``celery -A workers.worker`` (used by ``kgrec worker`` and ``kgrec beat``)."""

from workers.celery_app import make_celery

celery_app = make_celery()
