"""``kgrec evaluate``: full-ranking offline evaluation on real data, through the serving code path.

Protocol:
- ``leave-last-out``: the item of each user's last interaction (by ``ts``, else
  ``seq_index``; equal keys in a random order fixed by the seed) is the test item,
  and every record of that (user, item) pair leaves training (a view and a cart
  before the purchase would otherwise bring the test item into the user's history);
  everything else is imported into a scratch graph. Training holds out each user's
  latest remaining item for validation: kgrec's blend and
  recency decay, and every baseline's hyper-parameters and epoch count, are
  chosen on it. Test items are never read until the final ranking.
- ``given-split``: the data set's own train/test split (KGAT amazon-book).

Knowledge triples a test user stated themselves (``TripleRecord.user_id``/``ts``,
MovieLens tags) at or after their latest training interaction are dropped: that is
the interaction training holds out for validation, so neither the validation item
nor the test item is reachable through the user's own later statements. The
``interactions`` variant imports interactions only: items without brand,
categories, title or price, and no triples or entities, so no knowledge or text
can reach the model.

The scratch graph (its own FalkorDB graph, or the Neo4j database
``KGREC_EVAL_DATABASE``) is emptied, filled with the training part through
``kgrec import``'s code, pulled back with the training Cypher, and the model is
trained exactly as ``kgrec train`` does. Test users are then ranked over **all
items** by :class:`kgrec.recommender.Recommender`, excluding their training
items. Baselines are trained on the same pulled graph
(:mod:`workers.training.baselines`, :mod:`workers.training.ease`,
:mod:`workers.training.sasrec`), and every model gets per-user metrics, a 95%
bootstrap interval and a paired test against kgrec (:mod:`workers.training.metrics`).
"""

from __future__ import annotations

import fcntl
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kgrec.artifact_io import write_npz_atomically
from kgrec.config import Settings, checked_eval_database
from kgrec.datasets import (
    Dataset,
    EntityRecord,
    InteractionRecord,
    ItemRecord,
    TripleRecord,
    open_dataset,
    stated_before,
    training_triples,
)
from kgrec.datasets.kgat import KgatDataset
from kgrec.datasets.records import Problems
from kgrec.gateway import open_gateway
from kgrec.importer import import_dataset
from kgrec.item_graphs import histories as item_histories
from kgrec.item_graphs import interaction_matrix
from kgrec.item_graphs import popularity as item_popularity
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.recommender import HistoryEntry, Recommender
from kgrec.signals import COOCCURRENCE
from kgrec.topic_signal import TOPIC_INTERESTS
from kgrec.training_graph import TrainingGraph
from workers.training import baselines
from workers.training.config import TrainConfig
from workers.training.ease import fit_ease
from workers.training.holdout import validation_pairs
from workers.training.metrics import confidence, means, per_user_metrics
from workers.training.pipeline import fit_and_package, train_model, user_histories
from workers.training.sasrec import SasRecConfig
from workers.training.subgraph import pull
from workers.training.validation import validation_set

PROTOCOLS = ("leave-last-out", "given-split")
DEFAULT_MODELS = (
    "kgrec",
    "ease",
    "lightgcn",
    "bprmf",
    "itemknn",
    "itemknn_recency",
    "markov",
    "copurchase",
    "popularity",
)
ALL_MODELS = (*DEFAULT_MODELS, "sasrec")
# "kgrec": the served model alone (and, when it has topics, its blend refitted without them)
BASELINE_SETS = {"default": DEFAULT_MODELS, "all": ALL_MODELS, "kgrec": ("kgrec",)}
# kgrec with its blend refitted without the topic-interest signal (same graph model): reported
# next to kgrec, paired, when asked for (ablate_topics) and the trained model has topics.
NO_TOPICS = "kgrec_no_topics"
MODELS = DEFAULT_MODELS
# Baselines that read catalogue metadata; every other one sees interactions only.
METADATA_BASELINES = ("copurchase",)
# The seed of the split's tie-break between a user's interactions with equal order keys.
SPLIT_TIE_SEED = 7

Progress = Callable[[str], None]


