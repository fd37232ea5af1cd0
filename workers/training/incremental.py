"""Incremental model versions: refresh the rows of the users and items touched since the active version.

Between full trainings, an update makes a child of the active version (its ``parent``):
the parent's artifact with new rows for the **touched** items (an interaction newer than
the parent's ``data_until``) and new user vectors for the touched users. Everything else
is the parent's, bit for bit. The loop, top to bottom:

1. **Plan** (:func:`plan_update`): read the touched (user, item) pairs since the parent's
   ``data_until``, the fresh interaction counts of the touched items, and split the seeds
   (touched items and users, sorted) round-robin into P partitions.
2. **Pull and refresh each partition** (:func:`pull_partition`, :func:`refresh_partition`),
   one Celery task each (a chord), or one after another in the caller's process.
   A partition pulls the 2-hop subgraph of its items (item ← every user who interacted with
   it → all of those users' interactions) and the histories of every touched user (the new
   examples). From it:

   - **signal rows**: the item's co-occurrence row (co-counts over the fresh
     ``sqrt(pop_i · pop_j)``) and its transition rows (``transitions``, ``successors``) are
     exactly what a full rebuild gives those rows, because every co-occurrence and every
     transition that involves item i lies in the history of a user of i;
   - **embedding rows**: one damped Newton step of the graph model's own objective (next-item
     softmax cross-entropy of the served score ``(profile · E_ctx) · E_itemᵀ``) on every *new*
     example (a touched user's interaction after the parent, its earlier items as context), for
     the item's target row, with every other row frozen at the parent's values:
     ``Δ_i = -g_i / (h_i + λ)`` (``g``: gradient, ``h``: the Hessian's diagonal, ``λ``:
     ``KGREC_INCREMENTAL_DAMPING``). The parent was trained to a stationary point on the old
     examples, so the new examples are what moves it (taking the softmax's negatives from every
     new example, not only the item's own users, keeps the step from favouring touched items).
     The context row moves with the target row's shared part (``E_ctx = E + offset`` in the
     model), the bias only on the target.
   - **user vectors**: the user's served profile over the parent's context embeddings (what
     scoring actually uses for a user; users have no trained parameters in serving).

   Every quantity reads the parent's tables, the new examples and the seed's own neighbourhood,
   never another seed's new row, and same-time interactions are ordered by a fixed shuffle of the
   items: the result does not depend on how the seeds were partitioned.
3. **Merge and publish** (:func:`merge`, :func:`publish_child`): the chord's callback puts the
   rows into a copy of the parent's artifact, writes it and the touched EMBEDDING rows in
   ``UNWIND $rows`` batches, copies the parent's other EMBEDDING and HAS_TOPIC relationships,
   marks it ready and switches to it in one statement, only while the parent is still active.
   A failed partition means no callback: nothing is written and the parent keeps serving.

Items the parent has never seen are left to the fold-in path (``item_fold_in``), new users
need no row to be served. Knowledge signals (co-purchase, brand, topics) and the blend
weights stay the parent's until the next full training.

**Drift** (``parameters.incremental.drift``): interactions touched by the incremental
versions since the last full training, over the interactions that training saw. The beat
schedules a full retraining instead of another update once it reaches
``KGREC_INCREMENTAL_DRIFT_THRESHOLD`` (:func:`kgrec.retrain_schedule.update_kind`).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from graph_schema.allow_list import Label
from graph_schema.statements.incremental import (
    ACTIVATE_CHILD_VERSION,
    COPY_EMBEDDINGS,
    COPY_TOPICS,
    CREATE_CHILD_VERSION,
    EMBEDDING_IDS,
    INCREMENTAL_PARENT,
    ITEM_INTERACTION_COUNTS,
    TOUCHED_SINCE,
    USERS_OF_ITEMS,
)
from graph_schema.statements.models import POPULARITY_ADJUSTMENTS
from graph_schema.statements.training import INTERACTIONS_OF_USERS
from kgrec.config import Settings
from kgrec.decay import decayed_array
from kgrec.gateway import GraphGateway
from kgrec.item_graphs import history_order
from kgrec.model_store import artifact_name, load_artifacts, models_dir
from kgrec.recommender import ModelArtifacts
from kgrec.signals import SIGNALS_BY_NAME
from kgrec.training_graph import TrainingGraph
from workers.training.item_fold_in import FoldInBasis, basis_path
from workers.training.job import KEEP_VERSIONS, Progress, collect_unused_versions
from workers.training.kg_model import next_item_examples
from workers.training.publish import (
    VersionPublished,
    VersionSuperseded,
    already_published,
    claim,
    mark_ready,
    new_owner,
    owned,
    stage,
    write_embeddings,
)

# Signals whose row i depends only on the histories of item i's users: a 2-hop pull rebuilds them exactly.
LOCAL_ROW_SIGNALS = ("transitions", "last_item_transitions")
COOCCURRENCE = "cooccurrence"
SOFTMAX_CHUNK = 1_024  # examples whose logits over all items are alive at once


# --- 1. plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatePlan:
    """What one incremental update refreshes, from which parent (JSON-able: it travels to the partitions)."""

    parent: str
    parent_artifact: str
    since: int  # interactions with last_ts above this are new
    data_until: int  # the newest last_ts among them (the child's ``since``)
    items: list[str]  # touched items, sorted
    users: list[str]  # touched users, sorted
    item_interactions: dict[str, int]  # fresh interaction counts of the touched items
    new_interactions: int  # touched (user, item) pairs
    partitions: int
    parent_counts: str  # the parent's counts (JSON), kept on the child
    lineage: dict[str, Any]  # root, depth, root_interactions, new_interactions since the root, drift
    planned_at: int = 0  # wall clock (epoch ms); 0: a plan of a kgrec before this field

    def seeds(self, part: int) -> tuple[list[str], list[str]]:
        """(items, users) of partition ``part``: every P-th seed of the sorted lists."""
        return self.items[part :: self.partitions], self.users[part :: self.partitions]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for a Celery message."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UpdatePlan:
        """The plan :meth:`to_json` wrote."""
        return cls(**data)


def _json(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def plan_update(gateway: GraphGateway, partitions: int, since: int | None = None) -> UpdatePlan | None:
    """The update of the active version; None when there is no active version or nothing was touched.

    ``since`` (epoch ms) overrides the parent's ``data_until`` (a full training's pull time, or
    what an update read; its ``created_at`` for a version that did not record it).
    """
    rows = gateway.read(INCREMENTAL_PARENT)
    if not rows:
        return None
    parent = rows[0]
    parameters = _json(parent["parameters"])
    if since is None:
        since = parent["data_until"] if parent["data_until"] is not None else parent["created_at"]
    touched = gateway.read(TOUCHED_SINCE, {"since": since})
    if not touched:
        return None
    items = sorted({r["item_id"] for r in touched})
    data_until = int(max(r["last_ts"] for r in touched))
    before = parameters.get("incremental") or {}
    root_interactions = int(
        before.get("root_interactions") or _json(parent["counts"]).get("interactions") or 1
    )
    since_root = int(before.get("new_interactions_since_root", 0)) + len(touched)
    return UpdatePlan(
        parent=parent["id"],
        parent_artifact=parent["artifact"],
        since=int(since),
        data_until=data_until,
        items=items,
        users=sorted({r["user_id"] for r in touched}),
        item_interactions=item_interactions(gateway, items, data_until),
        new_interactions=len(touched),
        partitions=max(1, int(partitions)),
        parent_counts=parent["counts"] or "{}",
        planned_at=int(time.time() * 1000),
        lineage={
            "root": before.get("root", parent["id"]),
            "depth": int(before.get("depth", 0)) + 1,
            "root_interactions": root_interactions,
            "new_interactions_since_root": since_root,
            "drift": round(since_root / max(root_interactions, 1), 6),
        },
    )


def item_interactions(gateway: GraphGateway, items: Sequence[str], until: int) -> dict[str, int]:
    """The interaction counts of ``items`` now (bots left out), of interactions first seen by ``until``."""
    rows = gateway.read(ITEM_INTERACTION_COUNTS, {"ids": list(items), "until": until})
    counts = {r["id"]: int(r["interactions"]) for r in rows}
    return {i: counts.get(i, 0) for i in items}


# --- 2. pull and refresh one partition --------------------------------------------------------------


def pull_partition(gateway: GraphGateway, items: Sequence[str], users: Sequence[str]) -> list[dict]:
    """The 2-hop subgraph of ``items`` (their users' whole histories) and the histories of ``users``."""
    pulled = {r["id"] for r in gateway.read(USERS_OF_ITEMS, {"ids": list(items)})} if items else set()
    ids = sorted(pulled | set(users))
    rows: list[dict] = []
    for start in range(0, len(ids), 2_000):
        rows.extend(gateway.read(INTERACTIONS_OF_USERS, {"ids": ids[start : start + 2_000]}))
    return rows


@dataclass
class PartitionRows:
    """What one partition refreshed: rows keyed by item / user id."""

    item_ids: list[str]
    target: np.ndarray  # (n, dim) new item (target) embedding rows
    context: np.ndarray  # (n, dim) new item context embedding rows
    signal_rows: dict[str, sp.csr_matrix]  # signal name -> (n, n_items) new rows
    user_ids: list[str]  # the partition's seed users with a vector (those with a history the parent knows)
    user_vectors: np.ndarray  # (m, dim)

    def encode(self, seed_users: Sequence[str]) -> str:
        """One base64 ``.npz`` string (a Celery result, kept a day): without the user ids, which
        are the plan's seeds of the partition (``seed_users``, :meth:`UpdatePlan.seeds`), only each
        vector's position among them, so that a kept result names no user once the plan is gone."""
        position = {user: k for k, user in enumerate(seed_users)}
        arrays: dict[str, np.ndarray] = {
            "item_ids": np.array(self.item_ids, dtype=str),
            "target": self.target,
            "context": self.context,
            "user_vectors": self.user_vectors,
            "user_rows": np.array([position[u] for u in self.user_ids], dtype=np.int64),
            "signals": np.array(list(self.signal_rows), dtype=str),
        }
        for name, rows in self.signal_rows.items():
            arrays[f"{name}.data"], arrays[f"{name}.indices"] = rows.data, rows.indices
            arrays[f"{name}.indptr"], arrays[f"{name}.shape"] = rows.indptr, np.array(rows.shape)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    @classmethod
    def decode(cls, text: str, seed_users: Sequence[str]) -> PartitionRows:
        """The rows :meth:`encode` wrote, for the partition whose seed users are ``seed_users``."""
        with np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False) as stored:
            signals = {
                name: sp.csr_matrix(
                    (stored[f"{name}.data"], stored[f"{name}.indices"], stored[f"{name}.indptr"]),
                    shape=tuple(stored[f"{name}.shape"]),
                )
                for name in stored["signals"].tolist()
            }
            return cls(
                item_ids=stored["item_ids"].tolist(),
                target=stored["target"],
                context=stored["context"],
                signal_rows=signals,
                # a result encoded before user_rows: a vector for every seed user
                user_ids=[seed_users[k] for k in stored["user_rows"]]
                if "user_rows" in stored.files
                else list(seed_users),
                user_vectors=stored["user_vectors"],
            )


