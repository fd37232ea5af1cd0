"""Model versions as the operator sees them: status, metrics, gate decisions; and promotion.

A version's status is derived from what the graph records, never stored twice:

- ``writing``: its write-back has not finished (or crashed; garbage collection removes it);
- ``active``: the one version serving;
- ``retired``: was active once, no longer is (a rollback target);
- ``candidate``: written, never active (the promotion gate kept it, or it awaits promotion).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from graph_schema.statements.models import ACTIVATE_VERSION, MODEL_VERSIONS
from graph_schema.statements.topics import ABOUT_WRITTEN
from kgrec.errors import NotFound
from kgrec.gateway import GraphGateway
from kgrec.model_store import models_dir
from kgrec.topic_items import AboutWrite, link_topic_items, topic_items_path


class VersionNotReady(Exception):
    """The version cannot be activated: its write-back has not finished, or its artifact is missing."""

    def __init__(self, version: str, why: str = "is still being written") -> None:
        self.detail = f"model version {version} {why}; it cannot be promoted"
        super().__init__(self.detail)


def status_of(row: dict[str, Any]) -> str:
    """``writing``, ``active``, ``retired`` or ``candidate`` (see the module docstring)."""
    if row["status"] != "ready":
        return "writing"
    if row["active"]:
        return "active"
    return "retired" if row["activated_at"] is not None else "candidate"


def _json(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None


def _artifact_bytes(folder: Path, artifact: str | None) -> int | None:
    # The API may run where the artifacts are not (a separate host on Neo4j): then the size is unknown.
    if not artifact:
        return None
    path = folder / artifact
    return path.stat().st_size if path.is_file() else None


def version_view(row: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One version as ``GET /v1/models`` shows it."""
    gate = None
    if row["gate_decision"] is not None:
        gate = {
            "decision": row["gate_decision"],
            "reason": row["gate_reason"],
            "scores": _json(row["gate_metrics"]),
            "decided_at": row["gate_at"],
        }
    return {
        "version": row["id"],
        "status": status_of(row),
        "created_at": row["created_at"],
        "activated_at": row["activated_at"],
        "metrics": _json(row["metrics"]) or {},
        "counts": _json(row["counts"]) or {},
        "gate": gate,
        "parent": row["parent"],
        "data_until": row["data_until"],
        "artifact": row["artifact"],
        "artifact_bytes": _artifact_bytes(folder, row["artifact"]),
    }


def list_versions(gateway: GraphGateway, data_dir: Path) -> list[dict[str, Any]]:
    """Every model version, newest first."""
    folder = models_dir(data_dir)
    return [version_view(row, folder) for row in gateway.read(MODEL_VERSIONS)]


def get_version(gateway: GraphGateway, data_dir: Path, version: str) -> dict[str, Any]:
    """One version's view; :class:`~kgrec.errors.NotFound` when there is none."""
    for view in list_versions(gateway, data_dir):
        if view["version"] == version:
            return view
    raise NotFound("version", version, f"no model version {version!r}")


def root_of(row: dict[str, Any]) -> str | None:
    """The fully trained version an incremental version (a MODEL_VERSIONS row) descends from."""
    lineage = (_json(row.get("parameters")) or {}).get("incremental")
    root = lineage.get("root") if isinstance(lineage, dict) else None
    return root if isinstance(root, str) else None


def lineage(rows: dict[str, dict[str, Any]], version: str) -> list[str]:
    """``version``, its parent, the parent's parent… as far as the rows know them, then its root
    (recorded on the version, so it is found when versions between were collected)."""
    chain = [version]
    while (parent := rows.get(chain[-1], {}).get("parent")) and parent not in chain:
        chain.append(parent)
    root = root_of(rows.get(version, {}))
    return chain if root is None or root in chain else [*chain, root]


def active_lineage(gateway: GraphGateway, data_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The active version's view and its :func:`lineage` (its id first, then the versions it was
    made from), from one read of the versions; ``(None, [])`` when none is active."""
    rows = {row["id"]: row for row in gateway.read(MODEL_VERSIONS)}
    # The `active` flag is what serving reads (ACTIVE_VERSION). status_of() says "active" for the
    # same row: every switch requires `ready`, and a version once activated is never rewritten.
    active = next((row for row in rows.values() if row["active"]), None)
    if active is None:
        return None, []
    return version_view(active, models_dir(data_dir)), lineage(rows, active["id"])


def promote(gateway: GraphGateway, data_dir: Path, version: str, now_ms: int | None = None) -> dict[str, Any]:
    """Make ``version`` the active one in one statement; returns its view.

    Every serving process checks the active version each second
    (:class:`~kgrec.model_store.ActiveModel`), so all serve it within about a second (the one
    that promotes through :meth:`kgrec.serving.Serving.promote`, from its next request). Its
    topics (names, ABOUT edges) are written to the graph just before the switch; a process that
    dies between the two leaves them to :func:`relink_active_topics`.
    """
    folder = models_dir(data_dir)
    rows = {row["id"]: row for row in gateway.read(MODEL_VERSIONS)}
    views = {name: version_view(row, folder) for name, row in rows.items()}
    if version not in views:
        raise NotFound("version", version, f"no model version {version!r}")
    if views[version]["status"] == "writing":
        raise VersionNotReady(version)
    if views[version]["artifact"] and views[version]["artifact_bytes"] is None:
        # serving would fail on every request: the file is gone (collected) or on another host
        raise VersionNotReady(
            version, f"has no artifact file {views[version]['artifact']} in the models folder"
        )
    link_topic_items(gateway, folder, lineage(rows, version))
    now = int(time.time() * 1000) if now_ms is None else now_ms
    done = gateway.write(ACTIVATE_VERSION, {"id": version, "now": now})
    if not done.rows or done.rows[0]["activated"] != 1:
        # deleted or rewritten between the read and the switch: the active version's topics back
        # (as far as its file holds them)
        _, chain = active_lineage(gateway, data_dir)
        if chain:
            link_topic_items(gateway, folder, chain)
        raise VersionNotReady(version)
    return get_version(gateway, data_dir, version)


def relink_active_topics(gateway: GraphGateway, data_dir: Path, now_ms: int | None = None) -> str | None:
    """Write the active version's topics back when the graph's ABOUT edges are not known to be
    those of its topic-items file (no version is marked ``about_from`` that file); returns the
    version relinked, or None when nothing was to do or it is not the time.

    A promotion writes the candidate's topics just before the switch; a process that died between
    the two left the old version active over the candidate's topics (its write forgot every mark).
    Beat runs this every :data:`kgrec.job_queue.TOPIC_REPAIR_INTERVAL_S`: two reads when the graph
    is right. It writes only as the one writer of ABOUT edges (:meth:`AboutWrite.claim`): none in
    flight, none begun or ended within :data:`kgrec.topic_items.ABOUT_SETTLE_MS` (a promotion's
    switch follows its write at once), so a promotion under way is left to finish.
    """
    folder = models_dir(data_dir)
    _, chain = active_lineage(gateway, data_dir)
    if not chain:
        return None
    file = next((v for v in chain if topic_items_path(folder, v).is_file()), None)
    if file is None or gateway.read(ABOUT_WRITTEN, {"file": file})[0]["marked"] > 0:
        return None
    writer = AboutWrite.claim(gateway, now_ms)
    if writer is None:
        return None
    link_topic_items(gateway, folder, chain, writer=writer)
    return chain[0]