def models_of(baseline_set: str) -> tuple[str, ...]:
    """The models ``--baselines`` names: a set of :data:`BASELINE_SETS`, or model keys separated by
    commas (kgrec always first, e.g. ``markov,ease`` → kgrec, markov, ease)."""
    if baseline_set in BASELINE_SETS:
        return BASELINE_SETS[baseline_set]
    keys = [key.strip() for key in baseline_set.split(",") if key.strip()]
    unknown = [key for key in keys if key not in ALL_MODELS]
    if not keys or unknown:
        raise ValueError(
            f"--baselines must be one of {', '.join(BASELINE_SETS)} or model keys separated by commas "
            f"({', '.join(ALL_MODELS)}), got {baseline_set!r}"
        )
    return ("kgrec", *dict.fromkeys(key for key in keys if key != "kgrec"))


def sasrec_config(config: TrainConfig) -> SasRecConfig:
    """SASRec's settings in a run of ``config``: the published ones, seeded with the run's seed
    (``--seed``), as every other model is."""
    return SasRecConfig(seed=config.seed)


@dataclass
class SplitDataset:
    """A data set with only its training interactions; the held-out ones are the targets.

    ``cutoff`` is, per test user, the time of their latest training interaction (the
    one training holds out for validation; never after their held-out ones):
    knowledge triples that user stated at or after it are held out too. Without
    ``knowledge`` the import sees items with their own text only (title, description),
    with no brand, category, triple or entity; with ``interactions_only`` it sees items
    by id alone.
    """

    base: Dataset
    train: list[InteractionRecord]
    test: dict[str, set[str]]
    cutoff: dict[str, int | None] = field(default_factory=dict)
    interactions_only: bool = False
    knowledge: bool = True

    @property
    def name(self) -> str:
        """The base data set's name."""
        return self.base.name

    @property
    def problems(self) -> Problems:
        """Rows the base reader skipped."""
        return self.base.problems

    @property
    def flags_bots(self) -> bool:
        """Whether the import flags bots, as for the base data set."""
        return self.base.flags_bots

    def items(self) -> Iterator[ItemRecord]:
        """Catalogue rows of the base data set (ids only when interactions-only; without brand
        and categories when without knowledge)."""
        if self.interactions_only:
            return (ItemRecord(item.item_id) for item in self.base.items())
        if not self.knowledge:
            return (
                ItemRecord(item.item_id, title=item.title, description=item.description)
                for item in self.base.items()
            )
        return self.base.items()

    @property
    def _reads_knowledge(self) -> bool:
        return self.knowledge and not self.interactions_only

    def interactions(self) -> Iterator[InteractionRecord]:
        """Training interactions only."""
        return iter(self.train)

    def triples(self) -> Iterator[TripleRecord]:
        """Knowledge triples, minus what a test user stated at or after their latest training interaction;
        the relations the base data set derives from its interactions
        (:class:`kgrec.datasets.DerivedKnowledge`, a demo shop's co-occurrence links) rebuilt without
        the test pairs' interactions and without each user's validation pair
        (:func:`~workers.training.holdout.validation_pairs`), which the blend and the baselines are
        fitted on: counted over it, a link would show the fit its target."""
        if not self._reads_knowledge:
            return iter(())
        kept = (t for t in self.base.triples() if not self._held_out(t))
        held_out = {(u, i) for u, items in self.test.items() for i in items} | validation_pairs(self.train)
        return training_triples(self.base, kept, held_out)

    def entities(self) -> Iterator[EntityRecord]:
        """Entities of the base data set (none when interactions-only or without knowledge)."""
        if not self._reads_knowledge:
            return iter(())
        reader = getattr(self.base, "entities", None)
        return reader() if reader is not None else iter(())

    def _held_out(self, triple: TripleRecord) -> bool:
        if triple.user_id is None or triple.user_id not in self.test:
            return False
        # Without both times the triple cannot be shown to precede the test: leave it out.
        return stated_before(triple, self.cutoff.get(triple.user_id)) is not True


