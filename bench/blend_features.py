"""Experiment, validation only: what one blend feature more or less does to the served blend.

Judged without touching the test items: for each data set, seed and variant (with and without
knowledge) the graph model and the signals are trained on the ``kgrec evaluate`` split with each
user's latest training interaction held out, and the validation users are split in two folds.
Each blend is fitted on one fold (``fit_blend``, as training fits it) and scored on the other
(full ranking through the Recommender), and the other way round: out-of-fold validation
Recall@10/20 and NDCG@10/20 for every validation user. Out of fold are the blend's weights and
decay; the graph model's early stopping and EASE's λ are chosen on every validation user, as
training chooses them, alike for every blend and variant. Each user's figures are averaged over the
seeds, and the comparisons are paired over the users (:func:`comparisons`: each blend against the
first, each variant against the first; a 95% bootstrap interval and the paired t-test p). The
blends:

- ``served``: the features training fits today, less the topic-interest signal (no topics are
  mined here: ``train_model`` mines them from item text, and the fit keeps them only on evidence);
- ``-NAME``: the same without the registered signal NAME;
- ``bagged``: the served features, each fold's weights at each decay the mean of :data:`BAGS`
  ascents on bootstrap resamples of its users, the evidence rule applied to that mean
  (:func:`bagged_fit_at_decay`). Why: the single fit's in-fold NDCG@10 (the mean of its two folds)
  runs 0.006–0.023 above its out-of-fold figure, and its weights differ from fold to fold;
- ``fit@K``: the served features, fitted on validation NDCG@K instead of NDCG@10 (``fit@20``,
  ``fit@50``), so that the targets ranked 11th to Kth count too; a fold's record then holds
  ``fit_ndcg@K``;
- ``+popularity-damped``: one more feature, the graph model's score damped by the item's
  training popularity, ``(profile · E_ctx) · (g ⊙ E)ᵀ`` with ``g = 1 / sqrt(1 + popularity)``, so
  that the fit can give the graph model ``w + w_tail · g(item)``. On MovieLens the knowledge
  variant gains on little-rated films and loses on popular ones (``bench.paired_runs
  --by-popularity``), and the served blend gives the graph model one weight for every item.

    .venv/bin/python -m bench.blend_features --dataset movielens --datasets-dir ../shared/data
        [--seeds 7,8,9] [--variants knowledge,no-knowledge] [--blends served,+popularity-damped]
        [--save NAME]    (blends: served, +popularity-damped, bagged, fit@20, fit@50, -NAME)
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from bench.common import print_and_save, seeded_experiment_parser, validation_hold_out
from kgrec.item_graphs import popularity
from kgrec.recommender import EMBEDDING, HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import build_signals, evidence_names, signals_for
from workers.training import blend_fit
from workers.training.config import TrainConfig
from workers.training.kg_model import train_kg_model
from workers.training.metrics import confidence, per_user_metrics
from workers.training.pipeline import fit_features, tune_signals, user_histories

EMBEDDING_TAIL = "embedding_tail"
VARIANTS = ("knowledge", "no-knowledge")
FIXED_BLENDS = ("served", "+popularity-damped", "bagged", "fit@20", "fit@50")  # and "-NAME"
BAGS = 10  # the bootstrap fits that the ``bagged`` blend averages
BAG_SEED = 0
KS = (10, 20)
METRICS = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in KS)
KEYS = ("recall@20", "ndcg@10")


def damping(popularity: np.ndarray) -> np.ndarray:
    """g: 1 for an item nobody rated, falling as 1/sqrt(1 + ratings)."""
    return (1.0 / np.sqrt(1.0 + np.maximum(popularity, 0.0))).astype(np.float32)


@contextlib.contextmanager
def tail_feature() -> Iterator[None]:
    """``fit_blend`` scores :data:`EMBEDDING_TAIL` (the damped graph-model score) meanwhile."""
    dense = blend_fit._dense

    def with_tail(
        profiles: sp.csr_matrix, last: sp.csr_matrix, artifacts: ModelArtifacts, name: str
    ) -> np.ndarray:
        if name != EMBEDDING_TAIL:
            return dense(profiles, last, artifacts, name)
        return dense(profiles, last, artifacts, EMBEDDING) * damping(artifacts.popularity)[None, :]

    blend_fit._dense = with_tail
    try:
        yield
    finally:
        blend_fit._dense = dense


@contextlib.contextmanager
def fit_procedure(blend: str) -> Iterator[None]:
    """``fit_blend`` fits as ``blend`` says meanwhile: bagged (``bagged``), on NDCG@K (``fit@K``),
    or as training does (any other blend)."""
    patched: dict[str, Any] = {}
    if blend == "bagged":
        patched["_fit_at_decay"] = bagged_fit_at_decay
    elif blend.startswith("fit@"):
        patched["CUTOFF"] = int(blend[len("fit@") :])
    saved = {name: getattr(blend_fit, name) for name in patched}
    for name, value in patched.items():
        setattr(blend_fit, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(blend_fit, name, value)


def bagged_weights(features: blend_fit._Features, names: Sequence[str], held: frozenset[int]) -> np.ndarray:
    """The mean of :data:`BAGS` coordinate ascents (``blend_fit._ascend``, from the best single free
    feature), each on a bootstrap resample of the users, with the features in ``held`` at 0.

    The resamples are drawn from :data:`BAG_SEED`, so every decay and every refit sees the same
    ones (and every experiment seed the same index patterns; its folds hold other users). Each
    ascent's weights are made to sum to 1 before they are averaged (a blend ranks the same at any
    scale), and the mean is rescaled so that its largest weight is 1, as the ascent's anchor.
    """
    rng = np.random.default_rng(BAG_SEED)
    n_users = features.target.size
    free = [f for f in range(len(names)) if f not in held]
    total = np.zeros(len(names), dtype=np.float64)
    for _bag in range(BAGS):
        rows = rng.integers(0, n_users, n_users)
        sample = replace(
            features, scaled=features.scaled[rows], prior=features.prior[rows], target=features.target[rows]
        )
        anchor = max(free, key=lambda f: blend_fit._ndcg(sample, np.eye(len(names))[f]))
        weights, _ = blend_fit._ascend(sample, names, anchor, held)
        total += weights / weights.sum()
    return total / total.max()


def bagged_fit_at_decay(
    features: blend_fit._Features, names: Sequence[str], _single: dict[str, float]
) -> tuple[np.ndarray, float, dict[str, float]]:
    """``blend_fit._fit_at_decay`` bagged: :func:`bagged_weights`, scored on every user, with the
    fit's evidence rule applied to the bagged blend. A signal that needs evidence and got a weight
    keeps it only if the bagged blend beats the bagged blend refitted without it, user by user over
    the fold's own users (one-sided paired t-test, p < ``blend_fit.EVIDENCE_P``); a bootstrap
    resample repeats users, so the test is not run inside a resample."""
    held: set[int] = set()
    evidence: dict[str, float] = {}
    weights = bagged_weights(features, names, frozenset())
    for f, name in enumerate(names):
        if name not in evidence_names() or not weights[f] or len(held) + 1 == len(names):
            continue
        without = bagged_weights(features, names, frozenset(held | {f}))
        evidence[name] = blend_fit._paired_p(
            blend_fit._gains(features, weights), blend_fit._gains(features, without)
        )
        if evidence[name] >= blend_fit.EVIDENCE_P:
            held.add(f)
            weights = without
    return weights, blend_fit._ndcg(features, weights), evidence


def served(artifacts: ModelArtifacts, weights: dict[str, float], decay: float) -> ModelArtifacts:
    """The fitted blend as the Recommender serves it: ``w + w_tail · g`` folded into the item embeddings."""
    weights = {**artifacts.weights, **weights}  # a feature left out of the blend weighs 0
    tail = weights.pop(EMBEDDING_TAIL, 0.0)
    plain = weights.get(EMBEDDING, 0.0)
    context = artifacts.item_context_embeddings
    context = artifacts.item_embeddings if context is None else context
    scale = plain + tail * damping(artifacts.popularity)
    return replace(
        artifacts,
        item_embeddings=(artifacts.item_embeddings * scale[:, None]).astype(np.float32),
        item_context_embeddings=context,
        weights={**weights, EMBEDDING: 1.0 if (plain or tail) else 0.0},
        recency_decay=decay,
    )


def out_of_fold(
    artifacts: ModelArtifacts,
    names: Sequence[str],
    histories: Sequence[Sequence[HistoryEntry]],
    targets: dict[int, int],
    decays: Sequence[float],
    seed: int,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Two-fold cross-fit of the blend on the validation users: each user's out-of-fold metrics
    (metric -> values in ``sorted(targets)`` order) and each fold's fit."""
    users = np.random.default_rng(seed).permutation(sorted(targets))
    folds = [sorted(users[: users.size // 2].tolist()), sorted(users[users.size // 2 :].tolist())]
    position = {u: n for n, u in enumerate(sorted(targets))}
    per_user = {key: np.zeros(len(targets)) for key in METRICS}
    fits = []
    for k in range(2):
        fit_users, score_users = folds[k], folds[1 - k]
        fitted = blend_fit.fit_blend(
            artifacts, names, histories, {u: targets[u] for u in fit_users}, decays=decays, seed=seed
        )
        fits.append(
            {
                "weights": {n: round(w, 6) for n, w in fitted.weights.items() if w},
                "decay": fitted.recency_decay,
                f"fit_ndcg@{blend_fit.CUTOFF}": round(fitted.ndcg, 5),  # the fit's own objective
                # the paired test's p for each signal that had to earn its place and got a weight
                "evidence_p": {n: round(p, 4) for n, p in fitted.evidence.items()},
            }
        )
        recommender = Recommender(served(artifacts, fitted.weights, fitted.recency_decay))
        part = [histories[u] for u in score_users]
        exclude = [[h.item_id for h in history] for history in part]
        ranked = [[i for i, _ in row] for row in recommender.recommend(part, max(KS), exclude)]
        scored = per_user_metrics(ranked, [{artifacts.item_ids[targets[u]]} for u in score_users], KS)
        rows = [position[u] for u in score_users]
        for key in METRICS:
            per_user[key][rows] = scored[key]
    return per_user, fits


def paired(per_user: dict[str, dict[str, np.ndarray]], a: str, b: str) -> dict[str, Any]:
    """``a − b`` (two ``"variant, blend"`` keys) over the validation users, each user's metrics
    averaged over the seeds: the mean difference, its 95% bootstrap interval and the paired t-test p."""
    _, result = confidence({a: per_user[a], b: per_user[b]}, METRICS, reference=a)
    return {
        metric: {"diff": round(v["diff"], 5), "ci": [round(x, 5) for x in v["ci"]], "p": round(v["p"], 4)}
        for metric, v in result[b].items()
    }


def blend_features(names: Sequence[str], blend: str) -> list[str]:
    """The features of ``blend``: ``served`` (what training fits; ``bagged`` and ``fit@K`` fit the
    same features otherwise), ``+popularity-damped`` (and :data:`EMBEDDING_TAIL`) or ``-NAME``
    (without the feature NAME: a signal, or EMBEDDING)."""
    if blend == "+popularity-damped":
        return [*names, EMBEDDING_TAIL]
    if blend in FIXED_BLENDS:
        return list(names)
    if blend.startswith("-") and blend[1:] in names:
        return [n for n in names if n != blend[1:]]
    raise ValueError(f"unknown blend {blend!r} ({', '.join(FIXED_BLENDS)} or -FEATURE of {list(names)})")


def check_options(variants: Sequence[str], blends: Sequence[str]) -> None:
    """Refuse, before anything trains, a variant other than knowledge / no-knowledge and a ``-NAME``
    blend whose NAME no such variant can fit (a registered signal, or EMBEDDING)."""
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
        known = {s.name for s in signals_for(variant == "knowledge")} | {EMBEDDING}
        for blend in blends:
            if blend.startswith("-") and blend[1:] not in known:
                raise ValueError(f"blend {blend!r}: variant {variant} has no feature {blend[1:]!r}")
            if not blend.startswith("-") and blend not in FIXED_BLENDS:
                raise ValueError(f"unknown blend {blend!r} ({', '.join(FIXED_BLENDS)} or -FEATURE)")


def run(
    name: str, datasets_dir: Path, seeds: list[int], variants: list[str], blends: list[str]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Every variant and blend at every seed on one data set's validation hold-out: a row each, and
    each ``"variant, blend"``'s per-user out-of-fold metrics averaged over the seeds."""
    rows = []
    per_user: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="kgrec-blend-features-") as tmp:
        graph, text, fit, targets = validation_hold_out(name, datasets_dir, Path(tmp))
        histories = user_histories(fit)
        counts = popularity(fit)
        for seed in seeds:
            # EASE's λ is chosen on the interactions alone: once per seed serves every variant
            tuned, tuned_fit, _ = tune_signals(graph, TrainConfig(seed=seed))
            for variant in variants:
                started = time.perf_counter()
                knowledge = variant == "knowledge"
                config = TrainConfig(use_knowledge=knowledge, seed=seed)
                trained = train_kg_model(fit, config, "cpu", text, validation=targets)
                train_seconds = time.perf_counter() - started
                components = build_signals(fit, knowledge, True, True, tuned, prebuilt=tuned_fit)
                artifacts = ModelArtifacts(
                    version="",
                    item_ids=fit.item_ids,
                    item_embeddings=trained.items,
                    components=components,
                    weights={n: 0.0 for n in components},
                    recency_decay=1.0,
                    popularity=counts,
                    item_context_embeddings=trained.item_context,
                )
                names = fit_features(list(components), config)
                decays = sorted({*blend_fit.DECAYS, round(trained.decay, 3)})
                for blend in blends:
                    started = time.perf_counter()
                    with tail_feature(), fit_procedure(blend):
                        users, fits = out_of_fold(
                            artifacts, blend_features(names, blend), histories, targets, decays, seed
                        )
                    key = f"{variant}, {blend}"
                    summed = per_user.setdefault(key, {m: np.zeros(len(targets)) for m in METRICS})
                    for metric in METRICS:
                        summed[metric] += users[metric] / len(seeds)
                    rows.append(
                        {
                            "dataset": name,
                            "seed": seed,
                            "variant": variant,
                            "blend": blend,
                            **{m: round(float(users[m].mean()), 5) for m in METRICS},
                            "folds": fits,
                            "train_s": round(train_seconds, 1),  # the graph model, shared by the blends
                            "blend_s": round(
                                time.perf_counter() - started, 1
                            ),  # both folds' fits and scoring
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    return rows, per_user


def comparisons(variants: Sequence[str], blends: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs compared: every other blend against the first, within each variant; then the first
    variant against every other, at each blend."""
    pairs = [(f"{v}, {b}", f"{v}, {blends[0]}") for v in variants for b in blends[1:]]
    return pairs + [(f"{variants[0]}, {b}", f"{v}, {b}") for b in blends for v in variants[1:]]


def main() -> None:
    """Parse the options, run, print the means per variant and blend and the paired comparisons."""
    parser = seeded_experiment_parser(__doc__.splitlines()[0], "blend-features")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--blends", default="served,+popularity-damped")
    args = parser.parse_args()
    variants, blends = args.variants.split(","), args.blends.split(",")
    check_options(variants, blends)
    seeds = args.seeds
    rows, per_user = run(args.dataset, args.datasets_dir, seeds, variants, blends)
    means = {}
    for key, users in per_user.items():
        means[key] = {m: round(float(users[m].mean()), 5) for m in METRICS}
        print(f"{key:<40} R@20 {means[key]['recall@20']:.4f}  N@10 {means[key]['ndcg@10']:.4f}")
    pairs = {}
    for a, b in comparisons(variants, blends):
        pairs[f"{a} − {b}"] = result = paired(per_user, a, b)
        print(
            f"{a} − {b}: "
            + "; ".join(f"{m} {result[m]['diff']:+.4f} {result[m]['ci']} p={result[m]['p']}" for m in KEYS)
        )
    print_and_save(
        {"dataset": args.dataset, "seeds": seeds, "means": means, "paired": pairs, "rows": rows},
        "blend-features",
        args.save,
    )


if __name__ == "__main__":
    main()
