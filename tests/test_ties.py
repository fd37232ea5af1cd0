"""Same-time interactions: one tie rule (kgrec/ties.py) for training's history order and the served profile."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.item_graphs import history_order
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.serving import HISTORY_LIMIT, Serving
from kgrec.signals import COOCCURRENCE
from kgrec.ties import interaction_ties, tie_keys
from kgrec.training_graph import TrainingGraph
from workers.training.pipeline import user_histories
from workers.training.subgraph import pull

ITEMS = [f"item-{k:03d}" for k in range(12)]


def tied_graph(n_users: int, rows_shuffled_by: int | None = None) -> TrainingGraph:
    """Every user has all items, in three time groups of four same-time items."""
    users = np.repeat(np.arange(n_users), len(ITEMS))
    items = np.tile(np.arange(len(ITEMS)), n_users)
    order = (items // 4).astype(np.int64) * 1000
    if rows_shuffled_by is not None:
        perm = np.random.default_rng(rows_shuffled_by).permutation(users.size)
        users, items, order = users[perm], items[perm], order[perm]
    return TrainingGraph(
        user_ids=[f"user-{u}" for u in range(n_users)],
        item_ids=list(ITEMS),
        inter_user=users,
        inter_item=items,
        inter_weight=np.ones(users.size, dtype=np.float32),
        inter_order=order,
    )


def ordered_items(graph: TrainingGraph) -> list[list[str]]:
    """Each user's items in history_order (oldest first)."""
    result: list[list[str]] = [[] for _ in range(graph.n_users)]
    for r in history_order(graph):
        result[int(graph.inter_user[r])].append(graph.item_ids[int(graph.inter_item[r])])
    return result


def test_serving_keys_equal_training_keys() -> None:
    graph = tied_graph(5)
    trained = interaction_ties(graph)
    for u, user_id in enumerate(graph.user_ids):
        mine = graph.inter_user == u
        assert tie_keys(user_id, [ITEMS[i] for i in graph.inter_item[mine]]) == [
            int(t) for t in trained[mine]
        ]


def test_order_depends_on_the_user_and_item_not_on_row_order() -> None:
    assert ordered_items(tied_graph(30)) == ordered_items(tied_graph(30, rows_shuffled_by=3))


def test_times_come_first_and_ties_are_not_in_item_order() -> None:
    per_user = ordered_items(tied_graph(200))
    for items in per_user:
        # the three time groups stay in time order
        assert [sorted(items[g * 4 : g * 4 + 4]) for g in range(3)] == [
            ITEMS[g * 4 : g * 4 + 4] for g in range(3)
        ]
    # Within a group, the direction between two items differs from user to user (about half
    # each way); a rule of the item alone would order them the same way for every user.
    before = np.mean([items.index(ITEMS[0]) < items.index(ITEMS[1]) for items in per_user])
    assert 0.35 < before < 0.65
    assert len({tuple(items) for items in per_user}) > 150


def tiny_recommender() -> Recommender:
    n = len(ITEMS)
    return Recommender(
        ModelArtifacts(
            version="ties",
            item_ids=list(ITEMS),
            item_embeddings=np.zeros((n, 2), dtype=np.float32),
            components={COOCCURRENCE: sp.csr_matrix((n, n), dtype=np.float32)},
            weights={COOCCURRENCE: 1.0},
            recency_decay=0.5,
            popularity=np.ones(n, dtype=np.float32),
        )
    )


def test_the_profile_ranks_ties_as_training_orders_them() -> None:
    """The profile's recency ranks equal the reversed history_order, for every user."""
    graph = tied_graph(40, rows_shuffled_by=5)
    model = tiny_recommender()
    profiles = model.profiles(user_histories(graph)).toarray()
    last = model.profiles(user_histories(graph), last_only=True).toarray()
    for u, items in enumerate(ordered_items(graph)):
        newest_first = [model.item_index[i] for i in reversed(items)]
        assert np.allclose(profiles[u, newest_first], 0.5 ** np.arange(len(ITEMS)))
        assert int(np.flatnonzero(last[u])[0]) == newest_first[0]


def test_entries_without_ties_keep_their_order() -> None:
    history = [HistoryEntry("item-000", 1.0, 2), HistoryEntry("item-001", 1.0, 1)]
    profile = tiny_recommender().profiles([history]).toarray()[0]
    assert profile[0] == 1.0 and profile[1] == 0.5


@dataclass
class ServedGraph:
    """A scratch graph, its settings and a Serving core over it."""

    settings: Settings
    gateway: GraphGateway
    core: Serving

    def ingest(self, raw: list[dict], max_skew_s: int) -> None:
        """Validate and ingest raw events (they must all be valid)."""
        events, errors = validate_batch(raw, max_skew_s=max_skew_s)
        assert errors == []
        ingest(self.gateway, events, self.settings)


@pytest.fixture
def served(settings: Settings, graph_server: EmbeddedServer | None) -> Iterator[ServedGraph]:
    name = f"ties_{uuid.uuid4().hex[:10]}" if settings.embedded else None
    local = settings.with_overrides(graph_name=name)
    gw = open_gateway(local)
    clear_graph(gw)
    migrate(gw)
    core = Serving(local)
    try:
        yield ServedGraph(local, gw, core)
    finally:
        core.gateway.close()
        clear_graph(gw)
        gw.close()


def test_the_served_history_of_a_real_graph_is_ordered_as_its_pull(served: ServedGraph) -> None:
    """Same-time purchases written through ingest: the served profile and the pulled graph agree."""
    now = int(time.time() * 1000)
    raw = [
        {
            "event_id": f"e-{u}-{i}",
            "user_id": f"user-{u}",
            "item_id": item,
            "type": "purchase",
            "ts": now - 60_000 * (i // 4),
        }
        for u in range(8)
        for i, item in enumerate(ITEMS)
    ]
    served.ingest(raw, max_skew_s=300)
    graph = pull(served.gateway, int(time.time() * 1000), served.settings.half_life_ms)  # after the events
    model = tiny_recommender()
    by_pull = dict(zip(graph.user_ids, ordered_items(graph), strict=True))
    for u in range(8):
        entries = served.core.user_history(f"user-{u}").entries
        profile = model.profiles([entries]).toarray()[0]
        newest_first = np.argsort(-profile, kind="stable")
        assert [ITEMS[k] for k in newest_first] == list(reversed(by_pull[f"user-{u}"]))


def test_a_history_cut_inside_a_tie_keeps_the_largest_ids(served: ServedGraph) -> None:
    """The HISTORY_LIMIT read cut inside a run of same-time items keeps the same rows on any engine."""
    now = int(time.time() * 1000)
    newer = [f"new-{k:03d}" for k in range(HISTORY_LIMIT - 10)]  # one a millisecond
    tied = [f"tie-{k:03d}" for k in range(30)]  # one older second: the cut keeps 10 of them
    # Written in an order that is neither the ids' nor their reverse, so engine order cannot pass.
    shuffled = [tied[k] for k in np.random.default_rng(3).permutation(len(tied))]
    timed = [
        *((item, now - 3_600_000) for item in shuffled),
        *((item, now - 60_000 + k) for k, item in enumerate(newer)),
    ]
    served.ingest(
        [
            {"event_id": f"e-{item}", "user_id": "user-cut", "item_id": item, "type": "view", "ts": ts}
            for item, ts in timed
        ],
        max_skew_s=7_200,
    )
    rows = served.core.user_history("user-cut").item_ids
    assert rows[: len(newer)] == list(reversed(newer))
    assert rows[len(newer) :] == sorted(tied, reverse=True)[:10]
