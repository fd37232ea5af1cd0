"""The evaluation protocol is fair: nothing of a test interaction reaches training, ties are
broken at random with a fixed seed, user-stated knowledge after the test is held out, and the
interactions variant imports interactions only, and the no-knowledge variant no knowledge."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from kgrec.config import Settings
from kgrec.datasets import DemoShopDataset, InteractionRecord, ItemRecord, TripleRecord, open_dataset
from kgrec.datasets.records import Problems
from kgrec.demo_shop import EVENT_RELATIONS, ShopSpec, event_links, generate_shop
from kgrec.gateway import open_gateway
from kgrec.item_graphs import cooccurrence_cosine, interaction_matrix, popularity, transitions
from kgrec.training_graph import TrainingGraph
from tests.subsets import amazon_beauty_subset
from workers.training import evaluate as evaluate_module
from workers.training.evaluate import (
    SplitDataset,
    leave_last_out,
    load_training_graph,
    scratch_graph_name,
    split_dataset,
    stated_cutoff,
)
from workers.training.holdout import hold_out_latest, validation_pairs


@pytest.fixture(scope="module")
def beauty(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 80 users of Amazon Beauty, their items and those items' triples."""
    return amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path_factory.mktemp("b80"), users=80)


def _graph_from(train: list[InteractionRecord], like: TrainingGraph) -> TrainingGraph:
    """What the training graph must be: ``train`` alone, on the pulled graph's indices."""
    users = {u: k for k, u in enumerate(like.user_ids)}
    items = {i: k for k, i in enumerate(like.item_ids)}
    return TrainingGraph(
        user_ids=like.user_ids,
        item_ids=like.item_ids,
        inter_user=np.array([users[r.user_id] for r in train], dtype=np.int64),
        inter_item=np.array([items[r.item_id] for r in train], dtype=np.int64),
        inter_weight=np.ones(len(train), dtype=np.float32),
        inter_order=np.array([r.seq for r in train], dtype=np.int64),
    )


def test_no_test_interaction_nor_a_count_derived_from_one_reaches_the_training_graph(
    settings: Settings, graph_server: object, beauty: Path
) -> None:
    split = split_dataset(open_dataset(str(beauty), settings.datasets_dir), "leave-last-out")
    graph = load_training_graph(settings, split, "leave-last-out", lambda _m: None)

    pulled = {
        (graph.user_ids[u], graph.item_ids[i])
        for u, i in zip(graph.inter_user, graph.inter_item, strict=True)
    }
    test_pairs = {(user, item) for user, items in split.test.items() for item in items}
    assert len(split.test) == 80 and len(test_pairs) == 80
    assert not pulled & test_pairs
    assert pulled == {(r.user_id, r.item_id) for r in split.train}

    # Every count the model and the baselines derive is the training part's, and nothing more.
    expected = _graph_from(split.train, graph)
    counts = Counter(r.item_id for r in split.train)
    assert popularity(graph).tolist() == [counts.get(i, 0) for i in graph.item_ids]
    assert (interaction_matrix(graph) != interaction_matrix(expected)).nnz == 0
    assert abs(cooccurrence_cosine(graph) - cooccurrence_cosine(expected)).max() == 0
    assert abs(transitions(graph) - transitions(expected)).max() == 0
    # A test item nobody trained on is in the catalogue but has no interaction at all.
    only_in_test = {i for _, i in test_pairs} - {r.item_id for r in split.train}
    for item in only_in_test:
        assert popularity(graph)[graph.item_ids.index(item)] == 0


def test_the_interactions_variant_imports_interactions_only(
    settings: Settings, graph_server: object, beauty: Path
) -> None:
    full = split_dataset(open_dataset(str(beauty), settings.datasets_dir), "leave-last-out")
    assert any(item.brand or item.categories for item in full.items())  # the data has metadata
    assert any(True for _ in full.triples())

    split = split_dataset(open_dataset(str(beauty), settings.datasets_dir), "leave-last-out", True)
    graph = load_training_graph(settings, split, "leave-last-out", lambda _m: None)

    assert graph.inter_user.size == len(split.train)
    assert graph.brand_ids == [] and graph.category_ids == []
    assert (graph.item_brand < 0).all() and graph.item_category_pairs.size == 0
    assert all(edges.size == 0 for edges in graph.knowledge.values())
    assert graph.kg_triples.size == 0 and graph.entity_ids == []
    assert all(text == "" for text in graph.item_text)  # nothing to embed: no brand or category text


