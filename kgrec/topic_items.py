"""A model version's topic items on disk: every item's topic-text embedding and its topics.

Training writes ``<models>/<version>.topics.npz`` with the version's topics
(:func:`workers.training.topics.write_topics`; staged and moved into place under the claim lock,
only while its write-back owns the version: :func:`workers.training.publish.save_topic_items`),
before the version can be activated, and never changes it; serving loads it once per version, and only when
a user without history but with language interests asks
(:mod:`kgrec.search_cold_start`), and its memberships alone (no vectors) for the exploration
arms' topics (:class:`kgrec.exploration.TopicMembers`). It holds, in the artifact's item order:

- ``vectors``: the unit all-MiniLM-L6-v2 embedding of each item's topic text (float16 on
  disk; a zero row: the item had no text);
- ``item_topics`` / ``item_scores``: the topics each item is ``ABOUT`` (indices into
  ``topic_ids``, nearest first, -1 pads) and their cosines, as the graph's ABOUT edges.

Items folded in after training are not in it (they are ranked after the file's items). An
incremental version (``workers/training/incremental.py``) keeps its root's items and topics, so
it reads its root's file (:meth:`VersionTopicItems.for_model`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graph_schema.statements.topics import (
    ABOUT_WRITTEN,
    BEGIN_ABOUT_WRITE,
    CLAIM_ABOUT_REPAIR,
    DELETE_STALE_ABOUT,
    DELETE_STALE_ITEM_ABOUT,
    FORGET_ABOUT_WRITTEN,
    MARK_ABOUT_WRITTEN,
    NAME_VERSION_TOPICS,
    UNLINKED_FOLDED_ITEMS,
    VERSION_TOPICS,
    WRITE_ABOUT,
)
from kgrec.artifact_io import write_npz_atomically
from kgrec.gateway import GraphGateway
from kgrec.limits import MAX_SIDE_VERSIONS
from kgrec.single_flight import RecentlyUsed

SUFFIX = ".topics.npz"
ABOUT_MIN_COSINE = 0.3
ABOUT_TOPICS = 3  # topics an item is ABOUT at most (its nearest, and the next ones above the bar)
# the active version and the experiment variants' (an incremental version reads its root's file)
CACHED_VERSIONS = 1 + MAX_SIDE_VERSIONS
# ABOUT rows per write: 10,000 was no faster (bench/promotion_topics.py), and a smaller write holds
# the graph's write lock, which serving's reads wait behind, for less time
ABOUT_BATCH = 2_000
# A writer of ABOUT edges still counted as running after this long has died (a full write of 1M
# items takes about 90 s): the next writer runs alone again.
ABOUT_WRITE_LEASE_MS = 1_800_000
# A promotion switches the active version right after its ABOUT write ends: a write that ended this
# long ago with its version still inactive was cut off before the switch (a crash), and a repair
# (kgrec.model_versions.relink_active_topics) may write the active version's topics back.
ABOUT_SETTLE_MS = 60_000


def topic_items_path(folder: Path, version: str) -> Path:
    """Where ``version``'s topic items live in the models folder."""
    return Path(folder) / f"{version}{SUFFIX}"


@dataclass(frozen=True)
class TopicItems:
    """One version's item topic-text embeddings and ABOUT memberships."""

    version: str
    item_ids: list[str]
    vectors: np.ndarray  # (n, 384) unit rows, zero: no text
    topic_ids: list[str]
    item_topics: np.ndarray  # (n, m) indices into topic_ids, -1: none
    item_scores: np.ndarray  # (n, m) ABOUT scores

    def save(self, folder: Path, file_name: str | None = None) -> Path:
        """Write atomically to :func:`topic_items_path` (or ``file_name`` in ``folder``: a
        write-back's staged copy); returns the path."""
        path = topic_items_path(folder, self.version) if file_name is None else Path(folder) / file_name
        write_npz_atomically(
            path,
            {
                "item_ids": np.array(self.item_ids, dtype=str),
                "vectors": np.asarray(self.vectors, dtype=np.float16),
                "topic_ids": np.array(self.topic_ids, dtype=str),
                "item_topics": np.asarray(self.item_topics, dtype=np.int32),
                "item_scores": np.asarray(self.item_scores, dtype=np.float32),
            },
        )
        return path

    @classmethod
    def load(cls, path: Path, version: str, *, vectors: bool = True) -> TopicItems:
        """Read a file written by :meth:`save`; without ``vectors``, the memberships only (``vectors``
        then has no columns: the exploration arms need no embedding)."""
        with np.load(path, allow_pickle=False) as stored:
            ids = stored["item_ids"].tolist()
            return cls(
                version,
                ids,
                stored["vectors"].astype(np.float32) if vectors else np.zeros((len(ids), 0), np.float32),
                stored["topic_ids"].tolist(),
                stored["item_topics"].astype(np.int64),
                stored["item_scores"],
            )

    def members(self, topic_ids: Sequence[str]) -> np.ndarray:
        """The rows (of this file) of the items ABOUT any of ``topic_ids``."""
        wanted = [k for k, t in enumerate(self.topic_ids) if t in set(topic_ids)]
        if not wanted:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.isin(self.item_topics, wanted).any(axis=1))


