"""The ``shared_entities`` signal: items linked through the open knowledge graph's entities."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from kgrec import item_graphs
from kgrec.item_graphs import item_entity_incidence, shared_entities, top_k_per_row
from kgrec.training_graph import TrainingGraph

ITEMS = ["a", "b", "c", "d", "e"]
ENTITIES = ["colour:Black", "colour:Red", "feature:Matte"]
BLACK, RED, MATTE = (len(ITEMS) + i for i in range(3))


def graph() -> TrainingGraph:
    """a, b, c are Black; a and d are Matte (d's triple written entity → item); d is Red alone.

    e shares only a category with c, and a–e are also linked item to item (not an entity).
    """
    triples = np.array(
        [
            [0, 0, BLACK],
            [1, 0, BLACK],
            [2, 0, BLACK],
            [3, 0, RED],
            [0, 1, MATTE],
            [MATTE, 2, 3],  # entity → item: the same attribute, written the other way round
            [0, 3, 4],  # item → item: a co-purchase link, not a shared entity
        ]
    )
    return TrainingGraph(
        user_ids=["u0"],
        item_ids=ITEMS,
        inter_user=np.array([0]),
        inter_item=np.array([0]),
        inter_weight=np.ones(1),
        inter_order=np.array([0]),
        category_ids=["Lips"],
        item_category_pairs=np.array([[2, 0], [4, 0]]),
        entity_ids=ENTITIES,
        entity_kinds=["colour", "colour", "feature"],
        relation_names=["colour", "feature", "matte_of", "also_bought"],
        kg_triples=triples,
    )


def test_the_incidence_has_entities_either_way_round_and_categories_but_no_item_links() -> None:
    incidence = item_entity_incidence(graph()).toarray()
    assert incidence.shape == (5, 4)  # three entities, then one category
    assert incidence.tolist() == [
        [1, 0, 1, 0],
        [1, 0, 0, 0],
        [1, 0, 0, 1],
        [0, 1, 1, 0],
        [0, 0, 0, 1],
    ]


def test_rarer_shared_entities_weigh_more_and_single_item_entities_link_nothing() -> None:
    matrix = shared_entities(graph()).toarray()
    assert np.all(np.diag(matrix) == 0)
    # a shares Black (3 items) with b and c, and Matte (2 items) with d: Matte's IDF is higher
    assert matrix[0, 3] > matrix[0, 1] > 0
    # c shares Black with a as b does, but c also has a category a lacks: a weaker match (cosine)
    assert matrix[0, 1] > matrix[0, 2] > 0
    # e and c share the category; e and a only an item–item link, which is not an entity
    assert matrix[4, 2] > 0 and matrix[4, 0] == 0
    # Red has one item: it links d to nothing
    assert matrix[3].nonzero()[0].tolist() == [0]
    # undirected before the row normalisation: the same pairs both ways
    assert ((matrix > 0) == (matrix.T > 0)).all()


def test_entities_of_too_many_items_are_left_out() -> None:
    matrix = shared_entities(graph(), max_items=2).toarray()
    # Black (3 items) is left out: a and b share nothing else
    assert matrix[0, 1] == 0 and matrix[1].sum() == 0
    assert matrix[0, 3] > 0


def test_the_blocked_product_equals_the_whole_one(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = shared_entities(graph())
    monkeypatch.setattr(item_graphs, "_SHARED_ENTITY_BLOCK", 2)
    blocked = shared_entities(graph())
    assert abs(whole - blocked).max() < 1e-7
    assert np.all(blocked.diagonal() == 0)


def test_top_k_per_row_keeps_the_largest_and_breaks_ties_by_column() -> None:
    matrix = sp.csr_matrix(np.array([[0.1, 0.5, 0.5, 0.2], [0.0, 0.3, 0.0, 0.0]], dtype=np.float32))
    kept = top_k_per_row(matrix, 2).toarray()
    np.testing.assert_allclose(kept, [[0, 0.5, 0.5, 0], [0, 0.3, 0, 0]])
    tied = top_k_per_row(sp.csr_matrix(np.array([[0.2, 0.2, 0.2]], dtype=np.float32)), 2).toarray()
    np.testing.assert_allclose(tied, [[0.2, 0.2, 0]])
    assert shared_entities(graph(), top_k=1).getnnz(axis=1).max() == 1


def test_tied_neighbours_are_the_most_interacted_with() -> None:
    """x, y and z share one genre and nothing else: for x, y and z tie; the busier one is kept."""
    tied = sp.csr_matrix(np.array([[0.0, 0.2, 0.2, 0.2]], dtype=np.float32))
    kept = top_k_per_row(tied, 2, preference=np.array([0, 1, 9, 5])).toarray()
    np.testing.assert_allclose(kept, [[0, 0, 0.2, 0.2]])

    def shop(busy: int) -> TrainingGraph:
        noir = 5
        return TrainingGraph(
            user_ids=["u0", "u1", "u2"],
            item_ids=["x", "y", "z", "p", "q"],
            inter_user=np.array([0, 1, 2]),
            inter_item=np.array([busy, busy, 3]),
            inter_weight=np.ones(3),
            inter_order=np.arange(3),
            entity_ids=["genre:Noir"],
            entity_kinds=["genre"],
            relation_names=["genre"],
            kg_triples=np.array([[0, 0, noir], [1, 0, noir], [2, 0, noir]]),
        )

    assert shared_entities(shop(busy=2), top_k=1)[0].nonzero()[1].tolist() == [2]
    assert shared_entities(shop(busy=1), top_k=1)[0].nonzero()[1].tolist() == [1]