def test_the_no_knowledge_variant_imports_item_text_without_knowledge(
    settings: Settings, graph_server: object, beauty: Path
) -> None:
    split = split_dataset(open_dataset(str(beauty), settings.datasets_dir), "leave-last-out", knowledge=False)
    assert not any(item.title for item in split.base.items())  # this copy of Beauty has no titles
    graph = load_training_graph(settings, split, "leave-last-out", lambda _m: None)

    assert graph.inter_user.size == len(split.train)
    assert graph.brand_ids == [] and graph.category_ids == []
    assert all(edges.size == 0 for edges in graph.knowledge.values())
    assert graph.kg_triples.size == 0 and graph.entity_ids == []
    # The text the graph model and the topics embed is the item's own (the title; here none), with no
    # brand or category names in it (the full import's text is made of them).
    assert all(text == "" for text in graph.item_text)


def test_two_evaluations_of_one_data_set_never_load_each_others_scratch_graph(
    settings: Settings, graph_server: object, beauty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs of one data set and protocol (two variants) use one scratch graph. Run A starts run B
    # between its clear and its import, and waits until B could have imported and A imported in turn.
    interactions = split_dataset(open_dataset(str(beauty), settings.datasets_dir), "leave-last-out", True)
    full = split_dataset(open_dataset(str(beauty), settings.datasets_dir), "leave-last-out")
    real_import = evaluate_module.import_dataset
    b_imported, a_imported = threading.Event(), threading.Event()
    pulled: dict[str, TrainingGraph] = {}
    b = threading.Thread(
        target=lambda: pulled.setdefault("b", load_training_graph(settings, full, "leave-last-out", print))
    )

    def importing(gateway: object, split: SplitDataset, settings_: Settings) -> object:
        if split is interactions:
            b.start()
            b_imported.wait(timeout=5)  # only without the lock can B import meanwhile
        result = real_import(gateway, split, settings_)
        if split is full:
            b_imported.set()
            a_imported.wait(timeout=5)
        else:
            a_imported.set()
        return result

    monkeypatch.setattr(evaluate_module, "import_dataset", importing)
    a = load_training_graph(settings, interactions, "leave-last-out", print)
    b.join()

    assert a.inter_user.size == len(interactions.train)
    assert a.brand_ids == [] and a.kg_triples.size == 0  # none of B's metadata
    assert pulled["b"].inter_user.size == len(full.train) and pulled["b"].brand_ids


@dataclass
class Tiny:
    """A data set written inline."""

    rows: list[InteractionRecord]
    stated: list[TripleRecord] = field(default_factory=list)
    name: str = "tiny"
    problems: Problems = field(default_factory=Problems)
    flags_bots: bool = False

    def items(self) -> Iterator[ItemRecord]:
        return iter([ItemRecord(i, brand="b") for i in sorted({r.item_id for r in self.rows})])

    def interactions(self) -> Iterator[InteractionRecord]:
        return iter(self.rows)

    def triples(self) -> Iterator[TripleRecord]:
        return iter(self.stated)


@dataclass
class CoPurchases(Tiny):
    """A data set whose ``also_bought`` links are its users' consecutive interactions (in file order),
    counted from its own interactions as a shop counts them: it declares the relation derived."""

    derived_relations: tuple[str, ...] = ("also_bought",)

    def triples(self) -> Iterator[TripleRecord]:
        yield from self.stated
        yield from self.derived_triples(())

    def derived_triples(self, held_out: Iterable[tuple[str, str]]) -> Iterator[TripleRecord]:
        held = set(held_out)
        bought: dict[str, list[str]] = defaultdict(list)
        for r in self.rows:
            if (r.user_id, r.item_id) not in held:
                bought[r.user_id].append(r.item_id)
        return (TripleRecord(a, "also_bought", b) for items in bought.values() for a, b in pairwise(items))


CO_PURCHASES = [
    InteractionRecord("u1", "a", "purchase", ts=1),
    InteractionRecord("u1", "b", "purchase", ts=2),
    InteractionRecord("u1", "c", "purchase", ts=3),  # u1's test item
    InteractionRecord("u2", "b", "purchase", ts=1),
    InteractionRecord("u2", "c", "purchase", ts=2),
    InteractionRecord("u2", "d", "purchase", ts=3),  # u2's test item
]


def test_an_evaluation_never_empties_the_serving_graph(settings: Settings, graph_server: object) -> None:
    """``kgrec evaluate`` empties its scratch graph first: with KGREC_EVAL_DATABASE equal to
    NEO4J_DATABASE (from_env refuses it; settings made otherwise did not), or a KGREC_GRAPH named like
    the embedded scratch graph, it emptied the serving one. Refused before the graph is opened."""
    split = split_dataset(Tiny(CO_PURCHASES, name="guard"), "leave-last-out")
    serving = replace(settings, graph_name="eval_guard_leave_last_out", eval_database=settings.neo4j_database)
    with open_gateway(serving) as gateway:
        gateway.run_query("CREATE (:Item {id: 'served-item'})", {})
        try:
            with pytest.raises(ValueError, match=r"`kgrec evaluate` (empties|would empty)"):
                load_training_graph(serving, split, "leave-last-out", lambda _m: None)
            assert gateway.run_query("MATCH (i:Item {id: 'served-item'}) RETURN count(i) AS n", {}) == [
                {"n": 1}
            ]
        finally:
            gateway.run_query("MATCH (i:Item {id: 'served-item'}) DELETE i", {})
    on_neo4j = replace(settings, neo4j_uri="bolt://graph:7687", neo4j_database="shop")
    for scratch in ("shop", "SHOP", ""):
        with pytest.raises(
            ValueError, match=f"^KGREC_EVAL_DATABASE must .*not {scratch!r}$|must not be empty"
        ):
            scratch_graph_name(replace(on_neo4j, eval_database=scratch), "guard", "leave-last-out")
    assert (
        scratch_graph_name(replace(on_neo4j, eval_database="shopeval"), "guard", "leave-last-out")
        == "shopeval"
    )


def test_a_relation_a_data_set_derives_from_its_interactions_is_rebuilt_without_the_test_ones() -> None:
    stated = [TripleRecord("a", "produced_by", "acme")]
    dataset = CoPurchases(CO_PURCHASES, stated)
    assert TripleRecord("c", "also_bought", "d") in set(dataset.triples())  # u2's test purchase
    split = leave_last_out(dataset)
    assert split.test == {"u1": {"c"}, "u2": {"d"}}
    # b-c stays: u2 bought c in training; c-d rests on u2's test purchase alone
    assert list(split.triples()) == [
        TripleRecord("a", "produced_by", "acme"),
        TripleRecord("a", "also_bought", "b"),
        TripleRecord("b", "also_bought", "c"),
    ]
    # the same triples in a data set that declares no derived relation are copied as they are
    written = list(dataset.triples())
    assert list(leave_last_out(Tiny(CO_PURCHASES, written)).triples()) == written


# u3 has three training items: x, y, then z, the latest, which training holds out for validation
WITH_VALIDATION = [
    *CO_PURCHASES,
    InteractionRecord("u3", "x", "purchase", ts=1),
    InteractionRecord("u3", "y", "purchase", ts=2),
    InteractionRecord("u3", "z", "purchase", ts=3),  # u3's validation item
    InteractionRecord("u3", "w", "purchase", ts=4),  # u3's test item
]


def test_a_derived_relation_is_rebuilt_without_each_users_validation_pair_too() -> None:
    """The blend and the baselines are fitted on each user's latest training pair: a link counted
    over it would show the fit its target (y-z rests on u3's validation purchase alone)."""
    split = leave_last_out(CoPurchases(WITH_VALIDATION))
    assert split.test == {"u1": {"c"}, "u2": {"d"}, "u3": {"w"}}
    assert validation_pairs(split.train) == {("u3", "z")}  # u1 and u2 have two training items only
    links = {(t.head, t.tail) for t in split.triples() if t.relation == "also_bought"}
    assert links == {("a", "b"), ("b", "c"), ("x", "y")}  # not y-z (validation), nor z-w (test)


def test_the_validation_pairs_are_those_the_hold_out_takes_from_the_imported_graph(
    settings: Settings, graph_server: object
) -> None:
    """:func:`validation_pairs` reads the records as the import merges them (a pair's latest time)
    and ties as :func:`hold_out_latest` breaks them: same times, and no times at all."""
    rows = [
        InteractionRecord("t1", "p1", "view", ts=10),
        InteractionRecord("t1", "p2", "view", ts=20),
        InteractionRecord("t1", "p3", "view", ts=30),
        InteractionRecord("t1", "p1", "purchase", ts=40),  # p1's latest record: t1's validation pair
        InteractionRecord("t1", "p4", "purchase", ts=50),  # t1's test item
        *(InteractionRecord("t2", f"p{k}", "purchase", ts=7) for k in range(1, 7)),  # all tied
        *(InteractionRecord("t3", f"p{k}", "rating") for k in range(1, 7)),  # no time, no seq
        InteractionRecord("t3", "p9", "rating", ts=5),
    ]
    split = leave_last_out(Tiny(rows, name="validation_pairs"))
    graph = load_training_graph(settings, split, "leave-last-out", lambda _m: None)
    _, targets = hold_out_latest(graph)
    held = {(graph.user_ids[u], graph.item_ids[i]) for u, i in targets.items()}
    assert ("t1", "p1") in held and len(held) == 3
    assert validation_pairs(split.train) == held


def test_knowledge_a_test_user_stated_from_their_validation_interaction_on_is_held_out() -> None:
    rows = [
        InteractionRecord("u1", "m0", "rating", ts=10),
        InteractionRecord("u1", "m1", "rating", ts=60),  # u1's latest training (validation) interaction
        InteractionRecord("u1", "m2", "rating", ts=100),  # u1's test interaction
        InteractionRecord("u2", "m1", "rating", ts=5),  # u2 has one interaction: training only
    ]
    stated = [
        TripleRecord("m0", "tagged", "funny", user_id="u1", ts=50),  # before validation: kept
        TripleRecord("m1", "tagged", "dark", user_id="u1", ts=60),  # the validation item, as rated: out
        TripleRecord("m2", "tagged", "long", user_id="u1", ts=80),  # between validation and test: out
        TripleRecord("m2", "tagged", "late", user_id="u1", ts=150),  # after the test: out
        TripleRecord("m2", "tagged", "odd", user_id="u1", ts=None),  # unknown time: held out
        TripleRecord("m2", "tagged", "great", user_id="u2", ts=900),  # not a test user: kept
        TripleRecord("m1", "genre", "comedy"),  # catalogue knowledge: kept
    ]
    split = leave_last_out(Tiny(rows, stated))
    assert split.test == {"u1": {"m2"}} and split.cutoff == {"u1": 60}
    assert [t.tail for t in split.triples()] == ["funny", "great", "comedy"]


def test_every_record_of_the_held_out_pair_leaves_training_and_never_reaches_the_graph(
    settings: Settings, graph_server: object
) -> None:
    # A shop's funnel: the test item was viewed and carted before its purchase, the last record.
    day = 86_400_000
    rows = [
        InteractionRecord("u1", "p1", "view", ts=1 * day),
        InteractionRecord("u1", "p2", "view", ts=2 * day),
        InteractionRecord("u1", "p3", "view", ts=3 * day),
        InteractionRecord("u1", "p2", "purchase", ts=4 * day),
        InteractionRecord("u1", "p3", "cart", ts=5 * day),
        InteractionRecord("u1", "p3", "purchase", ts=6 * day),  # last record: p3 is u1's test item
        InteractionRecord("u2", "p1", "view", ts=1 * day),
        InteractionRecord("u2", "p2", "view", ts=2 * day),
        InteractionRecord("u2", "p1", "purchase", ts=3 * day),  # p1 is u2's test item
        InteractionRecord("u3", "p2", "view", ts=1 * day),
        InteractionRecord("u3", "p2", "purchase", ts=2 * day),  # one item only: training, no test
    ]
    split = leave_last_out(Tiny(rows))
    assert split.test == {"u1": {"p3"}, "u2": {"p1"}}
    assert [(r.user_id, r.item_id, r.type) for r in split.train] == [
        ("u1", "p1", "view"),
        ("u1", "p2", "view"),
        ("u1", "p2", "purchase"),
        ("u2", "p2", "view"),
        ("u3", "p2", "view"),
        ("u3", "p2", "purchase"),
    ]
    # Held-out times start at the test item's first record (u1's view of p3 on day 3).
    assert split.cutoff == {"u1": 3 * day, "u2": 1 * day}

    graph = load_training_graph(settings, split, "leave-last-out", lambda _m: None)
    pulled = {
        (graph.user_ids[u], graph.item_ids[i])
        for u, i in zip(graph.inter_user, graph.inter_item, strict=True)
    }
    assert pulled == {("u1", "p1"), ("u1", "p2"), ("u2", "p2"), ("u3", "p2")}
    assert popularity(graph).tolist() == [{"p1": 1, "p2": 3, "p3": 0}[i] for i in graph.item_ids]


def test_a_demo_shops_also_bought_links_come_from_training_purchases_alone(tmp_path: Path) -> None:
    generate_shop(ShopSpec(users=400, items=60, seed=5), tmp_path / "shop")
    split = split_dataset(open_dataset(str(tmp_path / "shop"), tmp_path), "leave-last-out")
    purchases: dict[str, list[str]] = defaultdict(list)  # train is each user's records in time order
    for record in split.train:
        if record.type == "purchase":
            purchases[record.user_id].append(record.item_id)
    consecutive = {frozenset(pair) for items in purchases.values() for pair in pairwise(items)}

    def unsupported(triples: Iterable[TripleRecord]) -> set[frozenset[str]]:
        return {frozenset((t.head, t.tail)) for t in triples if t.relation == "also_bought"} - consecutive

    assert unsupported(split.base.triples())  # the shop's file counts test purchases too
    links = [t for t in split.triples() if t.relation == "also_bought"]
    assert links and not unsupported(links)


def test_a_demo_shops_split_triples_are_its_other_triples_then_its_links_without_the_test_pairs(
    tmp_path: Path,
) -> None:
    """The demo shop's rebuilt links are asked of the data set (``derived_relations``); the split's
    triples are exactly what they were when the split named the demo shop itself: every other
    triple in file order, then ``event_links`` of the pairs it does not hold out (the test pairs and
    each user's validation pair)."""
    generate_shop(ShopSpec(users=300, items=50, seed=9), tmp_path / "shop")
    shop = open_dataset(str(tmp_path / "shop"), tmp_path)
    assert isinstance(shop, DemoShopDataset) and shop.derived_relations == EVENT_RELATIONS
    split = split_dataset(shop, "leave-last-out")
    held_out = [(u, i) for u, items in split.test.items() for i in items]
    held_out += sorted(validation_pairs(split.train))
    expected = [t for t in shop.triples() if t.relation not in EVENT_RELATIONS]
    expected += [TripleRecord(*link) for link in event_links(tmp_path / "shop", held_out)]
    assert list(split.triples()) == expected
    assert set(expected) != set(shop.triples())  # the file's links count the test events too


def test_the_stated_cutoff_is_the_latest_training_time_never_after_the_held_out_ones() -> None:
    assert stated_cutoff([10, 60, 40], [100]) == 60
    assert stated_cutoff([10, 120], [100, 300]) == 100  # a given split may interleave the two
    assert stated_cutoff([], [100]) == 100
    assert stated_cutoff([10, None], [100]) is None
    assert stated_cutoff([10], [None]) is None


def test_same_time_ties_are_broken_at_random_with_a_fixed_seed() -> None:
    # Each user's last two interactions share a time, listed in item order (as MovieLens files are).
    rows = [
        record
        for u in range(400)
        for record in (
            InteractionRecord(f"u{u}", "a", "view", ts=1),
            InteractionRecord(f"u{u}", "b", "view", ts=2),
            InteractionRecord(f"u{u}", "c", "view", ts=2),
        )
    ]
    first = leave_last_out(Tiny(rows))
    chosen = Counter(next(iter(items)) for items in first.test.values())
    assert set(chosen) == {"b", "c"}  # never "a", and not always the later file row
    assert 150 < chosen["b"] < 250
    assert leave_last_out(Tiny(rows)).test == first.test  # reproducible
    assert leave_last_out(Tiny(rows), seed=8).test != first.test  # and it is the seed that fixes it


def test_seq_order_decides_without_ts_and_interactions_only_hides_metadata() -> None:
    rows = [InteractionRecord("u", item, "view", seq=seq) for item, seq in (("x", 2), ("y", 0), ("z", 1))]
    split = leave_last_out(Tiny(rows, [TripleRecord("x", "also_bought", "y")]))
    assert split.test == {"u": {"x"}}
    split.interactions_only = True
    assert all(item == ItemRecord(item.item_id) for item in split.items())
    assert list(split.triples()) == [] and list(split.entities()) == []
    assert isinstance(split, SplitDataset)


def test_without_knowledge_items_keep_their_own_text_and_no_triple_is_read() -> None:
    rows = [InteractionRecord("u", item, "view", seq=seq) for item, seq in (("x", 0), ("y", 1))]

    class Described(Tiny):
        def items(self) -> Iterator[ItemRecord]:
            return iter(
                [
                    ItemRecord(i, brand="b", categories=("c",), title=f"T{i}", price=2.0, description="d")
                    for i in ("x", "y")
                ]
            )

    split = leave_last_out(Described(rows, [TripleRecord("x", "genre", "comedy")]))
    assert [t.tail for t in split.triples()] == ["comedy"]
    split.knowledge = False
    assert list(split.items()) == [ItemRecord(i, title=f"T{i}", description="d") for i in ("x", "y")]
    assert list(split.triples()) == [] and list(split.entities()) == []
