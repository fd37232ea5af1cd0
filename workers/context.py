"""What a worker process works with: its settings and its own graph gateway.

The worker's Celery app (:mod:`workers.celery_app`) sets the settings once; the
gateway opens on a task's first use, in the process that runs the task (the
prefork pool forks children after start-up, and each opens its own).
"""

from __future__ import annotations

import threading

from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.runtime import ProcessGateway

_lock = threading.Lock()
_gateway: ProcessGateway | None = None


def configure(settings: Settings) -> None:
    """Use ``settings`` (and a gateway opened from them) for this process's tasks."""
    global _gateway
    with _lock:
        _gateway = ProcessGateway(settings)


def _process_gateway() -> ProcessGateway:
    global _gateway
    with _lock:
        if _gateway is None:
            _gateway = ProcessGateway(Settings.from_env())
        return _gateway


def settings() -> Settings:
    """The worker's settings (from the environment unless configured)."""
    return _process_gateway().settings


def graph() -> GraphGateway:
    """The worker process's graph gateway, opened on first use."""
    return _process_gateway().get()
