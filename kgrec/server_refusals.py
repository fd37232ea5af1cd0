"""Refusals by a Redis-protocol server (the embedded graph server, the impression store) that pass
with time or an operator's fix, not with another request: its memory limit (OOM), a disk it
cannot write (MISCONF), a read-only replica (READONLY, NOREPLICAS). Callers answer them as the
server being unavailable (503 with Retry-After, nothing written) instead of as a failed query."""

from __future__ import annotations

import redis

# redis-py raises these classes with the error code cut from the text
_CLASSES = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
_CODES = ("MISCONF", "NOREPLICAS")  # left at the start of a plain ResponseError's text


_IN_PIPELINE = " of pipeline caused error: "  # redis-py's prefix to a pipelined command's error


def cannot_write_now(exc: redis.ResponseError) -> bool:
    """Whether ``exc`` is a refusal that passes (retry later), not one of the command itself."""
    text = str(exc)
    _, pipelined, error = text.partition(_IN_PIPELINE)
    return isinstance(exc, _CLASSES) or (error if pipelined else text).startswith(_CODES)
