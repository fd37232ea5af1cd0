"""Benchmark: does knowledge help EASE? Entities as extra rows of its matrix, on validation users only.

EASE with side information (as in Jeunen et al., "Closed-form models for collaborative
filtering with side-information", RecSys 2020): each knowledge entity (a genre, a tag, a
release year, any entity of the open graph) is added to the user × item matrix as one more
row, holding the items it links to, scaled by ``α``. Items that share entities then
co-occur in the Gram matrix even when few users hold both. ``α = 0`` is plain EASE.

For one data set: the ``kgrec evaluate`` leave-last-out split (the test items are never read),
imported into a scratch embedded graph and pulled back; each user's latest training
interaction held out (``workers.training.validation``). λ is walked on plain EASE as the
``ease`` baseline walks it; then every ``α`` and entity weighting is fitted at that λ and
scored by validation NDCG@10 (the users' binary histories times the weights, full ranking).
Prints one JSON line per fit; ``--save`` writes them to
``bench/results/ease-side-information-<data set>.json``.

    .venv/bin/python -m bench.ease_side_information [--dataset movielens] [--datasets-dir ../shared/data]
        [--alphas 0.3,1,3] [--save]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.common import evaluation_training_graph
from kgrec.ease import ease_weights, weights_from_gram
from kgrec.item_graphs import item_entity_incidence
from workers.training.ease import walk_lambdas
from workers.training.validation import ValidationSet, validation_set

PROTOCOL = "leave-last-out"
# How an entity's row is scaled besides α: every entity alike, or by 1/√(its items), which keeps a
# genre of thousands of films from outweighing a tag of three.
WEIGHTINGS = ("flat", "inverse-sqrt-size")


def entity_rows(incidence: sp.csr_matrix, alpha: float, weighting: str) -> sp.csr_matrix:
    """The entities × items rows appended to the interaction matrix."""
    rows = incidence.T.tocsr().astype(np.float32)
    sizes = np.maximum(np.asarray(rows.sum(axis=1)).ravel(), 1.0)
    scale = np.full(rows.shape[0], alpha, dtype=np.float32)
    if weighting == "inverse-sqrt-size":
        scale /= np.sqrt(sizes).astype(np.float32)
    return sp.diags(scale) @ rows


def side_information_weights(
    gram: sp.csr_matrix, incidence: sp.csr_matrix, lam: float, alpha: float, weighting: str
) -> np.ndarray:
    """EASE's item weights from the interactions' Gram matrix ``XᵀX`` with the entity rows appended."""
    entities = entity_rows(incidence, alpha, weighting)
    return weights_from_gram(gram + entities.T @ entities, lam)


def score(validation: ValidationSet, weights: np.ndarray) -> float:
    """Validation NDCG@10 of EASE weights, scoring each user's binary history."""
    return validation.ndcg(lambda users: np.asarray(validation.seen[users] @ weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens")
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--alphas",
        default=[0.3, 1.0, 3.0],
        type=lambda text: [float(a) for a in text.split(",")],  # refused here, not after the λ walk
        help="entity row scales tried (comma-separated)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kgrec-ease-side-") as work:
        graph = evaluation_training_graph(args.dataset, args.datasets_dir, Path(work), PROTOCOL)
    validation = validation_set(graph, args.seed)
    matrix = validation.seen  # the binary users × items matrix of the hold-out's graph
    gram = (matrix.T @ matrix).tocsr()
    incidence = item_entity_incidence(validation.graph)
    started = time.perf_counter()
    lam, _, walk = walk_lambdas(lambda lam: ease_weights(matrix, lam), lambda w: score(validation, w))
    rows = [
        {
            "dataset": args.dataset,
            "alpha": 0.0,
            "weighting": "none",
            "lambda": lam,
            "validation_ndcg@10": round(walk[lam], 4),
            "lambda_walk": {str(k): round(v, 4) for k, v in walk.items()},
            "seconds": round(time.perf_counter() - started, 1),
        }
    ]
    print(json.dumps(rows[-1]), flush=True)
    for weighting in WEIGHTINGS:
        for alpha in args.alphas:
            started = time.perf_counter()
            weights = side_information_weights(gram, incidence, lam, alpha, weighting)
            rows.append(
                {
                    "dataset": args.dataset,
                    "alpha": alpha,
                    "weighting": weighting,
                    "lambda": lam,
                    "validation_ndcg@10": round(score(validation, weights), 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = {
        "dataset": args.dataset,
        "validation_users": int(validation.users.size),
        "items": graph.n_items,
        "entities": int(incidence.shape[1]),
        "entity_links": int(incidence.nnz),
        "fits": rows,
    }
    print(json.dumps(summary))
    if args.save:
        saved = Path(f"bench/results/ease-side-information-{Path(args.dataset).name}.json")
        saved.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