def local_graph(
    parent: ModelArtifacts, rows: Sequence[Mapping[str, Any]], now_ms: int, half_life_ms: float
) -> tuple[TrainingGraph, np.ndarray]:
    """The pulled rows over the parent's item index (items it never saw left out), and each row's last_ts.

    Rows are sorted as :func:`workers.training.subgraph.pull` sorts them, so the same subgraph
    always gives the same arrays.
    """
    index = {item_id: k for k, item_id in enumerate(parent.item_ids)}
    kept = sorted((r for r in rows if r["item_id"] in index), key=lambda r: (r["user_id"], r["item_id"]))
    user_ids = sorted({r["user_id"] for r in kept})
    user_index = {u: k for k, u in enumerate(user_ids)}
    nan = np.nan
    weights = decayed_array(
        np.array([nan if r["weight"] is None else r["weight"] for r in kept], dtype=np.float64),
        np.array([nan if r["weight_ts"] is None else r["weight_ts"] for r in kept], dtype=np.float64),
        now_ms,
        half_life_ms,
    )
    order = np.array(
        [r["last_ts"] if r["last_ts"] is not None else (r["last_seq"] or 0) for r in kept], dtype=np.int64
    )
    # Same-time interactions: history_order breaks ties by (user, item) alone (kgrec.ties), so
    # every partition, the full pull and serving order them alike.
    items = np.array([index[r["item_id"]] for r in kept], dtype=np.int64)
    last_ts = np.array([-1 if r["last_ts"] is None else r["last_ts"] for r in kept], dtype=np.int64)
    graph = TrainingGraph(
        user_ids=user_ids,
        item_ids=list(parent.item_ids),
        inter_user=np.array([user_index[r["user_id"]] for r in kept], dtype=np.int64),
        inter_item=items,
        inter_weight=weights,
        inter_order=order,
    )
    return graph, last_ts


