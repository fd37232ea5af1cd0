"""Fit the served blend on the validation hold-out: every signal's weight and the recency decay.

The procedure is the same on every data set and uses nothing but the
validation targets (each user's latest training interaction, held out):

1. Sample up to :data:`MAX_FIT_USERS` validation users (fixed seed).
2. For each recency decay of :data:`DECAYS`, build the users' served profiles
   and score every item with every eligible feature: each registered signal
   (``profile · S``; a last-item signal ``last · S``) and the graph model (``(profile · E_ctx) · Eᵀ``). Each
   user's candidates are the union of every feature's top :data:`CANDIDATES`
   unseen items; the per-feature scores of the candidates are kept, so a blend
   is scored without rebuilding anything (a validation item outside every
   feature's top list counts as a miss). Users are scored in chunks, so that the
   dense scores held at once stay under :data:`CHUNK_BYTES` at any catalogue size.
3. Each feature is put on a common scale (the mean absolute score of its own top lists).
4. Coordinate ascent on validation NDCG@10: start from the best single feature
   at weight 1; then, in rounds, give each other feature the weight from
   ``{0} ∪ GRID`` (a log grid, 10⁻³ … 10²) that helps most, keeping a change
   only when it improves NDCG@10; stop after a round without a change or
   :data:`MAX_ROUNDS`. A feature that helps nowhere keeps weight 0.
5. A signal that must earn its place (:attr:`kgrec.signals.Signal.needs_evidence`: topic
   interests) and got a weight is tested: the blend is refitted at the same decay with that
   signal held at 0, and the signal stays only if the blend with it beats the blend without it
   user by user (one-sided paired t-test over the sampled validation users, p <
   :data:`EVIDENCE_P`). Otherwise the refitted blend is the fit at that decay.
6. Keep the decay whose fitted blend scores best (ties: the earlier decay).

The fitted weights are the grid values divided by each feature's scale, so the
:class:`~kgrec.recommender.Recommender` uses them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
from scipy import stats

from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import EMBEDDING, evidence_names, last_item_names

DECAYS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.85, 1.0)
GRID: tuple[float, ...] = tuple(float(10 ** (k / 4)) for k in range(-12, 9))  # 1e-3 … 1e2
CANDIDATES = 50
MAX_FIT_USERS = 4_000
MAX_ROUNDS = 4
MIN_GAIN = 1e-6
CUTOFF = 10
EVIDENCE_P = 0.05  # a signal that needs evidence stays only on a paired gain this significant
CHUNK_BYTES = 256 * 2**20  # the fit's dense scores (users × items × features) held at once
_TRIAL_ELEMENTS = 32 * 2**20  # blend scores (trials × users × candidates) the ascent holds at once


@dataclass
class BlendFit:
    """The fitted blend and what it scored on validation."""

    weights: dict[str, float]  # every eligible feature (signals and EMBEDDING); 0.0 = left out
    recency_decay: float
    ndcg: float  # validation NDCG@10 of the fit (over the sampled users, candidate lists)
    single: dict[str, float]  # each feature alone, at the chosen decay
    # For each signal that needs evidence and got a weight at the chosen decay: the p-value of the
    # paired test that kept (p < EVIDENCE_P) or dropped it.
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass
class _Features:
    scaled: np.ndarray  # (users, candidates, features) score / feature scale; 0 beyond a user's list
    prior: np.ndarray  # (users, candidates) the popularity tie-breaker; -inf beyond a user's list
    target: np.ndarray  # (users,) the target's candidate column, -1 when not a candidate
    scale: np.ndarray  # (features,)


def _dense(profiles: sp.csr_matrix, last: sp.csr_matrix, artifacts: ModelArtifacts, name: str) -> np.ndarray:
    if name in last_item_names():
        return np.asarray((last @ artifacts.components[name]).todense(), dtype=np.float32)
    if name == EMBEDDING:
        context = artifacts.item_context_embeddings
        context = artifacts.item_embeddings if context is None else context
        return np.asarray((profiles @ context) @ artifacts.item_embeddings.T, dtype=np.float32)
    return np.asarray((profiles @ artifacts.components[name]).todense(), dtype=np.float32)


def chunk_rows(n_items: int, n_features: int) -> int:
    """How many users' dense score rows (a float32 row per item and feature) fit in :data:`CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (4 * max(n_items, 1) * max(n_features, 1)))


