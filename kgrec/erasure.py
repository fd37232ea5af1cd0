"""What an erasure does after deleting: take the deleted data out of the servers' append-only files.

Redis (the graph server, the impressions server, the broker's Redis under Neo4j) appends every
write to its AOF, so a deleted user's writes stay in the file until it is next rewritten from
the data as it is. The erasure therefore rewrites it and waits (README, "Operations: faults,
privacy and security"). The answer says, per server, what happened (:data:`LOG_STATUSES`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import redis

from kgrec.embedded import AofRewriteRunning, EmbeddedServerError, rewrite_aof_now

log = logging.getLogger(__name__)

# How long an erasure waits for its rewrites (a rewrite of Amazon Beauty's graph takes about 0.4 s).
REWRITE_WAIT_S = 30.0

REWRITTEN = "rewritten"  # a rewrite started after the erasure is on disk; the old files are deleted
RUNNING = "running"  # started after the erasure, not finished within the wait: the server finishes it
HELD = "held"  # not rewritten: the snapshot guard holds rewrites off (a label at an unloadable count)
NO_AOF = "no_aof"  # the server keeps no append-only file (Neo4j, or a Redis without appendonly)
REFUSED = "refused"  # the server refuses BGREWRITEAOF (a managed Redis that renamed the command)
FAILED = "failed"  # the rewrite failed (see the server's log); the deleted data stays in the log
UNAVAILABLE = "unavailable"  # the server failed or did not answer; the deleted data stays in the log
LOG_STATUSES = (REWRITTEN, RUNNING, HELD, NO_AOF, REFUSED, FAILED, UNAVAILABLE)
LOG_DONE = (REWRITTEN, RUNNING, NO_AOF)  # no rewrite is owed after these


def user_hash(user_id: str) -> str:
    """How an erasure names a user where it leaves a trace: the graph's tombstone
    (``(:Erasure {id})``) and the impression store (its stream script's ``redis.sha1hex``)."""
    return hashlib.sha1(user_id.encode()).hexdigest()


# An erasure's time (its tombstone's erased_at) is taken when the request starts, before its
# impression step, and hosts' clocks differ a little; data read up to this long after it may
# still predate the deletion.
ERASURE_TIME_MARGIN_MS = 300_000


def tombstone_margin_ms(max_skew_ms: float) -> int:
    """How long after an erasure an event's ``ts`` may still predate it: a client's clock may run up
    to ``max_skew_ms`` (``KGREC_MAX_CLOCK_SKEW_S``) ahead of the server's, and the erasure's own
    time is taken with the same margin as :func:`read_before`'s, whichever is longer."""
    return max(ERASURE_TIME_MARGIN_MS, math.ceil(max_skew_ms))


def erased_after(ts_ms: int, erased_at_ms: float | None, margin_ms: int) -> bool:
    """Whether an event dated ``ts_ms`` belongs to the history an erasure at ``erased_at_ms``
    deleted (dated at or before it, or within ``margin_ms`` after it: :func:`tombstone_margin_ms`)."""
    return erased_at_ms is not None and ts_ms <= erased_at_ms + margin_ms


def read_before(read_at_ms: int) -> int:
    """The ``$since`` of a write of vectors computed from data read at ``read_at_ms`` (epoch ms):
    a user erased at or after it gets none (``WRITE_EMBEDDINGS``); a few too many cost a user
    their vector until the next training or update, never an erased history its way back."""
    return read_at_ms - ERASURE_TIME_MARGIN_MS


def rewrite_log(client: redis.Redis, server_log: Path | None = None, wait_s: float = REWRITE_WAIT_S) -> str:
    """Rewrite ``client``'s server's AOF from its data as it is now; one of :data:`LOG_STATUSES`.

    Concurrent erasures share one rewrite (:func:`kgrec.embedded.rewrite_aof_now`). A connection
    failure or a timeout (each of ``client``'s calls; the wait for the rewrite is ``wait_s``)
    propagates (the gateway and the impression store raise it as GraphUnavailable); the erasure,
    its deletion done, then answers that server's log ``unavailable`` in its 200
    (:func:`kgrec.serving._log_rewritten`), and the log may keep the deleted data until the
    server's next rewrite (README, "Operations: faults", Privacy).
    """
    try:
        return REWRITTEN if rewrite_aof_now(client, wait_s, server_log) else NO_AOF
    except AofRewriteRunning:
        return RUNNING
    except redis.ResponseError as exc:
        if "unknown command" in str(exc) or isinstance(exc, redis.exceptions.NoPermissionError):
            return REFUSED
        log.warning("erasure: AOF rewrite failed: %s", exc)
        return FAILED
    except EmbeddedServerError as exc:
        log.warning("erasure: %s", exc)
        return FAILED