def _example_is_new(graph: TrainingGraph, last_ts: np.ndarray, since: int) -> np.ndarray:
    """For each example of :func:`next_item_examples` (same order): is its target interaction new?"""
    order = history_order(graph)
    users = graph.inter_user[order]
    starts = np.r_[True, users[1:] != users[:-1]]
    targets = order[~starts]  # every interaction but each user's first, in the examples' order
    return last_ts[targets] > since


def _profiles(
    context: np.ndarray, examples_context: np.ndarray, relative: np.ndarray, decay: float
) -> np.ndarray:
    """Recency-weighted mean of context rows, as the graph model forms a training context."""
    weight = relative * decay ** np.arange(examples_context.shape[1])[None, :] * (examples_context >= 0)
    weight = weight / np.maximum(weight.sum(axis=1, keepdims=True), 1e-12)
    return np.einsum("bw,bwd->bd", weight, context[np.maximum(examples_context, 0)])


def embedding_step(
    parent: ModelArtifacts,
    graph: TrainingGraph,
    last_ts: np.ndarray,
    since: int,
    rows: np.ndarray,
    damping: float,
) -> np.ndarray:
    """Δ of the target rows ``rows`` (item indices): one damped Newton step on every new example (the
    graph holds every touched user's history), every other row at the parent's value."""
    target = np.asarray(parent.item_embeddings, dtype=np.float64)
    context = np.asarray(
        parent.item_context_embeddings if parent.item_context_embeddings is not None else target, np.float64
    )
    delta = np.zeros((rows.size, target.shape[1]))
    if rows.size == 0 or graph.inter_user.size == 0:
        return delta
    examples = next_item_examples(graph)
    new = _example_is_new(graph, last_ts, since)
    if not new.any():
        return delta
    decay = float(parent.parameters.get("model_decay", parent.recency_decay) or 1.0)
    ctx = _profiles(context, examples.context[new], examples.relative[new].astype(np.float64), decay)
    example_target = examples.target[new]
    gradient = np.zeros_like(delta)
    curvature = np.zeros_like(delta)
    for start in range(0, ctx.shape[0], SOFTMAX_CHUNK):
        part = slice(start, start + SOFTMAX_CHUNK)
        logits = ctx[part] @ target.T
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p_rows = p[:, rows]
        is_target = (example_target[part][:, None] == rows[None, :]).astype(np.float64)
        gradient += (p_rows - is_target).T @ ctx[part]
        curvature += (p_rows * (1.0 - p_rows)).T @ (ctx[part] ** 2)
    return -gradient / (curvature + damping)


