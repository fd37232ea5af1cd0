"""``kgrec evaluate``: full-ranking offline evaluation on real data, through the serving code path.

Protocol:
- ``leave-last-out``: each user's last interaction (by ``ts``, else ``seq_index``)
  is the test item; everything else is imported into a scratch graph. Training
  holds out each user's latest remaining interaction (the second-to-last) for
  validation, to choose blend weights and recency decay.
- ``given-split``: the data set's own train/test split (KGAT amazon-book).

The scratch graph (its own FalkorDB graph, or the Neo4j database
``KGREC_EVAL_DATABASE``) is emptied, filled with the training part through
``kgrec import``'s code, pulled back with the training Cypher, and the model is
trained exactly as ``kgrec train`` does. Test users are then ranked over **all
items** by :class:`kgrec.recommender.Recommender`, excluding their training
items. Baselines are trained on the same pulled graph.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kgrec.config import Settings
from kgrec.datasets import Dataset, InteractionRecord, ItemRecord, TripleRecord, open_dataset
from kgrec.datasets.kgat import KgatDataset
from kgrec.datasets.records import Problems
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.item_graphs import histories as item_histories
from kgrec.item_graphs import popularity as item_popularity
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.recommender import ModelArtifacts, Recommender
from kgrec.signals import COOCCURRENCE, signal
from kgrec.training_graph import TrainingGraph
from workers.training import baselines
from workers.training.config import TrainConfig
from workers.training.metrics import ranking_metrics
from workers.training.pipeline import (
    evaluate_recommender,
    hold_out_latest,
    train_model,
    tune,
    user_histories,
)
from workers.training.subgraph import pull

PROTOCOLS = ("leave-last-out", "given-split")
MODELS = ("kgrec", "popularity", "itemknn", "itemknn_recency", "bprmf", "lightgcn")

Progress = Callable[[str], None]


@dataclass
class SplitDataset:
    """A data set with only its training interactions; the held-out ones are the targets."""

    base: Dataset
    train: list[InteractionRecord]
    test: dict[str, set[str]]

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
        """Catalogue rows of the base data set."""
        return self.base.items()

    def interactions(self) -> Iterator[InteractionRecord]:
        """Training interactions only."""
        return iter(self.train)

    def triples(self) -> Iterator[TripleRecord]:
        """Knowledge triples of the base data set."""
        return self.base.triples()


def leave_last_out(dataset: Dataset) -> SplitDataset:
    """Hold out each user's last interaction (by ts, else seq_index, else file order)."""
    per_user: dict[str, list[tuple[tuple[int, int, int], InteractionRecord]]] = defaultdict(list)
    for position, record in enumerate(dataset.interactions()):
        key = (
            record.ts if record.ts is not None else -1,
            record.seq if record.seq is not None else -1,
            position,
        )
        per_user[record.user_id].append((key, record))
    train: list[InteractionRecord] = []
    test: dict[str, set[str]] = {}
    for user_id, records in per_user.items():
        records.sort(key=lambda pair: pair[0])
        if len(records) < 2:
            train.extend(r for _, r in records)
            continue
        *history, (_, last) = records
        train.extend(r for _, r in history)
        test[user_id] = {last.item_id}
    return SplitDataset(dataset, train, test)


def given_split(dataset: Dataset) -> SplitDataset:
    """The data set's own train/test files (KGAT amazon-book)."""
    if not isinstance(dataset, KgatDataset):
        raise ValueError("--protocol given-split needs a data set with its own split (kgat-amazon-book)")
    test: dict[str, set[str]] = defaultdict(set)
    for record in dataset.split("test"):
        test[record.user_id].add(record.item_id)
    return SplitDataset(dataset, list(dataset.split("train")), dict(test))


def scratch_gateway(settings: Settings, dataset_name: str, protocol: str) -> GraphGateway:
    """A gateway to the evaluation's own graph, never the serving one."""
    if settings.embedded:
        slug = "".join(c if c.isalnum() else "_" for c in f"eval_{dataset_name}_{protocol}")
        return open_gateway(settings, graph_name=slug[-60:])
    return open_gateway(settings, graph_name=settings.eval_database)


@dataclass
class EvaluationReport:
    """Metrics per model, and how they were obtained."""

    metrics: dict[str, dict[str, float]]
    protocol: dict[str, object]


def _targets(graph: TrainingGraph, test: dict[str, set[str]]) -> tuple[list[int], list[set[str]]]:
    users = [u for u, user_id in enumerate(graph.user_ids) if user_id in test]
    return users, [test[graph.user_ids[u]] for u in users]


