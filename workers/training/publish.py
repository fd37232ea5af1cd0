"""Write a trained model back to the graph under a new version, then switch to it atomically.

Order matters: version node (``writing``), artifact file, embeddings in
batches, ``ready``, then the one-statement switch. A crash anywhere before the
switch leaves the previous version active and serving; the half-written
version is garbage-collected later. Using the job id as the version id makes a
redelivered job rewrite the same version instead of adding another, unless it
settled meanwhile (the version node's write refuses it, before the artifact is touched).

A redelivery can also start while the first delivery still runs (past the broker's
visibility timeout). Each write-back therefore claims the version with a fresh
``owner`` token (:func:`new_owner`): the newest claim takes the version over, every
later write of the write-back acts only for the version's owner, and the superseded
delivery stops at its next write (:class:`VersionSuperseded`). Its files are written
under token-named names and moved into place only once the claim succeeded, under a lock no later
claim passes before they are (:func:`claim`).

A gated job writes the version without the switch, records the promotion
gate's decision on it (:func:`record_gate_decision`) and switches only when the
gate promotes it (:func:`activate`); a kept version stays a ``candidate``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np

from graph_schema.allow_list import Label
from graph_schema.catalogue import Statement
from graph_schema.statements.models import (
    ACTIVATE_OWNED_VERSION,
    ACTIVATE_VERSION,
    CLEAR_VERSION_TOPICS,
    CREATE_VERSION,
    DELETE_VERSION,
    DELETE_VERSION_EMBEDDINGS,
    MARK_VERSION_READY,
    MODEL_VERSIONS,
    ONE_MODEL_VERSION,
    RECORD_GATE_DECISION,
    WRITE_EMBEDDINGS,
)
from kgrec import erasure
from kgrec.artifact_io import exclusive_lock
from kgrec.config import Settings
from kgrec.gateway import GraphGateway, WriteSummary
from kgrec.model_store import artifact_name, save_artifacts
from kgrec.model_versions import root_of
from kgrec.promotion_gate import PROMOTED, GateDecision
from kgrec.recommender import ModelArtifacts
from kgrec.topic_items import SUFFIX as TOPIC_ITEMS_SUFFIX
from kgrec.topic_items import TopicItems, topic_items_path
from kgrec.training_graph import TrainingGraph
from workers.training.item_fold_in import FoldInBasis, basis_path
from workers.training.pipeline import TrainingResult

log = logging.getLogger(__name__)
GC_BATCH = 10_000
# A version neither activated nor gated is being written or gated by its job, or its job crashed:
# it is collected only once this old (a write-back and gate take minutes, not hours).
UNSETTLED_GRACE_MS = 2 * 3600 * 1000
# staged_path's names: a write-back killed while staging (or before its claim moved them) leaves them
STAGED_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.npz$")
# In the models folder: held by a claim from its version node's write until its files are in place.
CLAIM_LOCK = ".claim.lock"


class VersionPublished(Exception):
    """The version a job is about to write was published by another delivery of the same job."""


class VersionSuperseded(VersionPublished):
    """Another delivery of the same job claimed the version after this one (the broker redelivered
    it while this one still ran): this write-back's writes are refused, and it stops."""


def new_owner() -> str:
    """A fresh owner token: one per write-back of a version (``ModelVersion.owner``)."""
    return secrets.token_hex(8)


def staged_path(path: Path, owner: str) -> Path:
    """Where the write-back holding ``owner`` writes the file ``path`` before its claim (the
    ``.npz`` suffix stays last: numpy appends one to a name without it)."""
    return path.with_name(f".{path.stem}.{owner}{path.suffix}")