def memberships(
    cosines: np.ndarray, *, topics: int = ABOUT_TOPICS, min_cosine: float = ABOUT_MIN_COSINE
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best ``topics`` columns with cosine ≥ ``min_cosine`` (best first; -1 and 0.0 pad)."""
    n, k = cosines.shape
    width = min(topics, k)
    order = np.argsort(-cosines, axis=1, kind="stable")[:, :width]
    scores = np.take_along_axis(cosines, order, axis=1)
    keep = scores >= min_cosine
    index = np.full((n, topics), -1, dtype=np.int64)
    value = np.zeros((n, topics), dtype=np.float32)
    index[:, :width] = np.where(keep, order, -1)
    value[:, :width] = np.where(keep, scores, 0.0)
    return index, value


def about_rows(
    item_ids: Sequence[str], topic_ids: Sequence[str], item_topics: np.ndarray, item_scores: np.ndarray
) -> list[dict[str, Any]]:
    """One ``{item_id, topic_id, score}`` row per membership (``item_topics`` ≥ 0)."""
    return [
        {"item_id": item_ids[i], "topic_id": topic_ids[int(item_topics[i, j])], "score": round(float(s), 6)}
        for i, j in zip(*np.nonzero(np.asarray(item_topics) >= 0), strict=True)
        for s in (item_scores[i, j],)
    ]


@dataclass(frozen=True)
class AboutWrite:
    """One writer of ABOUT edges (BEGIN_ABOUT_WRITE): its ticket, and whether it runs alone."""

    ticket: int
    alone: bool

    @classmethod
    def begin(cls, gateway: GraphGateway) -> AboutWrite:
        """Start a writer; end it with :meth:`end`, also when the write fails."""
        now = int(time.time() * 1000)
        row = gateway.write(BEGIN_ABOUT_WRITE, {"now": now, "lease_ms": ABOUT_WRITE_LEASE_MS}).rows[0]
        return cls(int(row["ticket"]), bool(row["alone"]))

    @classmethod
    def claim(cls, gateway: GraphGateway, now_ms: int | None = None) -> AboutWrite | None:
        """Start a writer that runs alone, only if no writer is in flight (a dead one's lease run
        out) and none began or ended within :data:`ABOUT_SETTLE_MS`; None, changing nothing,
        otherwise. End it with :meth:`end`."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        params = {"now": now, "lease_ms": ABOUT_WRITE_LEASE_MS, "settle_ms": ABOUT_SETTLE_MS}
        row = gateway.write(CLAIM_ABOUT_REPAIR, params).rows[0]
        return cls(int(row["ticket"]), alone=True) if row["claimed"] else None

    @staticmethod
    def forget(gateway: GraphGateway, files: Sequence[str] | None = None) -> None:
        """Remove the marks naming one of ``files`` (every mark: None): before edges are written from
        a file, or when a version's file is written again."""
        params = {"files": None if files is None else list(files), "now": int(time.time() * 1000)}
        gateway.write(FORGET_ABOUT_WRITTEN, params)

    def end(self, gateway: GraphGateway, version: str, file: str, complete: bool) -> bool:
        """End the writer, marking ``version`` as holding every edge of ``file`` when the write was
        ``complete``, ran alone and no writer started after it; whether it marked."""
        params = {
            "version": version,
            "file": file,
            "ticket": self.ticket,
            "complete": complete and self.alone,
            "now": int(time.time() * 1000),
        }
        done = gateway.write(MARK_ABOUT_WRITTEN, params)
        return bool(done.rows and done.rows[0]["marked"])


def write_about(
    gateway: GraphGateway,
    version: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    keep: Sequence[str] = (),
    batch: int = ABOUT_BATCH,
    on_progress: Callable[[float], None] | None = None,
    linked: str | None = None,
    writer: AboutWrite | None = None,
    trained: Sequence[str] | None = None,
) -> None:
    """Write ``rows`` as ``version``'s ABOUT edges, deleting every ABOUT edge that neither
    ``version`` nor a version in ``keep`` wrote (the written items' with each batch, then the rest
    in bounded batches), then mark ``linked`` (the version being activated; default ``version``)
    as holding them all (``about_from``) if no other writer ran meanwhile (``writer``: one begun
    by the caller; else one is begun here). ``linked``'s topic names and keywords go onto the
    Topic nodes first, once every mark is forgotten: a write cut short before the switch (a crash)
    leaves no version marked, which :func:`kgrec.model_versions.relink_active_topics` repairs.
    With ``trained`` (the item ids the rows were made from), the items folded in under another
    version are linked too (:func:`link_folded_items`), before the writer ends: a repair claims
    the graph's ABOUT edges only once no writer is in flight."""
    writer = writer or AboutWrite.begin(gateway)
    complete = False
    try:
        AboutWrite.forget(gateway)
        gateway.write(NAME_VERSION_TOPICS, {"version": linked or version, "now": int(time.time() * 1000)})
        for start in range(0, len(rows), batch):
            chunk = list(rows[start : start + batch])
            gateway.write(WRITE_ABOUT, {"version": version, "rows": chunk})
            ids = sorted({row["item_id"] for row in chunk})
            gateway.write(DELETE_STALE_ITEM_ABOUT, {"ids": ids, "keep": [version, *keep]})
            if on_progress is not None:
                on_progress(min(1.0, (start + batch) / max(len(rows), 1)))
        delete_stale_about(gateway, [version, *keep], batch)
        if trained is not None:
            link_folded_items(gateway, linked or version, version, trained, batch=batch)
        complete = True
    finally:
        writer.end(gateway, linked or version, version, complete)


def delete_stale_about(gateway: GraphGateway, keep: Sequence[str], batch: int = ABOUT_BATCH) -> int:
    """Delete every ABOUT edge no version in ``keep`` wrote, in bounded batches; returns how many."""
    stale, deleted = {"keep": list(keep), "limit": batch * 5}, 0
    while done := gateway.write(DELETE_STALE_ABOUT, stale).relationships_deleted:
        deleted += done
    return deleted


def link_topic_items(
    gateway: GraphGateway,
    folder: Path,
    lineage: Sequence[str],
    *,
    batch: int = ABOUT_BATCH,
    writer: AboutWrite | None = None,
) -> bool:
    """Make the graph's topics those of ``lineage[0]``, the version about to become active.

    Its topic names and keywords go onto the shared Topic nodes, and the ABOUT edges become
    those of its topic-items file: its own or, for an incremental version, the first of its
    ancestors (``lineage[1:]``, parent first) that has one; ABOUT edges written for the version
    itself or an ancestor nearer than the file's (items folded in) stay. ``lineage`` ends with the
    root of an incremental version. Items folded in under another version, which the file does
    not hold, are linked to the version's nearest topics from their kept topic-text vectors
    (:func:`folded_about_rows`). Returns False, changing nothing, when no such file exists
    (a version trained before topic-items files, or without text).

    When the graph's edges were last all written from the same file (a re-promotion, an
    incremental child of the active version, a rollback within one root) and no other version's
    edge is there to delete, the file's edges are not written again: only deleting a stale edge
    removes ABOUT edges, and fold-in only adds them, so they are all still there (with the score
    a later fold-in of the same item gave, as for the items folded in).

    Its topic names are written once the marks are forgotten (:func:`write_about`), or with the
    file's edges in place (then the active version's, if marked, are the same: the same root's).
    ``writer``: one begun by the caller (a repair's claim); else one is begun here.
    """
    version = lineage[0]
    at = next((k for k, v in enumerate(lineage) if topic_items_path(folder, v).is_file()), None)
    if at is None:
        if writer is not None:
            writer.end(gateway, version, version, complete=False)
        return False
    # edges folded in under the version or an ancestor between it and the file's version stay
    keep, file = lineage[:at], lineage[at]
    writer = writer or AboutWrite.begin(gateway)
    try:
        found = TopicItems.load(topic_items_path(folder, file), file, vectors=False)
        written = gateway.read(ABOUT_WRITTEN, {"file": file})[0]["marked"] > 0
        # a deleted edge may have been one of the file's (a fold-in under another version relabels it)
        skip = written and not delete_stale_about(gateway, [file, *keep], batch)
        if skip:
            gateway.write(NAME_VERSION_TOPICS, {"version": version, "now": int(time.time() * 1000)})
            link_folded_items(gateway, version, found.version, found.item_ids, batch=batch)
    except BaseException:
        writer.end(gateway, version, file, complete=False)
        raise
    if skip:
        writer.end(gateway, version, found.version, complete=True)
    else:
        rows = about_rows(found.item_ids, found.topic_ids, found.item_topics, found.item_scores)
        write_about(
            gateway,
            found.version,
            rows,
            keep=keep,
            batch=batch,
            linked=version,
            writer=writer,
            trained=found.item_ids,
        )
    return True


def link_folded_items(
    gateway: GraphGateway, version: str, topics_of: str, trained: Sequence[str], *, batch: int = ABOUT_BATCH
) -> int:
    """Write :func:`folded_about_rows` as ABOUT edges of ``topics_of`` (the version whose topics
    they are: ``version`` or its root); returns how many edges."""
    rows = folded_about_rows(gateway, version, set(trained))
    for start in range(0, len(rows), batch):
        gateway.write(WRITE_ABOUT, {"version": topics_of, "rows": rows[start : start + batch]})
    return len(rows)


def folded_about_rows(gateway: GraphGateway, version: str, trained: set[str]) -> list[dict[str, Any]]:
    """ABOUT rows for items folded in under another version: every item with a topic-text vector
    (``Item.topic_vector``, kept at fold-in), not in ``trained`` (the topic-items file) and ABOUT
    no topic now, linked to ``version``'s nearest topics as fold-in links them (cosine ≥
    :data:`ABOUT_MIN_COSINE`, at most :data:`ABOUT_TOPICS`)."""
    topics = [r for r in gateway.read(VERSION_TOPICS, {"version": version}) if r["centroid"]]
    items = [r for r in gateway.read(UNLINKED_FOLDED_ITEMS) if r["id"] not in trained and r["vector"]]
    if not topics or not items:
        return []
    centroids = np.asarray([r["centroid"] for r in topics], dtype=np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    vectors = np.asarray([r["vector"] for r in items], dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    index, scores = memberships(vectors @ centroids.T)
    return about_rows([r["id"] for r in items], [r["id"] for r in topics], index, scores)


def root_version(parameters: Mapping[str, Any]) -> str | None:
    """The root of an incremental version (its artifact's ``parameters``), whose topics it keeps;
    None for a fully trained version."""
    lineage = parameters.get("incremental")
    root = lineage.get("root") if isinstance(lineage, Mapping) else None
    return root if isinstance(root, str) else None


class VersionTopicItems:
    """Each version's :class:`TopicItems`, loaded on first use (None for a version without the file).

    A miss is remembered too: training writes the file before the version can be activated
    and never afterwards, so a serving version without it never gets one, and its newcomers
    should not pay a stat per request.
    """

    def __init__(self, folder: Path, size: int = CACHED_VERSIONS) -> None:
        self._folder = Path(folder)
        # in a one-tuple, so that a remembered miss (None) is told from a version not held
        self._loaded: RecentlyUsed[str, tuple[TopicItems | None]] = RecentlyUsed(size)

    def for_model(self, version: str, parameters: Mapping[str, Any]) -> TopicItems | None:
        """The topic items of a model version, or of its root for an incremental version."""
        found = self.get(version)
        root = root_version(parameters)
        if found is None and root is not None:
            found = self.get(root)
        return found

    def get(self, version: str) -> TopicItems | None:
        """``version``'s topic items; None when training wrote none (an older version, no text)."""
        held = self._loaded.get(version)
        if held is not None:
            return held[0]
        path = topic_items_path(self._folder, version)
        items = TopicItems.load(path, version) if path.is_file() else None
        self._loaded.put(version, (items,))
        return items