def signal_rows(
    parent: ModelArtifacts, graph: TrainingGraph, rows: np.ndarray, popularity: np.ndarray
) -> dict:
    """The parent's interaction signals' rows ``rows``, rebuilt from the pulled subgraph."""
    result: dict[str, sp.csr_matrix] = {}
    if rows.size == 0:
        return result
    if COOCCURRENCE in parent.components:
        users_items = sp.csr_matrix(
            (np.ones(graph.inter_user.size, np.float32), (graph.inter_user, graph.inter_item)),
            shape=(graph.n_users, graph.n_items),
        )
        users_items.data[:] = 1.0
        counts = (users_items[:, rows].T @ users_items).tolil()
        counts[np.arange(rows.size), rows] = 0  # no self-loops
        counts = counts.tocsr()
        counts.eliminate_zeros()
        norm = 1.0 / (np.sqrt(popularity) + 1e-9)
        result[COOCCURRENCE] = (sp.diags(norm[rows]) @ counts @ sp.diags(norm)).tocsr().astype(np.float32)
    for name in LOCAL_ROW_SIGNALS:
        if name in parent.components and name in SIGNALS_BY_NAME:
            rebuilt = SIGNALS_BY_NAME[name].build(graph)
            result[name] = rebuilt[rows].tocsr()  # row-normalised row by row: the rows are exact
    return result