def stage_files(writers: Mapping[Path, Callable[[Path], object]], owner: str) -> dict[Path, Path]:
    """Write a version's files (``writers``: each file's final path → what writes it to the path
    it is given) under the staged names of the write-back holding ``owner`` (:func:`staged_path`);
    returns each staged path with its final one, for :func:`place_staged`. A failure while staging
    (a full disk) deletes what was staged before it is raised."""
    staged = {staged_path(final, owner): final for final in writers}
    try:
        for path, final in staged.items():
            writers[final](path)
    except BaseException:
        for path in staged:
            with contextlib.suppress(OSError):  # the failure raised is the one to report
                path.unlink(missing_ok=True)
        raise
    return staged


def place_staged(staged: Mapping[Path, Path], admitted: Callable[[], None]) -> None:
    """Move each staged file into place (``staged``: staged → final path, as :func:`stage_files`
    returns it) once ``admitted()`` returned, both under the claim lock of the files' folder
    (:func:`claim_lock`), so no later claim comes between them. ``admitted`` raises when the
    write-back may not place its files: its claim was refused (:func:`claim`), or another delivery
    owns the version now (:func:`still_owned`). The staged files are deleted either way."""
    try:
        with claim_lock(next(iter(staged.values())).parent if staged else None):
            admitted()
            for path, final in staged.items():
                path.replace(final)
    finally:
        for path in staged:
            path.unlink(missing_ok=True)


def still_owned(gateway: GraphGateway, version: str, owner: str) -> None:
    """Return when the write-back holding ``owner`` still owns ``version``; :class:`VersionSuperseded`
    when another delivery owns it now (or it is gone)."""
    row = next(iter(gateway.read(ONE_MODEL_VERSION, {"version": version})), None)
    if row is None or row["owner"] != owner:
        raise VersionSuperseded(version)


def stage(artifacts: ModelArtifacts, basis: FoldInBasis | None, folder: Path, owner: str) -> dict[Path, Path]:
    """Write a version's artifact (and its fold-in ``basis``) under the staged names of the
    write-back holding ``owner`` (:func:`stage_files`); returns each staged path with its final
    one, for :func:`claim`."""
    final = folder / artifact_name(artifacts.version)
    writers: dict[Path, Callable[[Path], object]] = {
        final: lambda path: save_artifacts(artifacts, path.parent, file_name=path.name)
    }
    if basis is not None:
        writers[basis_path(folder, final.name)] = basis.save
    return stage_files(writers, owner)


def remove_stale_staged(models_folder: Path, older_than_ms: int = UNSETTLED_GRACE_MS) -> list[str]:
    """Delete the staged files (:func:`staged_path`) older than ``older_than_ms``: no version node
    names them, and a write-back killed before its claim moved them never will. Younger ones may
    belong to a write-back still staging or claiming. Returns the names deleted."""
    cutoff = time.time() - older_than_ms / 1000
    removed = []
    for path in models_folder.glob(".*.npz"):
        if not STAGED_NAME.match(path.name):
            continue
        try:  # a claim may move it, or another collection delete it, since the glob
            stale = path.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if stale:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def claim(
    gateway: GraphGateway, statement: Statement, params: Mapping[str, Any], staged: Mapping[Path, Path]
) -> None:
    """Claim version ``params["id"]`` for ``params["owner"]`` with ``statement`` (CREATE_VERSION or
    CREATE_CHILD_VERSION), then move each staged file into place (``staged``: staged → final path).

    Raises :class:`VersionPublished` when the version settled: its files are left as they are and
    the staged ones deleted (so are they when the claim fails otherwise). A delivery that claims
    the version later replaces the files with its own. The claim and the moves hold the models
    folder's claim lock (:func:`place_staged`), so no later claim comes between them.
    """

    def claimed() -> None:
        rows = gateway.write(statement, params).rows
        if not rows:  # CREATE_CHILD_VERSION of a parent collected meanwhile
            raise RuntimeError(f"model version {params['id']} could not be created: its parent is gone")
        if not rows[0]["claimed"]:
            raise VersionPublished(params["id"])

    place_staged(staged, claimed)


