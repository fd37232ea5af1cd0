"""Is the job queue working: does the broker answer, and which Celery workers answer a ping."""

from __future__ import annotations

from typing import Any

import redis
from kombu.exceptions import OperationalError

from kgrec.config import Settings
from kgrec.job_queue import job_client

PING_TIMEOUT_S = 0.5  # how long workers have to answer: the reply waits this long


def queue_status(settings: Settings) -> dict[str, Any]:
    """``{broker: bool, workers: [names]}``: the broker reachable, and the workers that answered in time."""
    client = job_client(settings)
    try:
        with client.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        replies = client.control.inspect(timeout=PING_TIMEOUT_S).ping() or {}
    except (OperationalError, OSError, redis.RedisError):  # the ping's publish, too: a broker that stalls
        return {"broker": False, "workers": []}
    return {"broker": True, "workers": sorted(replies)}