def _features(
    artifacts: ModelArtifacts,
    names: Sequence[str],
    histories: Sequence[Sequence[HistoryEntry]],
    targets: np.ndarray,
    decay: float,
) -> _Features:
    scorer = Recommender(
        replace(artifacts, weights={n: 0.0 for n in artifacts.components}, recency_decay=decay)
    )
    profiles = scorer.profiles(histories)
    last = scorer.profiles(histories, last_only=True)
    n_users = len(histories)
    k = min(CANDIDATES, scorer.n_items)
    # Users in chunks, so that the dense scores held at once stay within CHUNK_BYTES at any shop size;
    # each feature's dense scores are computed once per chunk and serve both its top list and the
    # candidates' scores.
    step = chunk_rows(scorer.n_items, len(names))
    total = np.zeros(len(names), dtype=np.float64)  # Σ |score| over each feature's own top lists
    count = np.zeros(len(names), dtype=np.int64)
    columns_parts: list[np.ndarray] = []
    raw_parts: list[np.ndarray] = []
    for start in range(0, n_users, step):
        part = slice(start, min(start + step, n_users))
        columns, raw = _chunk_candidates(profiles[part], last[part], artifacts, names, k, total, count)
        columns_parts.append(columns)
        raw_parts.append(raw)
    scale = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    width = max(c.shape[1] for c in columns_parts)
    columns = np.full((n_users, width), -1, dtype=np.int64)
    scaled = np.zeros((n_users, width, len(names)), dtype=np.float32)
    row = 0
    for part_columns, part_raw in zip(columns_parts, raw_parts, strict=True):
        rows, cols = part_columns.shape
        columns[row : row + rows, :cols] = part_columns
        scaled[row : row + rows, :cols] = part_raw / scale
        row += rows
    valid = columns >= 0
    prior = np.where(valid, scorer.prior[np.where(valid, columns, 0)], -np.inf).astype(np.float32)
    hit = (columns == targets[:, None]) & valid
    target = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    return _Features(scaled, prior, target, scale)