def leave_last_out(dataset: Dataset, seed: int = SPLIT_TIE_SEED) -> SplitDataset:
    """Hold out the item of each user's last interaction (by ts, else seq_index; equal keys in a
    seeded random order), with every record of that (user, item) pair.

    Equal keys (same ts, or no ts and the same seq) have no order of their own; file
    order is often item order (MovieLens sorts a user's ratings by movie), which an
    order-aware model could learn, so the tie-break is random with a fixed seed.
    The import merges a pair's records into one training edge, so an earlier view or cart of
    the test item left in training would put the test item in the user's history: ranking
    excludes it there, and the pair would reach the training graph. A user needs two distinct
    items to be a test user.
    """
    rng = np.random.default_rng(seed)
    per_user: dict[str, list[tuple[tuple[int, int, float], InteractionRecord]]] = defaultdict(list)
    for record in dataset.interactions():
        key = (
            record.ts if record.ts is not None else -1,
            record.seq if record.seq is not None else -1,
            float(rng.random()),
        )
        per_user[record.user_id].append((key, record))
    train: list[InteractionRecord] = []
    test: dict[str, set[str]] = {}
    cutoff: dict[str, int | None] = {}
    for user_id, records in per_user.items():
        records.sort(key=lambda pair: pair[0])
        held = records[-1][1].item_id
        history = [r for _, r in records if r.item_id != held]
        if not history:
            train.extend(r for _, r in records)
            continue
        train.extend(history)
        test[user_id] = {held}
        held_times = [r.ts for _, r in records if r.item_id == held]
        cutoff[user_id] = stated_cutoff([r.ts for r in history], held_times)
    return SplitDataset(dataset, train, test, cutoff)


def given_split(dataset: Dataset) -> SplitDataset:
    """The data set's own train/test files (KGAT amazon-book)."""
    if not isinstance(dataset, KgatDataset):
        raise ValueError("--protocol given-split needs a data set with its own split (kgat-amazon-book)")
    test: dict[str, set[str]] = defaultdict(set)
    times: dict[str, list[int | None]] = defaultdict(list)
    for record in dataset.split("test"):
        test[record.user_id].add(record.item_id)
        times[record.user_id].append(record.ts)
    train = list(dataset.split("train"))
    trained: dict[str, list[int | None]] = defaultdict(list)
    for record in train:
        trained[record.user_id].append(record.ts)
    cutoff = {u: stated_cutoff(trained.get(u, []), ts) for u, ts in times.items()}
    return SplitDataset(dataset, train, dict(test), cutoff)


def stated_cutoff(training: Sequence[int | None], held_out: Sequence[int | None]) -> int | None:
    """From when a test user's own statements are held out: their latest training time (the
    validation interaction), never after their earliest held-out one; None when a time is unknown."""
    if None in training or None in held_out:
        return None
    latest = [max(t for t in training if t is not None)] if training else []
    return min([*latest, *(t for t in held_out if t is not None)])


def split_dataset(
    dataset: Dataset, protocol: str, interactions_only: bool = False, knowledge: bool = True
) -> SplitDataset:
    """The split ``protocol`` makes of ``dataset`` (what its import sees: :class:`SplitDataset`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    split = leave_last_out(dataset) if protocol == "leave-last-out" else given_split(dataset)
    split.interactions_only = interactions_only
    split.knowledge = knowledge
    return split


def scratch_graph_name(settings: Settings, dataset_name: str, protocol: str) -> str:
    """The evaluation's own graph (embedded), or database (``KGREC_EVAL_DATABASE``), never the serving one.

    The evaluation empties it first, so one that is the serving graph (``KGREC_GRAPH`` named like a
    scratch graph; settings made without :meth:`Settings.from_env`, which refuses such a
    ``KGREC_EVAL_DATABASE``) is refused with a ValueError before anything is opened.
    """
    if settings.embedded:
        slug = "".join(c if c.isalnum() else "_" for c in f"eval_{dataset_name}_{protocol}")
        name = slug[-60:]
        if name == settings.graph_name:
            raise ValueError(
                f"KGREC_GRAPH is {name!r}, the scratch graph `kgrec evaluate` empties for this data set "
                "and protocol: serve from a graph of another name"
            )
        return name
    return checked_eval_database(settings.eval_database, settings.neo4j_database)


@contextmanager
def scratch_graph_held(settings: Settings, name: str, say: Progress) -> Iterator[None]:
    """Hold the scratch graph ``name`` alone (a lock file in the data directory).

    Every evaluation of one data set and protocol (another variant, another seed) loads the same
    scratch graph: without the lock, a second run's clear and import would land in the first
    run's graph between its import and its pull, and each would train on a mix of both. A second
    run waits here until the first has pulled its graph.
    """
    folder = Path(settings.data_dir) / "eval-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another evaluation to pull from the scratch graph {name}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_training_graph(
    settings: Settings, split: SplitDataset, protocol: str, say: Progress
) -> TrainingGraph:
    """Import ``split``'s training part into the scratch graph, pull it back, and empty the graph."""
    name = scratch_graph_name(settings, split.name, protocol)
    # The evaluation's own graph, never the serving one.
    with scratch_graph_held(settings, name, say), open_gateway(settings, graph_name=name) as gateway:
        clear_graph(gateway)
        migrate(gateway)
        started = time.perf_counter()
        import_dataset(gateway, split, settings)
        say(f"scratch graph loaded in {time.perf_counter() - started:.0f}s")
        graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
        clear_graph(gateway)
    return graph