def user_vectors(
    parent: ModelArtifacts, graph: TrainingGraph, users: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """The served profile over the parent's context embeddings (bias column zero, as in training) of
    each of ``users`` with a history of items the parent knows, and those users' ids: a user without
    one has nothing for a vector to be made of (serving folds it in from its history)."""
    context = np.asarray(
        parent.item_context_embeddings
        if parent.item_context_embeddings is not None
        else parent.item_embeddings,
        np.float64,
    )
    decay = parent.recency_decay
    index = {u: k for k, u in enumerate(graph.user_ids)}
    kept = [user for user in users if user in index]
    order = history_order(graph)
    result = np.zeros((len(kept), context.shape[1]), dtype=np.float32)
    for row, user in enumerate(kept):
        k = index[user]
        mine = order[graph.inter_user[order] == k][::-1]  # most recent first
        weights = np.maximum(graph.inter_weight[mine], 0.0)
        strongest = weights.max(initial=0.0)
        relative = weights / strongest if strongest > 0 else np.ones_like(weights)
        w = relative * decay ** np.arange(mine.size)
        result[row] = (w @ context[graph.inter_item[mine]]) / max(w.sum(), 1e-12)
    result[:, -1] = 0.0
    return kept, result


def refresh_partition(
    parent: ModelArtifacts,
    plan: UpdatePlan,
    part: int,
    rows: Sequence[Mapping[str, Any]],
    *,
    now_ms: int,
    half_life_ms: float,
    damping: float,
) -> PartitionRows:
    """The new rows of partition ``part``'s seeds from its pulled subgraph ``rows``."""
    items, users = plan.seeds(part)
    graph, last_ts = local_graph(parent, rows, now_ms, half_life_ms)
    index = {item_id: k for k, item_id in enumerate(parent.item_ids)}
    known = [i for i in items if i in index]
    item_rows = np.array([index[i] for i in known], dtype=np.int64)
    popularity = fresh_popularity(parent, plan)
    delta = embedding_step(parent, graph, last_ts, plan.since, item_rows, damping)
    target = np.asarray(parent.item_embeddings, dtype=np.float32)[item_rows].copy()
    context_table = parent.item_context_embeddings if parent.item_context_embeddings is not None else None
    target += delta.astype(np.float32)
    if context_table is None:
        context = target.copy()
    else:
        context = np.asarray(context_table, dtype=np.float32)[item_rows].copy()
        context[:, :-1] += delta[:, :-1].astype(np.float32)  # the shared part; the bias stays on the target
    user_ids, vectors = user_vectors(parent, graph, users)
    return PartitionRows(
        item_ids=known,
        target=target,
        context=context,
        signal_rows=signal_rows(parent, graph, item_rows, popularity),
        user_ids=user_ids,
        user_vectors=vectors,
    )


def fresh_popularity(parent: ModelArtifacts, plan: UpdatePlan) -> np.ndarray:
    """The parent's popularity with the touched items' counts read now."""
    popularity = np.asarray(parent.popularity, dtype=np.float32).copy()
    index = {item_id: k for k, item_id in enumerate(parent.item_ids)}
    for item_id, count in plan.item_interactions.items():
        if item_id in index:
            popularity[index[item_id]] = count
    return popularity


# --- 3. merge and publish ---------------------------------------------------------------------------


def _replace_rows(matrix: sp.csr_matrix, rows: np.ndarray, new_rows: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` with ``rows`` replaced by ``new_rows`` (every other row bit-identical)."""
    n = matrix.shape[0]
    keep = np.ones(n, dtype=np.float32)
    keep[rows] = 0.0
    placed = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, np.arange(rows.size))), shape=(n, rows.size)
    ) @ sp.csr_matrix(new_rows, dtype=np.float32)
    kept = sp.diags(keep) @ matrix
    kept.eliminate_zeros()
    return (kept + placed).tocsr().astype(np.float32)


def merge(
    parent: ModelArtifacts,
    plan: UpdatePlan,
    parts: Iterable[PartitionRows],
    version: str,
    popularity_adjustments: Mapping[str, float] | None = None,
) -> tuple[ModelArtifacts, dict[str, np.ndarray]]:
    """The child's artifacts and its touched users' vectors (user id -> vector)."""
    index = {item_id: k for k, item_id in enumerate(parent.item_ids)}
    target = np.array(parent.item_embeddings, copy=True)
    context = (
        None
        if parent.item_context_embeddings is None
        else np.array(parent.item_context_embeddings, copy=True)
    )
    components = dict(parent.components)
    users: dict[str, np.ndarray] = {}
    for part in parts:
        rows = np.array([index[i] for i in part.item_ids], dtype=np.int64)
        target[rows] = part.target
        if context is not None:
            context[rows] = part.context
        for name, new_rows in part.signal_rows.items():
            components[name] = _replace_rows(components[name], rows, new_rows)
        users.update(zip(part.user_ids, part.user_vectors, strict=True))
    popularity = fresh_popularity(parent, plan)
    for item_id, delta in (popularity_adjustments or {}).items():
        # erased users' share, recorded on the parent for items whose counts were not read again
        if item_id in index and item_id not in plan.item_interactions:
            popularity[index[item_id]] += delta
    lineage = {
        **plan.lineage,
        "parent": plan.parent,
        "since": plan.since,
        "data_until": plan.data_until,
        "items": len(plan.items),
        "users": len(plan.users),
        "new_interactions": plan.new_interactions,
        "partitions": plan.partitions,
    }
    artifacts = replace(
        parent,
        version=version,
        item_embeddings=target,
        item_context_embeddings=context,
        components=components,
        popularity=popularity,
        parameters={**parent.parameters, "incremental": lineage},
    )
    return artifacts, users


def publish_child(
    gateway: GraphGateway,
    settings: Settings,
    plan: UpdatePlan,
    artifacts: ModelArtifacts,
    users: Mapping[str, np.ndarray],
) -> bool:
    """Write the child version and switch to it (only while its parent is active); True when switched.

    Raises :class:`~workers.training.publish.VersionPublished` when the child settled before this
    run claimed it, :class:`~workers.training.publish.VersionSuperseded` when another run of the
    merge claimed it since (as :func:`workers.training.publish.write_back`).
    """
    owner = new_owner()
    claim_child(gateway, settings, plan, artifacts, owner)
    return write_child(gateway, settings, plan, artifacts, users, owner)


def claim_child(
    gateway: GraphGateway, settings: Settings, plan: UpdatePlan, artifacts: ModelArtifacts, owner: str
) -> None:
    """Stage the child's artifact and fold-in basis, claim the child (CREATE_CHILD_VERSION) for the
    run of the merge holding ``owner`` and move the files into place
    (:func:`workers.training.publish.claim`, which raises
    :class:`~workers.training.publish.VersionPublished` when the child settled)."""
    folder = models_dir(settings.data_dir)
    version = artifacts.version
    parent_basis = basis_path(folder, plan.parent_artifact)
    basis = None
    if parent_basis.exists():
        basis = FoldInBasis.load(parent_basis)
        basis.item_embeddings = artifacts.item_embeddings
    staged = stage(artifacts, basis, folder, owner)
    claim(
        gateway,
        CREATE_CHILD_VERSION,
        {
            "id": version,
            "owner": owner,
            "parent": plan.parent,
            "now": int(time.time() * 1000),
            "data_until": plan.data_until,
            "parameters": json.dumps(artifacts.parameters, default=str),
            "counts": plan.parent_counts,
            "metrics": json.dumps({"incremental": artifacts.parameters["incremental"]}, default=str),
            "artifact": artifact_name(version),
        },
        staged,
    )


def write_child(
    gateway: GraphGateway,
    settings: Settings,
    plan: UpdatePlan,
    artifacts: ModelArtifacts,
    users: Mapping[str, np.ndarray],
    owner: str,
) -> bool:
    """The claimed child's write-back for the run of the merge holding ``owner``: its touched
    rows, its parent's other EMBEDDING and HAS_TOPIC relationships (:func:`copy_parent`), the
    ``ready`` mark and the switch; True when switched. Raises
    :class:`~workers.training.publish.VersionSuperseded` when another run claimed the child since."""
    version = artifacts.version
    batch = max(1, settings.embedding_batch)
    index = {item_id: k for k, item_id in enumerate(artifacts.item_ids)}
    touched_items = [i for i in plan.items if i in index]
    written = {
        Label.ITEM: (touched_items, [artifacts.item_embeddings[index[i]] for i in touched_items]),
        Label.USER: (list(users), list(users.values())),
    }
    for label, (ids, vectors) in written.items():
        for start in range(0, len(ids), batch):
            write_embeddings(
                gateway,
                label,
                version,
                owner,
                ids[start : start + batch],
                vectors[start : start + batch],
                plan.planned_at,
            )
    copy_parent(
        gateway, plan.parent, version, owner, {label: ids for label, (ids, _) in written.items()}, batch
    )
    mark_ready(gateway, version, owner, [])
    done = gateway.write(
        ACTIVATE_CHILD_VERSION,
        {"id": version, "parent": plan.parent, "owner": owner, "now": int(time.time() * 1000)},
    )
    if done.rows and not done.rows[0]["owned"]:
        raise VersionSuperseded(version)
    return bool(done.rows and done.rows[0]["activated"] == 1)


def copy_parent(
    gateway: GraphGateway,
    parent: str,
    version: str,
    owner: str,
    fresh: Mapping[Label, Iterable[str]],
    batch: int,
) -> None:
    """Copy ``parent``'s EMBEDDING relationships (but those of the ``fresh`` ids the child wrote
    itself, per label) and HAS_TOPIC relationships onto the child ``version``, ``batch`` ids per
    write, for the run of the merge holding ``owner``. Raises
    :class:`~workers.training.publish.VersionSuperseded`, having copied nothing more, when another
    run of the merge claimed the child since."""
    for label, statement in COPY_EMBEDDINGS.items():
        own = set(fresh.get(label, ()))
        ids = sorted(
            r["id"] for r in gateway.read(EMBEDDING_IDS[label], {"version": parent}) if r["id"] not in own
        )
        for start in range(0, len(ids), batch):
            params = {"parent": parent, "id": version, "owner": owner, "ids": ids[start : start + batch]}
            owned(gateway.write(statement, params), version)
    owned(gateway.write(COPY_TOPICS, {"parent": parent, "id": version, "owner": owner}), version)


# --- the whole update -------------------------------------------------------------------------------


def load_parent(settings: Settings, plan: UpdatePlan) -> ModelArtifacts:
    """The parent version's artifacts (from the shared models folder)."""
    return load_artifacts(models_dir(settings.data_dir) / plan.parent_artifact)


def run_partition(gateway: GraphGateway, settings: Settings, plan: UpdatePlan, part: int) -> PartitionRows:
    """Pull and refresh one partition (a Celery task's body)."""
    items, _users = plan.seeds(part)
    # every touched user's history: the new examples, which every row's step reads
    rows = pull_partition(gateway, items, plan.users)
    return refresh_partition(
        load_parent(settings, plan),
        plan,
        part,
        rows,
        now_ms=int(time.time() * 1000),
        half_life_ms=settings.half_life_ms,
        damping=settings.incremental_damping,
    )


def finish_update(
    gateway: GraphGateway, settings: Settings, plan: UpdatePlan, parts: Sequence[PartitionRows], version: str
) -> dict[str, Any]:
    """Merge the partitions' rows, publish the child and switch to it (the chord's callback)."""
    published = already_published(gateway, version)
    if published is not None:
        return published
    if not any(part.item_ids or part.user_ids for part in parts):
        return nothing_to_train(plan)
    started = time.perf_counter()
    parent = load_parent(settings, plan)
    # Counted again now, not at planning: a user erased while the partitions ran has no EMBEDDING
    # edge on the child for the erasure to adjust it through, so the child must not count them.
    plan = replace(plan, item_interactions=item_interactions(gateway, plan.items, plan.data_until))
    adjustments = {
        r["id"]: r["delta"] for r in gateway.read(POPULARITY_ADJUSTMENTS, {"version": plan.parent})
    }
    artifacts, users = merge(parent, plan, parts, version, adjustments)
    timings = {"merge_s": time.perf_counter() - started}
    # A user erased since planning (an erasure whose job queue did not answer withdraws no plan)
    # gets no vector (WRITE_EMBEDDINGS checks the tombstones): the partitions may have read their
    # history before it was deleted, and events after the erasure may have made the user again.
    try:
        activated = publish_child(gateway, settings, plan, artifacts, users)
    except VersionSuperseded:  # another run of this merge took the child over and reports it
        return {"version": version, "superseded": True}
    except VersionPublished:  # another run of this merge published the child
        return already_published(gateway, version) or {"version": version, "already_published": True}
    timings["publish_s"] = time.perf_counter() - started - timings["merge_s"]
    removed = []
    if activated:
        removed = collect_unused_versions(gateway, settings, KEEP_VERSIONS)
    return {
        "timings": {name: round(value, 3) for name, value in timings.items()},
        "version": version,
        "parent": plan.parent,
        "activated": activated,
        "items": len(plan.items),
        "users": len(plan.users),
        "new_interactions": plan.new_interactions,
        "drift": plan.lineage["drift"],
        "removed_versions": removed,
    }


def nothing_to_train(plan: UpdatePlan) -> dict[str, Any]:
    """The result of an update whose touched interactions give no row to refresh: every one is on an
    item the parent has never seen, by a user with no history of items it knows. Its child would be
    the parent bit for bit, so none is published."""
    return {
        "version": None,
        "parent": plan.parent,
        "reason": f"nothing to train on: the {plan.new_interactions} interactions since {plan.since} are "
        f"all on items {plan.parent} has never seen, by users it knows no items of (new items are left "
        "to fold-in; new users need no row)",
        "items": len(plan.items),
        "users": len(plan.users),
        "new_interactions": plan.new_interactions,
    }


def run_incremental(
    gateway: GraphGateway,
    settings: Settings,
    version: str,
    *,
    partitions: int | None = None,
    since: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole update in this process, partitions one after another (``kgrec update --sync``).

    ``progress(stage, fraction)`` is called as each stage starts (plan, each partition, publish).
    """
    report = progress or (lambda _stage, _fraction: None)
    started = time.perf_counter()
    report("plan", 0.0)
    plan = plan_update(gateway, partitions or settings.incremental_partitions, since)
    if plan is None:
        return {"version": None, "reason": "no active version, or nothing touched since it"}
    planned = time.perf_counter() - started
    parts = []
    for part in range(plan.partitions):
        # the partitions are nearly all of an update's time (README, "Incremental updates")
        report(f"partition {part + 1}/{plan.partitions}", 0.05 + 0.9 * part / plan.partitions)
        parts.append(run_partition(gateway, settings, plan, part))
    partitions_s = time.perf_counter() - started - planned
    report("publish", 0.95)
    summary = finish_update(gateway, settings, plan, parts, version)
    report("done", 1.0)
    timings = {
        "plan_s": round(planned, 3),
        "partitions_s": round(partitions_s, 3),
        **summary.get("timings", {}),
    }
    return {**summary, "timings": timings, "seconds": round(time.perf_counter() - started, 3)}