def _dense_metrics(
    graph: TrainingGraph,
    users: list[int],
    targets: list[set[str]],
    scores_for: Callable[[np.ndarray], np.ndarray],
    ks: Sequence[int],
) -> dict[str, float]:
    histories = item_histories(graph)
    ranked_all = baselines.rank_dense(
        lambda idx: scores_for(np.asarray(users)[idx]), [histories[u] for u in users], len(users), max(ks)
    )
    ranked = [[graph.item_ids[i] for i in row] for row in ranked_all]
    return ranking_metrics(ranked, targets, ks)


def evaluate(
    settings: Settings,
    dataset_name: str,
    data_dir: Path,
    protocol: str,
    ks: Sequence[int],
    config: TrainConfig,
    device: str = "cpu",
    progress: Progress | None = None,
) -> EvaluationReport:
    """Run the whole protocol and return metrics for kgrec and every baseline."""
    say = progress or (lambda _message: None)
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    dataset = open_dataset(dataset_name, data_dir)
    split = leave_last_out(dataset) if protocol == "leave-last-out" else given_split(dataset)
    say(f"{split.name}: {len(split.train):,} training interactions, {len(split.test):,} test users")

    with scratch_gateway(settings, split.name, protocol) as gateway:
        clear_graph(gateway)
        migrate(gateway)
        started = time.perf_counter()
        import_dataset(gateway, split, settings)
        say(f"scratch graph loaded in {time.perf_counter() - started:.0f}s")
        graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
        clear_graph(gateway)
    say(f"pulled {graph.counts()}")

    text_dir = Path(settings.data_dir) / "text-embeddings"
    result = train_model(graph, config, device=device, text_cache_dir=text_dir, version="evaluation")
    say(f"kgrec trained: weights {result.artifacts.weights}, decay {result.artifacts.recency_decay}")
    users, targets = _targets(graph, split.test)
    histories = user_histories(graph)
    metrics: dict[str, dict[str, float]] = {
        "kgrec": evaluate_recommender(
            Recommender(result.artifacts), [histories[u] for u in users], targets, ks
        )
    }

    popularity = item_popularity(graph)
    metrics["popularity"] = _dense_metrics(
        graph, users, targets, lambda idx: np.tile(popularity, (len(idx), 1)), ks
    )
    knn = ModelArtifacts(
        version="itemknn",
        item_ids=graph.item_ids,
        item_embeddings=np.zeros((graph.n_items, 1), dtype=np.float32),
        components={COOCCURRENCE: signal(COOCCURRENCE).build(graph)},
        weights={COOCCURRENCE: 1.0},
        recency_decay=1.0,
        popularity=popularity,
    )
    metrics["itemknn"] = evaluate_recommender(Recommender(knn), [histories[u] for u in users], targets, ks)
    recency = replace(knn, recency_decay=_tuned_recency(graph, knn, config.seed))
    metrics["itemknn_recency"] = evaluate_recommender(
        Recommender(recency), [histories[u] for u in users], targets, ks
    )
    say("popularity and item-kNN done")
    user_f, item_f = baselines.train_bprmf(graph, config)
    metrics["bprmf"] = _dense_metrics(graph, users, targets, lambda idx: user_f[idx] @ item_f.T, ks)
    user_e, item_e, _seconds = baselines.train_lightgcn(graph, config)
    metrics["lightgcn"] = _dense_metrics(graph, users, targets, lambda idx: user_e[idx] @ item_e.T, ks)
    say("BPR-MF and LightGCN done")
    return EvaluationReport(
        metrics=metrics,
        protocol={
            "dataset": split.name,
            "protocol": protocol,
            "test_users": len(users),
            "items_ranked": graph.n_items,
            "training_interactions": int(graph.inter_user.size),
            "kgrec_weights": result.artifacts.weights,
            "kgrec_recency_decay": result.artifacts.recency_decay,
            "kgrec_validation": result.validation,
            "config": config.__dict__,
        },
    )


def _tuned_recency(graph: TrainingGraph, knn: ModelArtifacts, seed: int) -> float:
    """The recency decay for item-kNN, chosen on the same validation hold-out as kgrec."""
    fit, targets = hold_out_latest(graph)
    fit_knn = replace(knn, components={COOCCURRENCE: signal(COOCCURRENCE).build(fit)})
    _weights, decay, _metrics = tune(
        fit_knn,
        user_histories(fit),
        targets,
        graph.item_ids,
        seed=seed,
        candidates=[{COOCCURRENCE: 1.0}],
    )
    return decay