@contextlib.contextmanager
def claim_lock(models_folder: Path | None) -> Iterator[None]:
    """Hold the exclusive lock on ``models_folder``'s :data:`CLAIM_LOCK` file (nothing: None).

    A claim's move of its files comes after its version node's write: a delivery paused between
    the two (its reply late, its process descheduled) whose version another delivery claimed
    meanwhile would otherwise move its file over the new owner's, which the version would then be
    marked ready and served with. flock, not lockf: two claims in one process exclude each other
    too. The kernel releases the lock of a delivery that dies holding it."""
    if models_folder is None:
        yield
        return
    with exclusive_lock(models_folder / CLAIM_LOCK):
        yield


def write_embeddings(
    gateway: GraphGateway,
    label: Label,
    version: str,
    owner: str,
    ids: Sequence[str],
    vectors: Sequence[np.ndarray],
    read_at_ms: int,
) -> set[str]:
    """Write one batch of ``label`` embeddings of ``version`` (``WRITE_EMBEDDINGS[label]``) for the
    write-back holding ``owner``, vectors computed from data read at ``read_at_ms``: a user's rows
    carry their erasure id, and a user erased since gets none. Returns the ids written, or raises
    :class:`VersionSuperseded` when another delivery owns the version now."""
    rows: list[dict[str, Any]] = [
        {"id": i, "vector": [round(float(x), 6) for x in v]} for i, v in zip(ids, vectors, strict=True)
    ]
    params: dict[str, Any] = {"version": version, "owner": owner, "rows": rows}
    if label is Label.USER:
        for row in rows:
            row["erasure_id"] = erasure.user_hash(row["id"])
        params["since"] = erasure.read_before(read_at_ms)
    written = owned(gateway.write(WRITE_EMBEDDINGS[label], params), version)
    return set(written.rows[0]["written"])


def owned(summary: WriteSummary, version: str) -> WriteSummary:
    """``summary`` of a write-back statement that reports ``owned``; :class:`VersionSuperseded`
    when the write was refused because another delivery owns ``version`` now (or it is gone)."""
    if not summary.rows or not summary.rows[0]["owned"]:
        raise VersionSuperseded(version)
    return summary