@dataclass
class EvaluationReport:
    """Metrics per model, how they were obtained, and how sure they are."""

    metrics: dict[str, dict[str, float]]
    protocol: dict[str, object]
    per_user: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    confidence: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    paired: dict[str, dict[str, dict[str, float | list[float]]]] = field(default_factory=dict)
    # The test users the per-user arrays are over, in their order, and each one's held-out items.
    user_ids: list[str] = field(default_factory=list)
    test_items: list[list[str]] = field(default_factory=list)

    def save_per_user(self, path: Path) -> None:
        """Write every model's per-user metrics, so that two runs can be compared user by user
        (``bench/paired_runs.py``): one array per ``model.metric``, with the users and their test items.

        The test items are flat: each user's sorted ids in turn (``test_items``), and how many each
        user has (``test_item_counts``). One string per user would be as wide as the longest user's
        list, for every user: the KG fixture's file (5,508 users) took 20 MB so, and takes 0.7 MB flat.
        """
        arrays = {
            f"{model}.{name}": values
            for model, metrics in self.per_user.items()
            for name, values in metrics.items()
        }
        write_npz_atomically(
            Path(path),
            {
                "user_ids": np.array(self.user_ids, dtype=str),
                "test_items": np.array(
                    [item for items in self.test_items for item in sorted(items)], dtype=str
                ),
                "test_item_counts": np.array([len(items) for items in self.test_items], dtype=np.int64),
                **arrays,
            },
        )


def _targets(graph: TrainingGraph, test: dict[str, set[str]]) -> tuple[list[int], list[set[str]]]:
    users = [u for u, user_id in enumerate(graph.user_ids) if user_id in test]
    return users, [test[graph.user_ids[u]] for u in users]


def _dense_per_user(
    graph: TrainingGraph,
    users: list[int],
    targets: list[set[str]],
    scores_for: Callable[[np.ndarray], np.ndarray],
    ks: Sequence[int],
) -> dict[str, np.ndarray]:
    """Per-user metrics of a model that gives dense scores for graph user indices."""
    seen = item_histories(graph)
    chosen = np.asarray(users, dtype=np.int64)
    ranked_all = baselines.rank_dense(
        lambda idx: scores_for(chosen[idx]), [seen[u] for u in users], len(users), max(ks)
    )
    ranked = [[graph.item_ids[i] for i in row] for row in ranked_all]
    return per_user_metrics(ranked, targets, ks)


def _recommender_per_user(
    recommender: Recommender,
    histories: Sequence[Sequence[HistoryEntry]],
    targets: Sequence[set[str]],
    ks: Sequence[int],
    batch: int = 2_000,
) -> dict[str, np.ndarray]:
    """Per-user metrics through the served Recommender, all items ranked minus each history."""
    ranked: list[list[str]] = []
    for start in range(0, len(histories), batch):
        part = histories[start : start + batch]
        exclude = [[h.item_id for h in history] for history in part]
        ranked.extend([i for i, _ in row] for row in recommender.recommend(part, max(ks), exclude))
    return per_user_metrics(ranked, targets, ks)


def _zeros(n_users: int, ks: Sequence[int]) -> dict[str, np.ndarray]:
    return {f"{m}@{k}": np.zeros(n_users) for k in ks for m in ("recall", "ndcg", "hit")}


