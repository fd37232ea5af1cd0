"""Received by a pull, in Cypher: the one rule the training pull and an erasure share.

A full training counts the INTERACTED edges the graph had received by its pull (the version's
``data_until``): by the edge's ``received_at``, its first event's time (``first_ts``) for an edge
written before ``received_at`` was stamped, whatever times its events carry. The pull reads by
this rule (``INTERACTIONS_RECEIVED_BY``) and an erasure subtracts by it what such a version counted
(``ERASE_USER``); spelled twice, the two could drift apart and an erasure leave a count in.
"""

from __future__ import annotations


def received_by(edge: str, pulled_at: str) -> str:
    """The Cypher condition that ``edge`` was received by ``pulled_at`` (epoch ms).

    ``edge`` is an INTERACTED edge, or a map holding its ``received_at`` and ``first_ts``."""
    return f"coalesce({edge}.received_at, {edge}.first_ts, 0) <= {pulled_at}"
