"""bench/incremental.py's time split trains on knowledge of its training pairs alone, stated up to its cut."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.incremental import pairs_after, training_graph
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.datasets.movielens import TAG_RELATION, YEAR_RELATION, tag_entity_id
from kgrec.demo_shop import EVENT_RELATIONS, ShopSpec, event_links, generate_shop
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec.training_graph import TrainingGraph
from workers.training.subgraph import pull


def _links(graph: TrainingGraph, derived: bool) -> set[tuple[str, str, str]]:
    """The graph's triples of the shop's event relations (``derived``), or of the others."""
    nodes = [*graph.item_ids, *graph.entity_ids]
    triples = ((nodes[h], graph.relation_names[r], nodes[t]) for h, r, t in graph.kg_triples.tolist())
    return {t for t in triples if (t[1] in EVENT_RELATIONS) == derived}


def test_a_training_at_a_cut_counts_no_later_pairs_events_into_the_shops_links(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "shop"
    generate_shop(ShopSpec(users=300, items=120, seed=5), folder)
    dataset = open_dataset(str(folder), settings.datasets_dir)
    import_dataset(gateway, dataset, settings)
    full = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    cut = int(np.median(full.inter_order))

    graph = training_graph(full, dataset, cut)
    assert np.array_equal(graph.inter_order, full.inter_order[full.inter_order <= cut])
    later = pairs_after(full, cut)
    assert later and len(later) == int((full.inter_order > cut).sum())
    # The shop's co-occurrence links, counted from the events of the pairs up to the cut alone:
    # the pulled ones (every event's) differ from them, so training on those would see the test's.
    expected = set(event_links(folder, later))
    assert _links(graph, derived=True) == expected != _links(full, derived=True)
    assert _links(graph, derived=False) == _links(full, derived=False) != set()  # features and such
    for relation in EVENT_RELATIONS:
        rows = graph.kg_triples[graph.kg_triples[:, 1] == graph.relation_names.index(relation)]
        assert np.array_equal(graph.knowledge[relation], rows[:, [0, 2]])

    # With nothing after the cut, the rebuilt knowledge is the pulled one, array for array.
    whole = training_graph(full, dataset, int(full.inter_order.max()))
    assert whole.relation_names == full.relation_names
    assert np.array_equal(whole.kg_triples, full.kg_triples)
    assert all(np.array_equal(whole.knowledge[r], full.knowledge[r]) for r in full.knowledge)


def _triples(graph: TrainingGraph, relation: str) -> set[tuple[str, str]]:
    """The (head, tail) of the graph's ``relation`` triples."""
    nodes = [*graph.item_ids, *graph.entity_ids]
    rows = graph.kg_triples[graph.kg_triples[:, 1] == graph.relation_names.index(relation)]
    return {(nodes[h], nodes[t]) for h, _, t in rows.tolist()}


def test_a_training_at_a_cut_sees_no_tag_a_user_added_after_it(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "movielens"
    folder.mkdir()
    t0 = 1_500_000_000  # MovieLens times are in seconds
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{m},Film {m} ({1990 + m}),Drama\n" for m in range(1, 6))
    )
    ratings = [(1, 1, 0), (1, 2, 100), (1, 3, 200), (2, 1, 50), (2, 4, 150), (2, 5, 250), (3, 2, 20)]
    ratings += [(3, 3, 300)]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},4.0,{t0 + t}\n" for u, m, t in ratings)
    )
    tags = [
        (1, 1, "before", 10),
        (2, 4, "at the cut", 150),
        (2, 2, "after", 160),  # only after the cut: the training at the cut must not see it
        (3, 3, "twice", 290),  # after the cut by one user, and before it by another
        (1, 3, "twice", 120),
    ]
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n" + "".join(f"{u},{m},{g},{t0 + t}\n" for u, m, g, t in tags)
    )
    dataset = open_dataset(str(folder), settings.datasets_dir)
    import_dataset(gateway, dataset, settings)
    full = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    cut = (t0 + 150) * 1000  # a rating's time (ms): user 2's of movie 4
    assert 0 < int((full.inter_order > cut).sum()) < len(ratings)

    graph = training_graph(full, dataset, cut)
    stated = {("1", "before"), ("4", "at the cut"), ("3", "twice")}
    expected = {(movie, tag_entity_id(tag)) for movie, tag in stated}
    assert _triples(full, TAG_RELATION) == expected | {("2", tag_entity_id("after"))}
    assert _triples(graph, TAG_RELATION) == expected
    assert _triples(graph, YEAR_RELATION) == _triples(full, YEAR_RELATION) != set()  # undated: kept
    whole = training_graph(full, dataset, int(full.inter_order.max()))
    assert np.array_equal(whole.kg_triples, full.kg_triples)
