"""A served user's top-k by the embedding bound equals scoring every item."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from kgrec.bounded_top import bounded_top
from kgrec.ranking import top_of
from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import COOCCURRENCE, LAST_ITEM_TRANSITIONS

N_ITEMS = 3_000


def model(embedding_weight: float, seed: int = 0) -> Recommender:
    """Sparse item graphs (each item links to 4 others) and random embeddings of mixed norms."""
    rng = np.random.default_rng(seed)

    def links() -> sp.csr_matrix:
        rows = np.repeat(np.arange(N_ITEMS), 4)
        return sp.csr_matrix(
            (rng.random(rows.size).astype(np.float32), (rows, rng.integers(0, N_ITEMS, rows.size))),
            shape=(N_ITEMS, N_ITEMS),
        )

    embeddings = rng.normal(size=(N_ITEMS, 16)).astype(np.float32) * rng.random((N_ITEMS, 1)).astype(
        np.float32
    )
    return Recommender(
        ModelArtifacts(
            version="bounded",
            item_ids=[f"i{k}" for k in range(N_ITEMS)],
            item_embeddings=embeddings,
            components={COOCCURRENCE: links(), LAST_ITEM_TRANSITIONS: links()},
            weights={COOCCURRENCE: 1.0, LAST_ITEM_TRANSITIONS: 0.5, "embedding": embedding_weight},
            recency_decay=0.8,
            popularity=rng.integers(0, 100, N_ITEMS).astype(np.float32),
        )
    )


def history(seed: int, length: int = 12) -> list[HistoryEntry]:
    rng = np.random.default_rng(seed)
    items = rng.choice(N_ITEMS, length, replace=False)
    return [HistoryEntry(f"i{k}", float(rng.random()) + 0.1, order=n) for n, k in enumerate(items)]


def every_item(
    recommender: Recommender, entries: list[HistoryEntry], k: int, allowed: np.ndarray | None
) -> list[int]:
    """The reference: every item scored, masks applied, the top k."""
    scores = recommender.score(
        recommender.profiles([entries]), recommender.profiles([entries], last_only=True)
    )[0]
    scores[[recommender.item_index[h.item_id] for h in entries]] = -np.inf
    if allowed is not None:
        scores[~allowed] = -np.inf
    return top_of(scores, k).rows.tolist()


def bounded(recommender: Recommender, entries: list[HistoryEntry], k: int, allowed: np.ndarray | None):
    profiles = recommender.profiles([entries])
    graph = recommender.graph_scores(profiles, recommender.profiles([entries], last_only=True))
    return bounded_top(
        graph,
        np.asarray(profiles @ recommender.context, dtype=np.float32).ravel(),
        recommender.embedding_weight,
        recommender.target,
        recommender.norms,
        recommender.prior,
        recommender.maxima,
        k,
        allowed,
        np.array([recommender.item_index[h.item_id] for h in entries]),
    )


@pytest.mark.parametrize("weight", [0.0, 1e-4, 1e-3])
@pytest.mark.parametrize("k", [1, 10, 30])
def test_the_bound_answers_what_scoring_every_item_answers(weight: float, k: int) -> None:
    recommender = model(weight)
    masks = [None, np.random.default_rng(1).random(N_ITEMS) < 0.7]
    proved = 0
    for user in range(40):
        entries = history(user)
        for allowed in masks:
            expected = every_item(recommender, entries, k, allowed)
            answer = bounded(recommender, entries, k, allowed)
            proved += answer is not None
            if answer is not None:
                assert answer.rows.tolist() == expected
            exclude = [[h.item_id for h in entries]]
            assert recommender.rank([entries], k, exclude, allowed)[0].rows.tolist() == expected
    assert proved >= 20, f"the bound proved only {proved} of 80 lists"


def test_an_embedding_that_outweighs_the_graph_falls_back_to_every_item() -> None:
    """Items the graph never reaches can win on the embedding alone: the bound must not claim them."""
    recommender = model(50.0)
    entries = history(7)
    assert bounded(recommender, entries, 10, None) is None
    exclude = [[h.item_id for h in entries]]
    assert recommender.rank([entries], 10, exclude)[0].rows.tolist() == every_item(
        recommender, entries, 10, None
    )


def test_fewer_reached_items_than_k_falls_back_to_every_item() -> None:
    recommender = model(1e-4)
    entries = history(3, length=2)
    assert bounded(recommender, entries, 500, None) is None
    exclude = [[h.item_id for h in entries]]
    ranked = recommender.rank([entries], 500, exclude)[0]
    assert ranked.rows.tolist() == every_item(recommender, entries, 500, None)
    assert len(ranked) == 500


def test_one_user_and_a_batch_rank_alike() -> None:
    """kgrec evaluate ranks batches by scoring every item; serving ranks one user by the bound."""
    recommender = model(1e-4)
    users = [history(seed) for seed in range(10)]
    exclude = [[h.item_id for h in entries] for entries in users]
    batch = recommender.rank(users, 20, exclude)
    for entries, excluded, expected in zip(users, exclude, batch, strict=True):
        assert recommender.rank([entries], 20, [excluded])[0].rows.tolist() == expected.rows.tolist()