def _chunk_candidates(
    profiles: sp.csr_matrix,
    last: sp.csr_matrix,
    artifacts: ModelArtifacts,
    names: Sequence[str],
    k: int,
    total: np.ndarray,
    count: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of users: their candidate columns (-1 padded) and each feature's raw score of them.

    Adds each feature's |score| over its own top lists to ``total`` and their number to ``count``
    (its scale is their mean over every chunk: adding a feature never rescales another).
    """
    seen_rows = np.repeat(np.arange(profiles.shape[0]), np.diff(profiles.indptr))
    seen_cols = profiles.indices
    dense_scores = []
    tops = []
    for f, name in enumerate(names):
        dense = _dense(profiles, last, artifacts, name)
        kept = dense[seen_rows, seen_cols]
        dense[seen_rows, seen_cols] = -np.inf  # seen items are never candidates
        top = np.argpartition(-dense, k - 1, axis=1)[:, :k]
        values = np.abs(np.take_along_axis(dense, top, axis=1))
        finite = values[np.isfinite(values)]
        total[f] += float(finite.sum(dtype=np.float64))
        count[f] += finite.size
        dense[seen_rows, seen_cols] = kept
        dense_scores.append(dense)
        tops.append(top)
    union = [np.unique(np.concatenate([top[u] for top in tops])) for u in range(profiles.shape[0])]
    width = max(len(c) for c in union)
    columns = np.full((len(union), width), -1, dtype=np.int64)
    for u, c in enumerate(union):
        columns[u, : len(c)] = c
    valid = columns >= 0
    safe = np.where(valid, columns, 0)
    rows = np.arange(len(union))[:, None]
    raw = np.zeros((len(union), width, len(names)), dtype=np.float32)
    for f, dense in enumerate(dense_scores):
        raw[:, :, f] = np.where(valid, dense[rows, safe], 0.0)
    return columns, raw


def _gains(features: _Features, grid_weights: np.ndarray) -> np.ndarray:
    """Each sampled user's validation NDCG@10 under the blend with ``grid_weights`` (common scale)."""
    blend = features.prior + features.scaled @ grid_weights.astype(np.float32)
    rows = np.flatnonzero(features.target >= 0)
    own = blend[rows, features.target[rows]]
    # Ties count against the target: a blend gains nothing from scores that do not separate.
    higher = (blend[rows] >= own[:, None]).sum(axis=1) - 1
    gains = np.zeros(features.target.size, dtype=np.float64)
    gains[rows] = _gain_at(higher)
    return gains


def _gain_at(higher: np.ndarray) -> np.ndarray:
    """NDCG@10's gain of a target that ``higher`` candidates outrank (ties count against it)."""
    return np.where(higher < CUTOFF, 1.0 / np.log2(higher + 2.0), 0.0)


def _ndcg(features: _Features, grid_weights: np.ndarray) -> float:
    """Validation NDCG@10 of the blend with ``grid_weights`` (on the common scale)."""
    return float(_gains(features, grid_weights).sum() / max(features.target.size, 1))


def _ndcg_varying(features: _Features, weights: np.ndarray, f: int, values: Sequence[float]) -> np.ndarray:
    """Validation NDCG@10 of the blend ``weights`` with feature ``f``'s weight set to each of ``values``.

    The same scores as :func:`_ndcg` of each trial, without re-weighing the other features per
    trial: their part of the blend is computed once, and the trials are scored together.
    """
    others = weights.astype(np.float32)
    others[f] = 0.0
    rows = np.flatnonzero(features.target >= 0)
    base = (features.prior + features.scaled @ others)[rows]
    column = features.scaled[rows, :, f]
    at_target = (np.arange(rows.size), features.target[rows])
    own_base, own_column = base[at_target], column[at_target]
    scores = np.zeros(len(values), dtype=np.float64)
    per_value = max(base.size, 1)
    step = max(1, _TRIAL_ELEMENTS // per_value)
    for start in range(0, len(values), step):
        trial = np.asarray(values[start : start + step], dtype=np.float32)[:, None]
        own = own_base[None, :] + trial * own_column[None, :]  # (trials, users)
        blend = base[None] + trial[:, :, None] * column[None]  # (trials, users, candidates)
        higher = (blend >= own[:, :, None]).sum(axis=2) - 1
        scores[start : start + len(trial)] = _gain_at(higher).sum(axis=1) / max(features.target.size, 1)
    return scores


def _ascend(
    features: _Features, names: Sequence[str], anchor: int, held: frozenset[int] = frozenset()
) -> tuple[np.ndarray, float]:
    """Coordinate ascent from ``anchor`` at weight 1; the features in ``held`` stay at 0."""
    weights = np.zeros(len(names), dtype=np.float64)
    weights[anchor] = 1.0
    best = _ndcg(features, weights)
    for _round in range(MAX_ROUNDS):
        changed = False
        for f in range(len(names)):
            if f == anchor or f in held:
                continue
            values = [value for value in (0.0, *GRID) if value != weights[f]]
            # Tried in grid order, each kept only if it beats the best so far.
            for value, score in zip(values, _ndcg_varying(features, weights, f, values), strict=True):
                if score > best + MIN_GAIN:
                    best, changed = float(score), True
                    weights[f] = value
        if not changed:
            break
    return weights, best


def fit_blend(
    artifacts: ModelArtifacts,
    names: Sequence[str],
    histories: Sequence[Sequence[HistoryEntry]],
    targets: dict[int, int],
    *,
    decays: Sequence[float] = DECAYS,
    seed: int = 7,
    max_users: int = MAX_FIT_USERS,
) -> BlendFit:
    """Fit the weights of ``names`` (signals of ``artifacts`` and/or EMBEDDING) and the decay.

    ``histories`` are the training histories (validation items removed) of every
    user; ``targets`` maps a user index to their held-out validation item index.
    """
    if not names:
        raise ValueError("fit_blend needs at least one feature to weigh")
    users = sorted(targets)
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    chosen = [histories[u] for u in users]
    wanted = np.array([targets[u] for u in users], dtype=np.int64)
    best: BlendFit | None = None
    for decay in decays:
        features = _features(artifacts, names, chosen, wanted, decay)
        single = {name: _ndcg(features, np.eye(len(names))[f]) for f, name in enumerate(names)}
        grid_weights, score, evidence = _fit_at_decay(features, names, single)
        if best is None or score > best.ndcg + MIN_GAIN:
            fitted = {
                name: float(grid_weights[f] / features.scale[f]) if grid_weights[f] else 0.0
                for f, name in enumerate(names)
            }
            best = BlendFit(fitted, float(decay), score, single, evidence)
    assert best is not None
    return best


def _fit_at_decay(
    features: _Features, names: Sequence[str], single: dict[str, float]
) -> tuple[np.ndarray, float, dict[str, float]]:
    """The ascent's weights at one decay, each signal that needs evidence kept only on a paired gain."""
    held: set[int] = set()
    evidence: dict[str, float] = {}

    def ascend() -> tuple[np.ndarray, float]:
        free = [f for f in range(len(names)) if f not in held]
        anchor = max(free, key=lambda f: single[names[f]])  # the first best, as np.argmax picks
        return _ascend(features, names, anchor, frozenset(held))

    weights, score = ascend()
    for f, name in enumerate(names):
        if name not in evidence_names() or not weights[f] or len(held) + 1 == len(names):
            continue
        held.add(f)
        without, without_score = ascend()
        p = _paired_p(_gains(features, weights), _gains(features, without))
        evidence[name] = p
        if p < EVIDENCE_P:
            held.discard(f)
        else:
            weights, score = without, without_score
    return weights, score, evidence


def _paired_p(with_signal: np.ndarray, without: np.ndarray) -> float:
    """One-sided paired t-test p-value that ``with_signal`` beats ``without`` (1.0 when no user differs)."""
    if np.array_equal(with_signal, without):
        return 1.0
    p = float(stats.ttest_rel(with_signal, without, alternative="greater").pvalue)
    return p if np.isfinite(p) else 1.0