def evaluate(
    settings: Settings,
    dataset_name: str,
    data_dir: Path,
    protocol: str,
    ks: Sequence[int],
    config: TrainConfig,
    device: str = "cpu",
    progress: Progress | None = None,
    baseline_set: str = "default",
    ablate_topics: bool = False,
) -> EvaluationReport:
    """Run the whole protocol and return metrics for kgrec and every baseline of ``baseline_set``.

    ``ablate_topics``: also report :data:`NO_TOPICS` (kgrec's blend refitted on validation without
    the topic-interest signal, the same graph model), when the trained model has that signal.
    """
    say = progress or (lambda _message: None)
    chosen_models = models_of(baseline_set)
    interactions_only = not config.use_knowledge and not config.use_text
    split = split_dataset(
        open_dataset(dataset_name, data_dir), protocol, interactions_only, knowledge=config.use_knowledge
    )
    say(f"{split.name}: {len(split.train):,} training interactions, {len(split.test):,} test users")
    graph = load_training_graph(settings, split, protocol, say)
    say(f"pulled {graph.counts()}")

    started = time.perf_counter()
    text_dir = Path(settings.data_dir) / "text-embeddings"
    result = train_model(graph, config, device=device, text_cache_dir=text_dir, version="evaluation")
    say(f"kgrec trained: weights {result.artifacts.weights}, decay {result.artifacts.recency_decay}")
    users, targets = _targets(graph, split.test)
    histories = user_histories(graph)
    test_histories = [histories[u] for u in users]
    per_user: dict[str, dict[str, np.ndarray]] = {
        "kgrec": _recommender_per_user(Recommender(result.artifacts), test_histories, targets, ks)
    }
    details: dict[str, dict[str, object]] = {"kgrec": {"seconds": round(time.perf_counter() - started, 1)}}
    say(f"kgrec: ndcg@10 {per_user['kgrec'].get('ndcg@10', np.zeros(1)).mean():.4f}")
    models: tuple[str, ...] = chosen_models
    if ablate_topics and TOPIC_INTERESTS in result.artifacts.components:
        begun = time.perf_counter()
        without = fit_and_package(
            graph,
            result.fit_embeddings or result.embeddings,
            replace(config, use_topics=False),
            device=device,
            served=result.embeddings,
        )
        per_user[NO_TOPICS] = _recommender_per_user(
            Recommender(without.artifacts), test_histories, targets, ks
        )
        details[NO_TOPICS] = {
            "weights": without.artifacts.weights,
            "recency_decay": without.artifacts.recency_decay,
            "validation_ndcg@10": without.validation.get("ndcg@10"),
            "seconds": round(time.perf_counter() - begun, 1),
        }
        say(f"{NO_TOPICS}: ndcg@10 {per_user[NO_TOPICS]['ndcg@10'].mean():.4f} ({details[NO_TOPICS]})")
        models = ("kgrec", NO_TOPICS, *models[1:])
    validation = validation_set(graph, config.seed)

    def timed(name: str, run: Callable[[], tuple[dict[str, np.ndarray], dict[str, object]]]) -> None:
        begun = time.perf_counter()
        per_user[name], info = run()
        details[name] = {**info, "seconds": round(time.perf_counter() - begun, 1)}
        say(f"{name}: ndcg@10 {per_user[name].get('ndcg@10', np.zeros(1)).mean():.4f} ({details[name]})")

    def popularity() -> tuple[dict[str, np.ndarray], dict[str, object]]:
        counts = item_popularity(graph)
        return _dense_per_user(graph, users, targets, lambda idx: np.tile(counts, (len(idx), 1)), ks), {}

    def signals(names: list[str], blends: list[dict[str, float]] | None = None, tuned: bool = True):
        def run() -> tuple[dict[str, np.ndarray], dict[str, object]]:
            if tuned:
                artifacts, metrics = baselines.tuned_signal_model(
                    graph, names, "baseline", config.seed, blends or ()
                )
                info: dict[str, object] = {"validation_ndcg@10": metrics.get("ndcg@10")}
            else:
                artifacts, info = baselines.signal_artifacts(graph, names, "baseline"), {}
            info.update(weights=artifacts.weights, recency_decay=artifacts.recency_decay)
            return _recommender_per_user(Recommender(artifacts), test_histories, targets, ks), info

        return run

    def copurchase() -> tuple[dict[str, np.ndarray], dict[str, object]]:
        if not baselines.has_copurchase(graph):
            return _zeros(len(users), ks), {"note": "no co-purchase links in this graph: zero"}
        names = baselines.copurchase_signals()
        return signals(names, baselines.copurchase_blends(names))()

    def ease() -> tuple[dict[str, np.ndarray], dict[str, object]]:
        fit = fit_ease(graph, validation, device=device)
        matrix = interaction_matrix(graph)
        info = {
            "lambda": fit.lam,
            "validation_ndcg@10": {str(k): round(v, 5) for k, v in fit.validation.items()},
        }
        return _dense_per_user(graph, users, targets, lambda idx: fit.scores(matrix, idx), ks), info

    def factors(fit_model: Callable[..., baselines.FactorFit], stopping: baselines.Stopping):
        def run() -> tuple[dict[str, np.ndarray], dict[str, object]]:
            fit = fit_model(graph, validation, config, device)
            info = {
                "best_epoch": fit.stop.best_epoch,
                "epochs_run": fit.stop.epochs_run,
                "epoch_cap": stopping.max_epochs,
                "every": stopping.every,
                "patience": stopping.patience,
                "validation_ndcg@10": round(fit.stop.best_score, 5),
                "seconds_per_epoch": round(fit.seconds_per_epoch, 2),
            }
            return _dense_per_user(graph, users, targets, lambda idx: fit.users[idx] @ fit.items.T, ks), info

        return run

    def sasrec() -> tuple[dict[str, np.ndarray], dict[str, object]]:
        from workers.training.sasrec import train_sasrec

        fit = train_sasrec(validation, sasrec_config(config), device=device)
        sequences = item_histories(graph)
        info = {
            "best_epoch": fit.stop.best_epoch,
            "epochs_run": fit.stop.epochs_run,
            "epoch_cap": fit.max_epochs,
            "every": fit.every,
            "patience": fit.config.patience,
            "dropout": fit.config.dropout,
            "seed": fit.config.seed,
            "validation_ndcg@10_by_dropout": {str(d): v for d, v in fit.validation_by_dropout.items()},
            "validation_ndcg@10": round(fit.stop.best_score, 5),
            "seconds_per_epoch": round(fit.seconds_per_epoch, 2),
        }
        return _dense_per_user(
            graph, users, targets, lambda idx: fit.scores([sequences[u] for u in idx]), ks
        ), info

    runs: dict[str, Callable[[], tuple[dict[str, np.ndarray], dict[str, object]]]] = {
        "popularity": popularity,
        "itemknn": signals([COOCCURRENCE], tuned=False),
        "itemknn_recency": signals([COOCCURRENCE]),
        "markov": signals([baselines.MARKOV_SIGNAL]),
        "copurchase": copurchase,
        "ease": ease,
        "bprmf": factors(baselines.fit_bprmf, baselines.BPRMF_STOPPING),
        "lightgcn": factors(baselines.fit_lightgcn, baselines.LIGHTGCN_STOPPING),
        "sasrec": sasrec,
    }
    for name in models:
        if name not in ("kgrec", NO_TOPICS):
            timed(name, runs[name])

    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    intervals, paired = confidence(per_user, names, reference="kgrec", seed=config.seed)
    ordered = {name: per_user[name] for name in models}
    return EvaluationReport(
        metrics={name: means(values) for name, values in ordered.items()},
        protocol={
            "dataset": split.name,
            "protocol": protocol,
            "test_users": len(users),
            "items_ranked": graph.n_items,
            "training_interactions": int(graph.inter_user.size),
            "interactions_only": interactions_only,
            "knowledge": config.use_knowledge,
            "metadata_baselines": list(METADATA_BASELINES),
            "validation_users": int(validation.users.size),
            "kgrec_weights": result.artifacts.weights,
            "kgrec_topics": result.artifacts.parameters.get("topics"),
            "kgrec_recency_decay": result.artifacts.recency_decay,
            "kgrec_validation": result.validation,
            # each feature alone on validation, and what the graph model learnt (what each signal adds)
            "kgrec_single_feature_validation_ndcg@10": result.artifacts.parameters.get(
                "single_feature_validation_ndcg"
            ),
            # signals that must earn their place (topic interests): the paired test's p on validation
            "kgrec_signal_evidence_p": result.artifacts.parameters.get("signal_evidence_p"),
            # tuned signals' parameters (EASE's λ) and the validation NDCG@10 of each one tried
            "kgrec_tuned_signals": result.artifacts.parameters.get("tuned_signals"),
            "kgrec_tuned_signal_validation_ndcg@10": result.artifacts.parameters.get(
                "tuned_signal_validation_ndcg"
            ),
            "kgrec_model": {
                key: result.artifacts.parameters.get(key)
                for key in ("model_best_epoch", "model_validation_ndcg", "model_decay")
            },
            "models": details,
            "confidence": "95% percentile bootstrap over test users (1,000 resamples, seeded); "
            "paired: kgrec − model per user, bootstrap interval and paired t-test p",
            "config": config.__dict__,
        },
        per_user=ordered,
        confidence=intervals,
        paired=paired,
        user_ids=[graph.user_ids[u] for u in users],
        test_items=[sorted(t) for t in targets],
    )