def write_back(
    gateway: GraphGateway,
    result: TrainingResult,
    graph: TrainingGraph,
    models_folder: Path,
    *,
    before_activation: Callable[[], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    embedding_batch: int = Settings.embedding_batch,
    activate_now: bool = True,
    owner: str | None = None,
    basis: FoldInBasis | None = None,
) -> str:
    """Store artifacts and embeddings under ``result.artifacts.version`` and activate it.

    ``embedding_batch`` is the number of embedding rows per write (``Settings.embedding_batch``);
    with ``activate_now`` false the version is left ``ready`` and inactive (for the gate).
    ``owner`` is this write-back's token (default: a new one), ``basis`` the version's fold-in
    basis, written with the artifact. Raises :class:`VersionPublished` when the version settled
    before the claim, :class:`VersionSuperseded` when another delivery claimed it since.
    """
    version = result.artifacts.version
    owner = owner or new_owner()
    now = int(time.time() * 1000)
    staged = stage(result.artifacts, basis, models_folder, owner)
    claim(
        gateway,
        CREATE_VERSION,
        {
            "id": version,
            "owner": owner,
            "now": now,
            "parameters": json.dumps(result.artifacts.parameters, default=str),
            "counts": json.dumps(result.counts),
            "metrics": json.dumps({f"validation_{k}": v for k, v in result.validation.items()}),
            "artifact": artifact_name(version),
            # the first incremental update after this version reads what changed since the pull
            "data_until": graph.pulled_at,
        },
        staged,
    )
    embeddings = result.embeddings
    groups = [
        (Label.USER, graph.user_ids, embeddings.users),
        (Label.ITEM, graph.item_ids, embeddings.items),
        (Label.BRAND, graph.brand_ids, embeddings.brands),
        (Label.CATEGORY, graph.category_ids, embeddings.categories),
    ]
    total = sum(len(ids) for _, ids, _ in groups) or 1
    done = 0
    erased: list[str] = []
    for label, ids, vectors in groups:
        batch = embedding_batch
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            present = write_embeddings(
                gateway,
                label,
                version,
                owner,
                chunk,
                vectors[start : start + len(chunk)],
                graph.pulled_at or now,
            )
            if label is Label.USER:  # a user erased since the pull got no embedding
                erased += [u for u in chunk if u not in present]
            done += len(chunk)
            if on_progress is not None:
                on_progress(done / total)
    mark_ready(gateway, version, owner, erased_share(graph, erased))
    if before_activation is not None:
        clear_topics(gateway, version, owner)
        before_activation()
    if activate_now:
        activate(gateway, version, owner)
    return version


def mark_ready(gateway: GraphGateway, version: str, owner: str, erased: list[dict[str, Any]]) -> None:
    """Mark ``version`` ``ready`` (MARK_VERSION_READY, ``erased``: :func:`erased_share`) for the
    write-back holding ``owner``; :class:`VersionSuperseded` when another delivery owns it now."""
    owned(
        gateway.write(
            MARK_VERSION_READY,
            {"id": version, "owner": owner, "erased": erased, "now": int(time.time() * 1000)},
        ),
        version,
    )


def save_topic_items(gateway: GraphGateway, models_folder: Path, items: TopicItems, owner: str) -> Path:
    """Write ``items`` (its version's topic-items file) for the write-back holding ``owner``, as its
    other files: staged (:func:`stage_files`), moved into place under the claim lock
    (:func:`place_staged`) only while that write-back owns the version (:func:`still_owned`);
    :class:`VersionSuperseded` otherwise, the staged file deleted. Returns the final path.

    Written in place, the file of a delivery taken over after its clear of the topics
    (:func:`clear_topics`) replaced the one of the delivery that owns the version now. The claim
    lock orders the move against any later claim: a claim after it brings its own file later."""
    final = topic_items_path(models_folder, items.version)
    staged = stage_files({final: lambda path: items.save(path.parent, file_name=path.name)}, owner)
    place_staged(staged, lambda: still_owned(gateway, items.version, owner))
    return final


def clear_topics(gateway: GraphGateway, version: str, owner: str) -> None:
    """Drop ``version``'s HAS_TOPIC edges (CLEAR_VERSION_TOPICS) before its write-back holding
    ``owner`` writes its topics; :class:`VersionSuperseded` when another delivery owns it now.

    An earlier delivery's topics (one taken over while its gate ran, or one that crashed) would
    otherwise stay beside this one's, which get other ids (ids are never reused)."""
    owned(gateway.write(CLEAR_VERSION_TOPICS, {"id": version, "owner": owner}), version)


def erased_share(graph: TrainingGraph, erased: Sequence[str]) -> list[dict[str, Any]]:
    """What the users ``erased`` since ``graph`` was pulled added to its popularity counts: one
    ``{item_id, count}`` per item (a user erased before their embedding was written has no
    EMBEDDING edge for the erasure to find, so the write-back takes their share off itself)."""
    if not erased:
        return []
    index = {user_id: row for row, user_id in enumerate(graph.user_ids)}
    rows = np.asarray([index[u] for u in erased if u in index], dtype=np.int64)
    counts = np.bincount(graph.inter_item[np.isin(graph.inter_user, rows)], minlength=graph.n_items)
    return [{"item_id": graph.item_ids[i], "count": int(counts[i])} for i in np.flatnonzero(counts)]


def activate(gateway: GraphGateway, version: str, owner: str | None = None) -> None:
    """Make ``version`` (written and ``ready``) the active one: one statement. With ``owner`` (its
    write-back's token) only while that write-back owns it, else :class:`VersionSuperseded`."""
    now = int(time.time() * 1000)
    if owner is None:
        activated = gateway.write(ACTIVATE_VERSION, {"id": version, "now": now})
    else:
        activated = gateway.write(ACTIVATE_OWNED_VERSION, {"id": version, "owner": owner, "now": now})
    if not activated.rows or activated.rows[0]["activated"] != 1:
        if owner is not None:  # its own write-back marked it ready: another delivery claimed it since
            raise VersionSuperseded(version)
        raise RuntimeError(f"model version {version} could not be activated")


def record_gate_decision(
    gateway: GraphGateway,
    version: str,
    owner: str,
    decision: GateDecision,
    taken: bool = False,
    experiment: str = "",
) -> None:
    """Store the promotion gate's decision, reason and scores on the version, for the write-back
    holding ``owner`` (:class:`VersionSuperseded` when another delivery owns it now); ``taken``: a
    hook took the candidate (:data:`kgrec.promotion_gate.CandidateHook`), so a promotion is not
    carried out; ``experiment``: the experiment it took the candidate for ('' for none;
    :func:`kgrec.gate_experiments.taken_experiment` reads it back)."""
    owned(
        gateway.write(
            RECORD_GATE_DECISION,
            {
                "id": version,
                "owner": owner,
                "decision": decision.decision,
                "reason": decision.reason,
                "metrics": json.dumps(decision.metrics()),
                "now": int(time.time() * 1000),
                "taken": taken,
                "experiment": experiment,
            },
        ),
        version,
    )


def promotion_unfinished(gateway: GraphGateway, version: str) -> bool:
    """Whether the gate's recorded promotion of ``version`` was never carried out: its job died
    between recording the decision and the activation. That is: decided ``promoted``, not taken
    by a hook, never activated, and no version activated since the decision (which stands)."""
    rows = gateway.read(MODEL_VERSIONS)
    row = next((v for v in rows if v["id"] == version), None)
    if row is None or row["status"] != "ready" or row["gate_decision"] != PROMOTED:
        return False
    if row["gate_taken"] or row["activated_at"] is not None:
        return False
    return not any(v["activated_at"] is not None and v["activated_at"] >= row["gate_at"] for v in rows)


def collect_garbage(
    gateway: GraphGateway,
    models_folder: Path,
    keep: int,
    protected: Callable[[], AbstractSet[str] | None] | None = None,
) -> list[str]:
    """Keep the active version, the newest ``keep - 1`` previously active ones before it, the
    newest ``keep`` candidates the promotion gate kept, and the versions ``protected()`` names
    (those an experiment serves or may promote), asked before a version's edges go and again right
    before its node and files go, since an experiment may start on a version while it or older ones
    are being deleted (that second answer is the next version's first: one ask per version after
    the first); None from it (it cannot tell) ends the collection there.

    Older versions that were never activated nor gated are leftovers of crashed
    jobs and go too, once :data:`UNSETTLED_GRACE_MS` old: until then their job may
    still be writing or gating them (a job that started before the one that
    activated a newer version). Versions newer than the active one may still be
    being written by another job, so they are left alone (unless they are
    surplus gated candidates). Staged files older than :data:`UNSETTLED_GRACE_MS` go too
    (:func:`remove_stale_staged`).
    """
    remove_stale_staged(models_folder)
    versions = gateway.read(MODEL_VERSIONS)  # newest first
    current = next((v for v in versions if v["active"]), None)
    if current is None:
        return []
    candidates = [
        v
        for v in versions
        if v["gate_decision"] is not None and v["activated_at"] is None and v["status"] == "ready"
    ]
    older = [v for v in versions if v["created_at"] < current["created_at"]]
    kept = [v for v in older if v["activated_at"] is not None][: max(keep - 1, 0)] + candidates[:keep]
    doomed = [v for v in older if v not in kept] + [v for v in candidates[keep:] if v not in older]
    unsettled_until = int(time.time() * 1000) - UNSETTLED_GRACE_MS
    doomed = [v for v in doomed if settled(v) or v["created_at"] < unsettled_until]
    removed = []

    def ask() -> AbstractSet[str] | None:
        return frozenset() if protected is None else protected()

    # Protection is asked once per version, under the claim lock; the version after it takes that
    # answer for the ask before its edges (only the version's node and files went in between).
    protect: AbstractSet[str] | None = frozenset()
    rechecked = False
    for version in doomed:
        owned = {"id": version["id"], "owner": version["owner"] or ""}
        if not rechecked:
            protect = ask()
        rechecked = False
        if protect is None:
            break
        if version["id"] in protect:
            continue
        while gateway.write(DELETE_VERSION_EMBEDDINGS, {**owned, "limit": GC_BATCH}).relationships_deleted:
            pass
        # The node and its files go under the claim lock: a redelivery's claim (which may create
        # the node again) and its renames come wholly before (a new owner: nothing is deleted) or
        # after (its files are the ones left). Protection is asked again: an experiment may have
        # started on the version while its edges were deleted (it keeps the version and its files).
        with claim_lock(models_folder):
            protect, rechecked = ask(), True
            if protect is None:
                break
            if version["id"] in protect or not gateway.write(DELETE_VERSION, owned).nodes_deleted:
                # the node stays listed (activated, claimed again or protected meanwhile): so do its files
                log.warning("model version %s was not deleted; its files are kept", version["id"])
                continue
            if version["artifact"]:
                (models_folder / version["artifact"]).unlink(missing_ok=True)
                basis_path(models_folder, version["artifact"]).unlink(missing_ok=True)
        removed.append(version["id"])
    remove_unused_topic_items(models_folder, [v for v in versions if v["id"] not in removed], removed)
    return removed


def settled(version: dict[str, Any]) -> bool:
    """Whether the job that wrote ``version`` (a row of MODEL_VERSIONS) finished with it: it was
    activated, or the promotion gate decided on it."""
    return version["activated_at"] is not None or version["gate_decision"] is not None


def already_published(gateway: GraphGateway, version: str) -> dict[str, Any] | None:
    """A summary of ``version`` when an earlier run of its job published it, else None.

    A queued job names its version after itself, so a redelivered job (its worker lost after
    the version was published, before the broker heard so) finds it here and returns this
    instead of rewriting a version that may be serving (it first carries out a promotion left
    unfinished: :func:`promotion_unfinished`). A version its job left unsettled is written again.
    """
    row = next(iter(gateway.read(ONE_MODEL_VERSION, {"version": version})), None)
    if row is None or row["status"] != "ready" or not settled(row):
        return None
    gate = row["gate_decision"] and {"decision": row["gate_decision"], "reason": row["gate_reason"]}
    return {"version": version, "already_published": True, "active": bool(row["active"]), "gate": gate}


def remove_unused_topic_items(
    models_folder: Path,
    versions: list[dict[str, Any]],
    removed: Sequence[str] = (),
) -> list[str]:
    """Delete the topic-items files no listed version uses; returns their versions.

    A version uses its own file and, when incremental, its root's (which outlives the root's
    node while a descendant stays). The files of the versions just ``removed`` go at once; any
    other unused file only when older than an hour, since it may belong to a version written
    after ``versions`` was read.
    """
    used = {v["id"] for v in versions} | {root for v in versions if (root := root_of(v))}
    cutoff = time.time() - 3600
    unused = []
    for path in models_folder.glob(f"*{TOPIC_ITEMS_SUFFIX}"):
        version = path.name.removesuffix(TOPIC_ITEMS_SUFFIX)
        if version not in used and (version in removed or path.stat().st_mtime < cutoff):
            path.unlink(missing_ok=True)
            unused.append(version)
    return unused
