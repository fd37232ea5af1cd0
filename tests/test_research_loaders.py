"""The research-layout loaders (KGAT/KGIN, KGCN/RippleNet, RecBole) and MovieLens tags, on fixtures written here.

The fixtures (tests/fixtures/kgat_layout, tests/fixtures/kgcn_layout/{kg_final,kg_raw},
tests/fixtures/recbole_layout) each
hold a few users, items, entities and relations, hostile-but-valid lines (odd spacing,
CRLF, ids Cypher would choke on, URIs with ``#`` and brackets, an entity org id equal to
an item id, colliding relation names) and invalid lines, which must be reported with
file, line and reason while the rest loads.
"""

from __future__ import annotations

import csv
import gzip
import random
import shutil
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from graph_schema.relation_names import relation_problem, relationship_type
from graph_schema.statements import admin
from graph_schema.statements.knowledge import RELATION_COUNTS
from graph_schema.statements.privacy import ERASE_USER
from kgrec.config import Settings
from kgrec.datasets import (
    KgatDataset,
    KgcnDataset,
    LayoutDataset,
    MovieLensDataset,
    RecboleDataset,
    folder_layout,
    open_dataset,
)
from kgrec.datasets.kgat import parse_index, readable_relation, relation_kind, unique_relation_names
from kgrec.datasets.movielens import release_year, tag_entity_id
from kgrec.datasets.records import EntityRecord, InteractionRecord, ItemRecord, TripleRecord, whole_seconds_ms
from kgrec.demo_shop import EVENT_RELATIONS, ShopSpec, event_links, generate_shop
from kgrec.erasure import user_hash
from kgrec.events.formats import movielens_tag as movielens_tag_event
from kgrec.events.formats import rees46 as rees46_event
from kgrec.events.formats import taobao as taobao_event
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec.limits import id_problem, kind_problem
from tests.test_evaluate_protocol import CO_PURCHASES, WITH_VALIDATION, CoPurchases
from tools.to_kgat_layout import to_kgat_layout
from workers.training.holdout import validation_pairs

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KGAT = FIXTURES / "kgat_layout"
KGCN_FINAL = FIXTURES / "kgcn_layout" / "kg_final"
KGCN_RAW = FIXTURES / "kgcn_layout" / "kg_raw"
RECBOLE = FIXTURES / "recbole_layout"

# kgat_layout's ids
A, ANA, ZOE = "A3RTKL9KB8KLID", "ana.lima@example.org", "zoë"
I0, I1, I2, I3 = "0553092626", "0393316041", "038548254X", 'B00"<i>`x`'
SUBJECTS, AUTHOR = "book.written_work.subjects", "book.written_work.author"
VOCAB = "example.org/vocab_written-by_co-author"


def problems_of(dataset: object) -> set[tuple[str, int, str]]:
    return {(Path(p.file).name, p.line, p.reason) for p in dataset.problems.rows}  # type: ignore[attr-defined]


# --- relation names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("http://rdf.freebase.com/ns/film.film.genre", "film.film.genre"),
        ("http://www.w3.org/1999/02/22-rdf-syntax-ns#type", "rdf:type"),
        ("http://www.w3.org/2000/01/rdf-schema#label", "rdfs:label"),
        ("<http://schema.org/author>", "schema:author"),
        ("film.film.genre", "film.film.genre"),
        ("<http://example.org/vocab#written-by(co-author)>", VOCAB),
        ("https://example.org/géné#x?y=1", "example.org/g_n_x_y_1"),
        ("'})-[r]-() DETACH DELETE n //", "-_r_-_DETACH_DELETE_n_//"),
        ("###", None),
        ("<>", None),
    ],
)
def test_relation_names_are_derived_from_uris_by_one_rule(raw: str, name: str | None) -> None:
    derived = readable_relation(raw)
    assert derived == name
    if derived is not None:
        assert relation_problem(derived) is None
        relationship_type(derived)  # reaches Cypher text only through the one rule; raises if refused


def test_a_long_uri_keeps_its_most_specific_end() -> None:
    raw = "http://example.org/" + "a" * 200 + "/book.written_work.subjects"
    derived = readable_relation(raw)
    assert derived is not None and len(derived) <= 128 and relation_problem(derived) is None
    assert derived.endswith("/book.written_work.subjects")


def test_every_relation_gets_a_name_of_its_own() -> None:
    names = unique_relation_names({0: "http://rdf.freebase.com/ns/a.b", 1: "a.b", 2: "%%", 3: "r2"})
    assert names == {0: "a.b", 1: "a.b_r1", 2: "r2", 3: "r2_r3"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the suffix given to relation 2 is relation 1's own name: it was stored twice as a_r2
        ({0: "a", 1: "a_r2", 2: "a"}, {0: "a", 1: "a_r2", 2: "a_r2_r2"}),
        ({0: "a", 1: "a", 2: "a_r1"}, {0: "a", 1: "a_r1_r2", 2: "a_r1"}),  # a listed name stays its own
        (
            {0: "a", 1: "a_r1", 2: "a_r1_r2", 3: "a", 4: "a"},
            {0: "a", 1: "a_r1", 2: "a_r1_r2", 3: "a_r3", 4: "a_r4"},
        ),
    ],
)
def test_relation_names_are_unique_even_when_a_suffix_is_listed(
    raw: dict[int, str], expected: dict[int, str]
) -> None:
    assert unique_relation_names(raw) == expected


def test_relation_names_are_unique_for_any_list() -> None:
    pieces = ["a", "_r1", "_r2", "_r3", "%", "r1", "r2", "x" * 126]
    rng = random.Random(5)
    for _ in range(2_000):
        raw = {remap: "".join(rng.choices(pieces, k=rng.randint(1, 3))) for remap in rng.sample(range(9), 6)}
        names = unique_relation_names(raw)
        assert set(names) == set(raw)
        assert len(set(names.values())) == len(names), raw
        assert all(relation_problem(name) is None for name in names.values()), raw
    assert relation_kind("film.film.genre_r2_r2") == "genre"  # appended suffixes say nothing of the kind


@pytest.mark.parametrize(
    ("relation", "kind"),
    [
        ("film.film.genre", "genre"),
        ("rdf:type", "type"),
        ("type.object.type", "type"),
        ("book.written_work.subjects_r5", "subjects"),
        (VOCAB, "vocab_written-by_co-author"),
        ("r7", None),
        ("x." + "y" * 100, "y" * 64),
    ],
)
def test_entity_kinds_come_from_the_relation_that_points_at_them(relation: str, kind: str | None) -> None:
    assert relation_kind(relation) == kind
    if kind is not None:
        assert kind_problem(kind) is None


# --- KGAT/KGIN layout --------------------------------------------------------------------------


def test_kgat_layout_yields_the_listed_ids_and_reports_bad_lines() -> None:
    dataset = KgatDataset(KGAT)
    assert dataset.name == "kgat_layout"
    assert list(dataset.items()) == [ItemRecord(i) for i in (I0, I1, I2, I3)]
    train = [(r.user_id, r.item_id) for r in dataset.split("train")]
    assert train == [(A, I0), (A, I1), (A, I2), (ANA, I1), (ANA, I3), (ZOE, I2), (ANA, I0)]
    test = [(r.user_id, r.item_id) for r in dataset.split("test")]  # CRLF line ends
    assert test == [(A, I3), (ANA, I2), (ZOE, I0), (ZOE, I3)]
    assert all(r.type == "purchase" and r.ts is None for r in dataset.interactions())
    assert list(dataset.triples()) == [
        TripleRecord(I0, SUBJECTS, "m.05qjc"),
        TripleRecord(I1, SUBJECTS, "m.05qjc"),
        TripleRecord(I0, AUTHOR, "m.0b3xkl"),
        TripleRecord(I2, AUTHOR, "m.0b3xkl"),
        TripleRecord(I0, "type.object.type", "m.01xryvm"),
        TripleRecord("m.05qjc", "rdf:type", "m.01xryvm"),  # entity to entity
        TripleRecord(I3, VOCAB, "e:7"),  # org id 0393316041 is an item's id
        TripleRecord("m.0b3xkl", f"{SUBJECTS}_r5", "e:8"),  # org id over 256 characters
        TripleRecord("e:8", "r6", "e:9"),  # "###" names nothing; m.0b3xkl was taken
        TripleRecord(I1, SUBJECTS, I0),  # item to item
        TripleRecord(I0, SUBJECTS, "m.05qjc"),
        TripleRecord(I2, AUTHOR, "m.0b3xkl"),
        TripleRecord(I2, SUBJECTS, '"""Good Night'),  # a Freebase literal: the org id has a space
        TripleRecord('"""Good Night', SUBJECTS, "e:11"),  # an empty org id
    ]
    assert list(dataset.entities()) == [
        EntityRecord("m.05qjc", "subjects", "m.05qjc"),
        EntityRecord("m.0b3xkl", "author", "m.0b3xkl"),
        EntityRecord("m.01xryvm", "type", "m.01xryvm"),
        EntityRecord("e:7", "vocab_written-by_co-author", "0393316041"),
        EntityRecord("e:8", "subjects", None),
        EntityRecord("e:9", None, "m.0b3xkl"),
        EntityRecord('"""Good Night', "subjects", '"""Good Night'),
        EntityRecord("e:11", "subjects", None),
    ]
    assert problems_of(dataset) == {
        ("user_list.txt", 6, "expected org_id remap_id, found 1 field(s)"),
        ("user_list.txt", 7, "user remap_id 'x' is not an integer"),
        ("user_list.txt", 8, "user remap_id 1 is listed twice"),
        ("train.txt", 7, "user '9' is not in user_list"),
        ("train.txt", 8, "item 'x' is not an integer"),
        ("train.txt", 9, "item '17' is not in item_list"),
        ("kg_final.txt", 13, "expected 3 fields, found 2"),
        ("kg_final.txt", 14, "relation 17 is not in relation_list"),
        ("kg_final.txt", 15, "entity 42 is not in entity_list"),
        ("kg_final.txt", 16, "'x' is not a non-negative integer"),
    }


def _gzip_all(source: Path, target: Path) -> None:
    target.mkdir()
    for path in source.iterdir():
        with open(path, "rb") as raw, gzip.open(target / f"{path.name}.gz", "wb") as packed:
            shutil.copyfileobj(raw, packed)


def test_kgat_layout_reads_gzipped_files_the_same(tmp_path: Path) -> None:
    _gzip_all(KGAT, tmp_path / "packed")
    plain, packed = KgatDataset(KGAT), KgatDataset(tmp_path / "packed")
    for read in ("items", "interactions", "triples", "entities"):
        assert list(getattr(packed, read)()) == list(getattr(plain, read)()), read
    assert problems_of(packed) == {(f"{f}.gz", line, reason) for f, line, reason in problems_of(plain)}


def test_kgat_layout_without_id_lists_uses_the_remapped_ids(tmp_path: Path) -> None:
    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("train.txt", "test.txt", "kg_final.txt"):
        shutil.copy(KGAT / name, folder / name)
    dataset = KgatDataset(folder)
    assert dataset.n_items() == 18  # 1 + the largest item in the splits (17, unlisted now)
    assert ("9", "1") in {(r.user_id, r.item_id) for r in dataset.interactions()}
    triples = list(dataset.triples())
    assert triples[0] == TripleRecord("0", "r2", "4")  # entity 4 < 18 is an item here
    assert TripleRecord("0", "r17", "4") in triples and TripleRecord("0", "r2", "e:42") in triples
    assert all(e.kind is None and e.name is None for e in dataset.entities())


def test_the_builtin_kgat_amazon_book_keeps_its_ids(shared_data: Path) -> None:
    dataset = open_dataset("kgat-amazon-book", shared_data)
    assert isinstance(dataset, KgatDataset) and dataset.name == "kgat-amazon-book"
    train = list(dataset.split("train"))
    assert len(train) == 652_514 and len(list(dataset.split("test"))) == 193_920
    assert train[0] == InteractionRecord("A3RTKL9KB8KLID", "0553092626", "purchase")
    items = list(dataset.items())
    assert len(items) == 24_915 and items[2] == ItemRecord("038548254X")
    assert list(dataset.triples()) == [] and list(dataset.entities()) == []  # no kg_final.txt there
    assert dataset.problems.rows == []
    assert dataset.relation_names()[3] == "rdf:type"
    assert all(relation_problem(n) is None for n in dataset.relation_names().values())


# --- KGCN/RippleNet layout ---------------------------------------------------------------------


RATING_PROBLEMS = {
    ("ratings_final.txt", 9, "label 5 is neither 0 nor 1"),
    ("ratings_final.txt", 10, "'x' is not a non-negative integer"),
    ("ratings_final.txt", 11, "expected 3 fields, found 2"),
}


@pytest.mark.parametrize("folder", [KGCN_FINAL, KGCN_RAW], ids=["kg_final", "kg_raw"])
def test_kgcn_layout_keeps_positives_only(folder: Path) -> None:
    dataset = KgcnDataset(folder)
    assert [i.item_id for i in dataset.items()] == ["0", "1", "2", "3"]
    assert all(r.type == "purchase" and r.ts is None for r in dataset.interactions())
    pairs = [(r.user_id, r.item_id) for r in dataset.interactions()]
    assert pairs == [("0", "0"), ("0", "2"), ("1", "1"), ("1", "3"), ("2", "3")]  # label 0 skipped
    assert problems_of(dataset) == RATING_PROBLEMS


def test_kgcn_raw_kg_names_relations_and_numbers_entities_as_kgcn_does() -> None:
    dataset = KgcnDataset(KGCN_RAW)
    triples = list(dataset.triples())
    assert triples == [
        TripleRecord("0", "music.artist.origin", "e:4"),
        TripleRecord("1", "music.artist.origin", "e:4"),
        TripleRecord("2", "music.artist.genre", "e:5"),
        TripleRecord("0", "music.artist.genre", "e:5"),
        TripleRecord("3", "film.actor.film", "e:6"),
        TripleRecord("e:4", "location.location.containedby", "e:7"),
        TripleRecord("1", "type.object.key", "1"),  # Satori id 1 is item 1
        TripleRecord("2", "rdf:type", "e:8"),
        TripleRecord("0", "r6", "e:9"),  # '###' has no letter or digit: named by its number
        TripleRecord("3", "music.artist.genre", "e:9"),
    ]
    assert list(dataset.entities()) == [
        EntityRecord("e:4", "origin", "100"),
        EntityRecord("e:5", "genre", "101"),
        EntityRecord("e:6", "film", "102"),
        EntityRecord("e:7", "containedby", "103"),
        EntityRecord("e:8", "type", "104"),
        EntityRecord("e:9", "genre", "105"),
    ]
    assert problems_of(dataset) == {  # interactions() not read: no rating problems yet
        ("kg.txt", 9, "expected 3 fields, found 2"),
    }


def test_kgcn_raw_relations_that_read_alike_stay_two_relations(tmp_path: Path) -> None:
    """readable_relation alone made film#genre and film?genre one relation, film_genre, and a
    relation with no letter or digit ('###') dropped its triples instead of naming them r<id>."""
    write = {
        "ratings_final.txt": "0\t0\t1\n0\t1\t1\n",
        "item_index2entity_id.txt": "0\t10\n1\t11\n",
        "kg.txt": "10\tfilm#genre\t20\n11\tfilm?genre\t21\n10\t###\t22\n11\tfilm#genre\t20\n",
    }
    for name, text in write.items():
        (tmp_path / name).write_text(text)
    dataset = KgcnDataset(tmp_path)
    assert list(dataset.triples()) == [
        TripleRecord("0", "film_genre", "e:2"),
        TripleRecord("1", "film_genre_r1", "e:3"),
        TripleRecord("0", "r2", "e:4"),
        TripleRecord("1", "film_genre", "e:2"),
    ]
    assert problems_of(dataset) == set()


def test_kgcn_kg_final_is_the_same_graph_with_numbered_relations() -> None:
    raw, final = KgcnDataset(KGCN_RAW), KgcnDataset(KGCN_FINAL)
    final_triples = list(final.triples())
    assert TripleRecord("0", "r6", "e:9") in final_triples  # kg_final keeps what kg.txt could not name
    # relation r<i> of kg_final is the i-th relation of kg.txt, in order of appearance ('###' is r6 in both)
    names = list(dict.fromkeys(t.relation for t in raw.triples()))
    renamed = [t._replace(relation=names[int(t.relation[1:])]) for t in final_triples]
    assert renamed == list(raw.triples())
    assert [e.entity_id for e in final.entities()] == [e.entity_id for e in raw.entities()]
    assert all(e.kind is None and e.name is None for e in final.entities())
    assert problems_of(final) == {
        ("kg_final.txt", 11, "expected 3 fields, found 2"),
        ("kg_final.txt", 12, "'x' is not a non-negative integer"),
    }


def test_kgcn_ratings_beyond_the_item_map_are_reported(tmp_path: Path) -> None:
    shutil.copytree(KGCN_RAW, tmp_path / "raw")
    with open(tmp_path / "raw" / "ratings_final.txt", "a") as handle:
        handle.write("0\t4\t1\n")  # items are 0..3: index 4 is the first entity, e:4
    dataset = KgcnDataset(tmp_path / "raw")
    assert ("0", "4") not in {(r.user_id, r.item_id) for r in dataset.interactions()}
    assert ("ratings_final.txt", 12, "item 4 is not in the item map") in problems_of(dataset)


@pytest.mark.parametrize(
    ("files", "first_relation"),
    [
        (
            ("kg_raw/kg.txt", "kg_raw/item_index2entity_id.txt", "kg_final/kg_final.txt"),
            "music.artist.origin",
        ),
        (("kg_raw/kg.txt", "kg_final/kg_final.txt"), "r0"),  # kg.txt cannot be read without its map
        (("kg_raw/item_index2entity_id.txt", "kg_final/kg_final.txt"), "r0"),
    ],
    ids=["both-forms", "kg-txt-without-map", "map-without-kg-txt"],
)
def test_kgcn_reads_the_raw_form_when_it_can(
    tmp_path: Path, files: tuple[str, ...], first_relation: str
) -> None:
    shutil.copy(KGCN_RAW / "ratings_final.txt", tmp_path / "ratings_final.txt")
    for name in files:
        shutil.copy(FIXTURES / "kgcn_layout" / name, tmp_path / Path(name).name)
    dataset = KgcnDataset(tmp_path)
    assert dataset.n_items() == 4
    assert next(dataset.triples()) == TripleRecord("0", first_relation, "e:4")


def test_kgcn_kg_txt_needs_its_item_map(tmp_path: Path) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    for name in ("ratings_final.txt", "kg.txt"):
        shutil.copy(KGCN_RAW / name, folder / name)
    with pytest.raises(FileNotFoundError, match=r"item_index2entity_id\.txt"):
        KgcnDataset(folder)


# --- open_dataset ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "kind"),
    [(KGAT, KgatDataset), (KGCN_FINAL, KgcnDataset), (KGCN_RAW, KgcnDataset), (RECBOLE, RecboleDataset)],
    ids=["kgat", "kgcn-final", "kgcn-raw", "recbole"],
)
def test_open_dataset_recognises_a_folder_by_its_files(folder: Path, kind: type) -> None:
    dataset = open_dataset(str(folder), Path("/nonexistent"))
    assert isinstance(dataset, kind) and dataset.name == folder.name


def test_open_dataset_recognises_gzipped_and_kgrec_and_movielens_folders(tmp_path: Path) -> None:
    _gzip_all(KGAT, tmp_path / "packed")
    assert isinstance(open_dataset(str(tmp_path / "packed"), tmp_path), KgatDataset)
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    (tmp_path / "shop" / "train.txt").write_text("0 0\n")  # the kgrec layout comes first
    (tmp_path / "shop" / "test.txt").write_text("0 0\n")
    assert isinstance(open_dataset(str(tmp_path / "shop"), tmp_path), LayoutDataset)
    assert isinstance(open_dataset(str(movielens_folder(tmp_path / "ml")), tmp_path), MovieLensDataset)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"interactions\.csv.*train\.txt \+ test\.txt.*ratings_final.*\.inter"
    ):
        open_dataset(str(tmp_path / "empty"), tmp_path)


# --- RecBole atomic files ------------------------------------------------------------------------


def test_recbole_interactions_are_ratings_with_their_times_and_bad_rows_are_reported() -> None:
    dataset = RecboleDataset(RECBOLE)
    assert list(dataset.interactions()) == [
        InteractionRecord("u1", "i1", "rating", ts=881250949000, value=4.0),
        InteractionRecord("u1", "i2", "rating", ts=881250950000, value=5.0),
        InteractionRecord("u2", "i1", "rating", ts=881250951250, value=3.5),
        InteractionRecord("u2", "i3", "purchase"),  # no rating, no time
        InteractionRecord('ana"x', "i2", "rating", ts=881250952000, value=2.0),
        InteractionRecord("u3", "i4", "rating", ts=881250999000, value=1.0),
    ]
    assert problems_of(dataset) == {
        ("recbole_layout.inter", 7, "timestamp 'yesterday' is not a finite number"),
        ("recbole_layout.inter", 8, "expected 4 fields, found 2"),
    }


def test_recbole_item_columns_take_their_roles_and_the_rest_become_knowledge() -> None:
    dataset = RecboleDataset(RECBOLE)
    items = list(dataset.items())
    assert items[0] == ItemRecord(
        "i1", categories=("Animation", "Children's", "Comedy"), title="Toy Story", price=9.5
    )
    assert items[2] == ItemRecord("i4", categories=("Horror", "Sci-Fi"), title="Alien")
    assert [i.item_id for i in items] == ["i1", "i2", "i4", "i5"]  # i3's price "x" is refused
    triples = list(dataset.triples())
    years = [t for t in triples if t.relation == "release_year"]
    assert years == [
        TripleRecord("i1", "release_year", "release_year:1995"),
        TripleRecord("i2", "release_year", "release_year:1995"),
        TripleRecord("i3", "release_year", "release_year:1995"),
        TripleRecord("i4", "release_year", "release_year:1979"),
    ]
    # "box office" cannot be a relation name: reported once, on the one row that has a value
    assert (
        "recbole_layout.item",
        2,
        "column 'box office': " + str(relation_problem("box office")),
    ) in problems_of(dataset)
    assert ("recbole_layout.item", 4, "price 'x' is not a finite number") in problems_of(dataset)
    assert ("recbole_layout.item", 7, "expected 6 fields, found 2") in problems_of(dataset)
    assert len([p for p in dataset.problems.rows if p.line == 7 and p.file.endswith(".item")]) == 1


def test_recbole_knowledge_graph_ends_become_items_through_the_link_file() -> None:
    dataset = RecboleDataset(RECBOLE)
    kg = [t for t in dataset.triples() if t.relation != "release_year"]
    assert kg == [
        TripleRecord("i1", "film.film.genre", "m.animation"),
        TripleRecord("i2", "film.film.directed_by", "m.mann"),
        TripleRecord("m.mann", "film.director.film", "i2"),  # an item as the tail
        TripleRecord("i3", "film.film.genre", "m.crime"),  # the Freebase URI made a name
        TripleRecord("i2", "film.film.genre", "m.crime"),
        TripleRecord("i4", "film.film.sequel", "m.aliens"),  # not linked: an entity
        TripleRecord("e:i2", "film.film.country", "m.usa"),  # names an item it is not linked to
    ]
    assert {
        ("recbole_layout.link", 6, "entity_id 'm.toy' is linked twice"),
        ("recbole_layout.kg", 8, "relation '###' has no letter or digit to name it by"),
        ("recbole_layout.kg", 10, "expected 3 fields, found 2"),
    } <= problems_of(dataset)
    assert list(dataset.entities()) == [
        EntityRecord("release_year:1995", "release_year", "1995"),
        EntityRecord("release_year:1979", "release_year", "1979"),
        EntityRecord("m.animation", "genre"),
        EntityRecord("m.mann", "directed_by"),
        EntityRecord("m.crime", "genre"),
        EntityRecord("m.aliens", "sequel"),
        EntityRecord("e:i2"),
        EntityRecord("m.usa", "country"),
    ]


def test_recbole_file_without_a_required_column_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "shop.inter").write_text("user_id:token\tproduct:token\nu\ti\n")
    with pytest.raises(ValueError, match=r"shop\.inter: missing required column\(s\) item_id"):
        list(RecboleDataset(tmp_path / "shop").interactions())


def test_recbole_files_are_found_by_the_folder_name_or_the_only_inter_file(tmp_path: Path) -> None:
    _gzip_all(RECBOLE, tmp_path / "elsewhere")  # <name>.inter.gz in a folder of another name
    dataset = open_dataset(str(tmp_path / "elsewhere"), tmp_path)
    assert isinstance(dataset, RecboleDataset) and dataset.name == "recbole_layout"
    assert len(list(dataset.triples())) == len(list(RecboleDataset(RECBOLE).triples()))
    (tmp_path / "elsewhere" / "other.inter").write_text("user_id:token\titem_id:token\nu\ti\n")
    assert folder_layout(tmp_path / "elsewhere") is None  # two data sets, neither named after the folder
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "ml.train.inter").write_text("user_id:token\titem_id:token\nu\ti\n")
    assert folder_layout(tmp_path / "split") is None  # RecBole's pre-split files are not read


# --- MovieLens tags ----------------------------------------------------------------------------


def _write(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def movielens_folder(folder: Path) -> Path:
    """Two users, three movies, tags with odd spelling and spacing, and two bad tag rows."""
    folder.mkdir()
    _write(
        folder / "ratings.csv",
        [
            ["userId", "movieId", "rating", "timestamp"],
            ["1", "10", "4.0", "100"],
            ["1", "20", "3.5", "200"],
            ["2", "20", "5.0", "150"],
            ["2", "30", "2.0", "300"],
        ],
    )
    _write(
        folder / "movies.csv",
        [
            ["movieId", "title", "genres"],
            ["10", "A (1999)", "Comedy|Drama"],
            ["20", "B (2001)", "Drama"],
            ["30", "C (2003)", "(no genres listed)"],
        ],
    )
    _write(
        folder / "tags.csv",
        [
            ["userId", "movieId", "tag", "timestamp"],
            ["1", "10", "Dark  Comedy", "110"],
            ["2", "20", "dark comedy", "160"],
            ["2", "30", "'})<script>", "310"],
            ["1", "20", "   ", "210"],
            ["2", "10", "slow", "soon"],
            ["1", "30", "x" * 300, "220"],
        ],
    )
    return folder


def test_movielens_tags_become_tag_entities_with_who_and_when(tmp_path: Path) -> None:
    dataset = MovieLensDataset(movielens_folder(tmp_path / "ml"))
    assert list(dataset.triples()) == [
        TripleRecord("10", "released_in", "year:1999"),
        TripleRecord("20", "released_in", "year:2001"),
        TripleRecord("30", "released_in", "year:2003"),
        TripleRecord("10", "has_tag", "tag:dark comedy", user_id="1", ts=110_000),
        TripleRecord("20", "has_tag", "tag:dark comedy", user_id="2", ts=160_000),
        TripleRecord("30", "has_tag", "tag:'})<script>", user_id="2", ts=310_000),
    ]
    assert list(dataset.entities()) == [
        EntityRecord("year:1999", "year", "1999"),
        EntityRecord("year:2001", "year", "2001"),
        EntityRecord("year:2003", "year", "2003"),
        EntityRecord("tag:dark comedy", "tag", "Dark Comedy"),
        EntityRecord("tag:'})<script>", "tag", "'})<script>"),
    ]
    assert problems_of(dataset) == {
        ("tags.csv", 5, "tag is empty"),
        ("tags.csv", 6, "timestamp 'soon' is not a whole number"),
        ("tags.csv", 7, "tag is longer than 256 characters (got 304)"),
    }
    assert tag_entity_id("  Will   Ferrell ") == "tag:will ferrell"


@pytest.mark.parametrize(
    ("title", "year"),
    [
        ("Toy Story (1995)", "1995"),
        ("Babylon 5", None),
        ("Paterson ", None),
        ("Ready Player One (2018) ", "2018"),
        ("Cosmos (1980) (TV)", None),
        ("Death Note: Desu n√¥to (2006–2007)", None),
        ("1984 (1956)", "1956"),
    ],
)
def test_a_movie_release_year_is_the_four_digits_that_end_its_title(title: str, year: str | None) -> None:
    assert release_year(title) == year


def test_movielens_tags_of_the_real_data_all_carry_provenance(shared_data: Path) -> None:
    dataset = open_dataset("movielens", shared_data)
    triples = list(dataset.triples())
    tags = [t for t in triples if t.relation == "has_tag"]
    years = [t for t in triples if t.relation == "released_in"]
    assert len(tags) == 3_683 and dataset.problems.rows == []
    assert all(t.user_id and t.ts for t in tags)
    # 13 of the 9,742 titles end without a year (series, "Babylon 5"); catalogue knowledge has no who or when
    assert len(years) == 9_729 == len(triples) - len(tags)
    assert all(t.user_id is None and t.ts is None for t in years)
    assert {e.kind for e in dataset.entities()} == {"tag", "year"}


# --- end to end: the fixtures imported into the real embedded graph ----------------------------


ATTRIBUTE_TYPES = {"attribute_types": ["MADE_BY", "IN_CATEGORY"]}


def graph_counts(gateway: GraphGateway) -> tuple[dict[str, int], dict[str, int], dict[str, str | None]]:
    """(nodes per label, knowledge edges per relation, entity id -> kind)."""
    nodes = {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)}
    relations = {
        r["relation"]: int(r["triples"])
        for r in gateway.read(RELATION_COUNTS, ATTRIBUTE_TYPES)
        if r["relation"]
    }
    kinds = {
        r["id"]: r["kind"]
        for r in gateway.run_query("MATCH (e:Entity) RETURN e.id AS id, e.kind AS kind", {})
    }
    return nodes, relations, kinds


def test_kgat_fixture_imports_items_entities_and_every_relation(
    gateway: GraphGateway, settings: Settings
) -> None:
    report = import_dataset(gateway, open_dataset(str(KGAT), settings.datasets_dir), settings)
    assert len(report.problems) == 10
    nodes, relations, kinds = graph_counts(gateway)
    assert nodes["Item"] == 4 and nodes["User"] == 3 and nodes["Entity"] == 8
    assert relations == {
        SUBJECTS: 5,
        AUTHOR: 2,
        "type.object.type": 1,
        "rdf:type": 1,
        VOCAB: 1,
        f"{SUBJECTS}_r5": 1,
        "r6": 1,
    }
    assert kinds == {
        "m.05qjc": "subjects",
        "m.0b3xkl": "author",
        "m.01xryvm": "type",
        "e:7": "vocab_written-by_co-author",
        "e:8": "subjects",
        "e:9": None,
        '"""Good Night': "subjects",
        "e:11": "subjects",
    }
    interactions = gateway.run_query("MATCH (:User)-[r:INTERACTED]->(:Item) RETURN count(r) AS n", {})
    assert interactions[0]["n"] == 11  # distinct (user, item) pairs of train and test


@pytest.mark.parametrize(
    ("folder", "relations"),
    [
        (KGCN_RAW, {"music.artist.origin": 2, "music.artist.genre": 3, "film.actor.film": 1, "r6": 1}),
        (KGCN_FINAL, {"r0": 2, "r1": 3, "r2": 1, "r6": 1}),
    ],
    ids=["kg_raw", "kg_final"],
)
def test_kgcn_fixture_imports_items_entities_and_every_relation(
    gateway: GraphGateway, settings: Settings, folder: Path, relations: dict[str, int]
) -> None:
    import_dataset(gateway, open_dataset(str(folder), settings.datasets_dir), settings)
    nodes, found, kinds = graph_counts(gateway)
    assert nodes["Item"] == 4 and nodes["User"] == 3 and nodes["Entity"] == 6
    assert relations.items() <= found.items()
    assert sum(found.values()) == 10  # both forms: kg.txt's '###' triple is r6, as in kg_final.txt
    assert set(kinds) == {f"e:{i}" for i in range(4, 10)}
    if folder == KGCN_RAW:
        assert kinds["e:4"] == "origin" and kinds["e:9"] == "genre"


def test_recbole_fixture_imports_items_entities_and_every_relation(
    gateway: GraphGateway, settings: Settings
) -> None:
    import_dataset(gateway, open_dataset(str(RECBOLE), settings.datasets_dir), settings)
    nodes, relations, kinds = graph_counts(gateway)
    # i3 comes from its interaction alone (its .item row is refused), so Thriller is no category
    assert nodes["Item"] == 5 and nodes["User"] == 4 and nodes["Category"] == 7
    assert relations == {
        "release_year": 4,
        "film.film.genre": 3,
        "film.film.directed_by": 1,
        "film.director.film": 1,
        "film.film.sequel": 1,
        "film.film.country": 1,
    }
    assert kinds["m.mann"] == "directed_by" and kinds["release_year:1979"] == "release_year"


def test_movielens_tags_import_as_tag_entities(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    import_dataset(gateway, MovieLensDataset(movielens_folder(tmp_path / "ml")), settings)
    nodes, relations, kinds = graph_counts(gateway)
    assert relations == {"has_tag": 3, "released_in": 3}
    assert kinds == {
        "tag:dark comedy": "tag",
        "tag:'})<script>": "tag",
        **{f"year:{y}": "year" for y in ("1999", "2001", "2003")},
    }
    assert nodes["Category"] == 2  # genres stay categories


def test_an_import_leaves_out_the_tags_an_erased_user_gave_before_the_erasure(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """Importing MovieLens again wrote an erased user's tags back as ``has_tag`` knowledge edges
    (the importer left out only their ratings). Their tags dated at or before the erasure are left
    out by the interactions' rule, and reported; a tag only they gave leaves no entity behind; a
    tag another user gave stays, and so does one they gave after the erasure (a new history)."""
    folder = movielens_folder(tmp_path / "ml")
    with open(folder / "tags.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["2", "30", "fresh", "500"])  # after the erasure below
    gateway.write(ERASE_USER, {"user_id": "2", "erasure_id": user_hash("2"), "now": 400_000})

    report = import_dataset(gateway, MovieLensDataset(folder), settings)
    tagged = gateway.run_query("MATCH (i:Item)-[:HAS_TAG]->(e:Entity) RETURN i.id AS item, e.id AS tag", {})
    # user 2's "dark comedy" on 20 (160 s) and "'})<script>" on 30 (310 s) are left out
    assert sorted((r["item"], r["tag"]) for r in tagged) == [("10", "tag:dark comedy"), ("30", "tag:fresh")]
    _, _, kinds = graph_counts(gateway)
    assert sorted(e for e, kind in kinds.items() if kind == "tag") == ["tag:dark comedy", "tag:fresh"]
    assert (report.erased_interactions, report.erased_triples) == (2, 2)


def test_movielens_and_recbole_refuse_future_times_and_values_beyond_the_apis_bounds(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """Only the kgrec layout had the import's clock: a ratings.csv row dated 2100 was stored (its
    weight_ts far ahead of every clock), as were a RecBole price of 1e300, a title with NUL, and
    MovieLens ratings of NaN (then stored on the edge, not JSON) or 1e300."""
    now_ms = 1_765_000_000_000
    year_2100 = "4102444800"
    folder = movielens_folder(tmp_path / "ml")
    with open(folder / "ratings.csv", "a", newline="") as handle:
        csv.writer(handle).writerows([["1", "30", "4.0", year_2100], ["2", "10", "1.0", str(now_ms // 1000)]])
        csv.writer(handle).writerows([["3", "10", "nan", "1000"], ["3", "20", "1e300", "1000"]])
    with open(folder / "tags.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["1", "10", "later", year_2100])
    with open(folder / "movies.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["40", "D\x00 (2004)", "Drama"])
    report = import_dataset(gateway, MovieLensDataset(folder), settings, now_ms=now_ms)
    ahead = "is in the future (more than 300s ahead of the import's clock)"
    found = {(Path(p.file).name, p.line, p.reason) for p in report.problems}
    assert {
        ("ratings.csv", 6, f"timestamp '{year_2100}' {ahead}"),
        ("tags.csv", 8, f"timestamp '{year_2100}' {ahead}"),
        ("movies.csv", 5, "title must not contain NUL (U+0000) (got 'D\\x00 (2004)')"),
        ("ratings.csv", 8, "rating 'nan' is not a finite number"),
        ("ratings.csv", 9, "value must be between -1e+12 and 1e+12 (got 1e+300)"),
    } <= found
    latest = gateway.run_query("MATCH ()-[r:INTERACTED]->() RETURN max(r.last_ts) AS ts, count(r) AS n", {})
    assert latest == [{"ts": now_ms, "n": 5}]

    recbole = tmp_path / "rb"
    shutil.copytree(RECBOLE, recbole)
    (recbole / "rb.inter").write_text(
        f"user_id:token\titem_id:token\ttimestamp:float\nu9\ti1\t{year_2100}\nu9\ti2\t{now_ms // 1000}\n"
    )
    for stem in ("item", "kg", "link"):
        (recbole / f"recbole_layout.{stem}").rename(recbole / f"rb.{stem}")
    (recbole / "recbole_layout.inter").unlink()
    with open(recbole / "rb.item", "a") as handle:
        handle.write("i8\tCheap\t2001\tDrama\t1e300\thit\ni9\tA\x00B\t2001\tDrama\t1\thit\n")
    dataset = open_dataset(str(recbole), settings.datasets_dir)
    report = import_dataset(gateway, dataset, settings, now_ms=now_ms)
    found = {(Path(p.file).name, p.line, p.reason) for p in report.problems}
    assert {
        ("rb.inter", 2, f"timestamp '{year_2100}' {ahead}"),
        ("rb.item", 8, "price must be at most 1e+12 (got 1e+300)"),
        ("rb.item", 9, "title must not contain NUL (U+0000) (got 'A\\x00B')"),
    } <= found
    stored = gateway.run_query("MATCH (:User {id: 'u9'})-[r:INTERACTED]->(i) RETURN i.id AS i", {})
    assert stored == [{"i": "i2"}]


# --- tools/to_kgat_layout.py: the project's own data in the research format --------------------


def test_a_demo_shop_converts_to_the_kgat_layout_and_reads_back(tmp_path: Path) -> None:
    generate_shop(ShopSpec(users=120, items=40, seed=3), tmp_path / "shop")
    source = open_dataset(str(tmp_path / "shop"), tmp_path)
    counts = to_kgat_layout(source, tmp_path / "kgat", test_fraction=0.2)
    back = open_dataset(str(tmp_path / "kgat"), tmp_path)
    assert isinstance(back, KgatDataset) and back.problems.rows == []

    def field(value: str) -> str:
        return "_".join(value.split())

    times: dict[tuple[str, str], int] = {}
    for event in source.interactions():
        key = (event.user_id, event.item_id)
        times[key] = min(times.get(key, event.ts or 0), event.ts or 0)
    train = {(r.user_id, r.item_id) for r in back.split("train")}
    test = {(r.user_id, r.item_id) for r in back.split("test")}
    assert train | test == set(times) and not train & test
    assert (len(train), len(test)) == (counts["train_pairs"], counts["test_pairs"])
    last_train: dict[str, int] = {}
    for user, item in train:
        last_train[user] = max(last_train.get(user, 0), times[(user, item)])
    # each user's test items come after their training items (a per-user temporal split)
    assert all(times[(user, item)] >= last_train[user] for user, item in test)

    # The demo shop's event-derived links are rebuilt from the training pairs' events (the next test),
    # less each user's validation pair as an evaluation of the layout holds it out.
    expected = {
        (t.head, t.relation, field(t.tail)) for t in source.triples() if t.relation not in EVENT_RELATIONS
    }
    validation = validation_pairs(back.split("train"))
    assert validation and validation <= train
    expected |= set(event_links(tmp_path / "shop", test | validation))
    for item in source.items():
        expected |= {(item.item_id, "belongs_to", field(c)) for c in item.categories}
        expected |= {(item.item_id, "produced_by", field(item.brand))} if item.brand else set()
    assert {(t.head, t.relation, t.tail) for t in back.triples()} == expected
    # brands and categories are not entities; any other attribute is, with the relation as its kind
    kinds = {e.kind for e in back.entities()}
    assert "produced_by" not in kinds and "belongs_to" not in kinds


def test_no_event_derived_link_of_a_demo_shop_rests_on_a_test_interaction(tmp_path: Path) -> None:
    """``also_bought`` is two consecutive purchases of one user, ``bought_together`` two of one session,
    ``also_viewed`` two views of one session: each link in the layout must be seen in the events of
    training pairs, never only in those of a pair ``test.txt`` holds."""
    generate_shop(ShopSpec(users=400, items=60, seed=5), tmp_path / "shop")
    source = open_dataset(str(tmp_path / "shop"), tmp_path)
    to_kgat_layout(source, tmp_path / "kgat", test_fraction=0.2)
    back = open_dataset(str(tmp_path / "kgat"), tmp_path)
    train = {(r.user_id, r.item_id) for r in back.split("train")}

    purchases: dict[str, list[str]] = defaultdict(list)  # the file is in time order
    kinds: dict[tuple[str, str], set[str]] = defaultdict(set)  # (user, type) -> training items
    for event in source.interactions():
        if (event.user_id, event.item_id) in train:
            kinds[(event.user_id, event.type)].add(event.item_id)
            if event.type == "purchase":
                purchases[event.user_id].append(event.item_id)
    consecutive = {pair for seq in purchases.values() for pair in pairwise(seq)}

    def together(head: str, tail: str, kind: str) -> bool:
        return any({head, tail} <= items for (_, k), items in kinds.items() if k == kind)

    links = [t for t in back.triples() if t.relation in EVENT_RELATIONS]
    assert {t.relation for t in links} >= {"also_bought", "bought_together"}
    for t in links:
        if t.relation == "also_bought":
            assert (t.head, t.tail) in consecutive or (t.tail, t.head) in consecutive, t
        else:
            assert together(t.head, t.tail, "purchase" if t.relation == "bought_together" else "view"), t


def test_the_kgat_layout_rebuilds_a_derived_relation_from_the_training_pairs_alone(tmp_path: Path) -> None:
    """A data set that declares ``also_bought`` derived from its interactions has it rebuilt without
    the pairs ``test.txt`` holds (u1's c, u2's d), whatever the data set is."""
    to_kgat_layout(CoPurchases(CO_PURCHASES), tmp_path / "kgat", test_fraction=0.2)
    back = KgatDataset(tmp_path / "kgat")
    assert {(r.user_id, r.item_id) for r in back.split("test")} == {("u1", "c"), ("u2", "d")}
    links = {(t.head, t.tail) for t in back.triples() if t.relation == "also_bought"}
    assert links == {("a", "b"), ("b", "c")}  # not c-d: u2's test purchase


def test_the_kgat_layout_rebuilds_a_derived_relation_without_the_validation_pairs(tmp_path: Path) -> None:
    """Nor the pair an evaluation of the layout holds out for validation: u3's train.txt has x, y
    and z, no time, and z has the largest tie key, so y-z, which rests on z alone, is not written."""
    to_kgat_layout(CoPurchases(WITH_VALIDATION), tmp_path / "kgat", test_fraction=0.2)
    back = KgatDataset(tmp_path / "kgat")
    assert validation_pairs(back.split("train")) == {("u3", "z")}
    links = {(t.head, t.tail) for t in back.triples() if t.relation == "also_bought"}
    assert links == {("a", "b"), ("b", "c"), ("x", "y")}  # not y-z (validation), nor z-w (test)


def test_one_stray_large_id_creates_no_phantom_items(tmp_path: Path) -> None:
    """Without an item list or map, items are the indexes that occur, not ``range(1 + largest)``."""
    kgat = tmp_path / "kgat"
    kgat.mkdir()
    (kgat / "train.txt").write_text("0 0 1\n1 99999999999\n")
    (kgat / "test.txt").write_text("0 1\n")
    (kgat / "kg_final.txt").write_text("0 0 5\n5 1 100000000000\n")
    dataset = KgatDataset(kgat)
    assert dataset.n_items() == 100_000_000_000
    assert [i.item_id for i in dataset.items()] == ["0", "1", "5", "99999999999"]
    assert list(dataset.triples())[1] == TripleRecord("5", "r1", "e:100000000000")
    kgcn = tmp_path / "kgcn"
    kgcn.mkdir()
    (kgcn / "ratings_final.txt").write_text("0\t0\t1\n0\t1\t1\n1\t99999999999\t1\n")
    (kgcn / "kg_final.txt").write_text("1 0 7\n7 0 100000000000\n")
    dataset_kgcn = KgcnDataset(kgcn)
    assert [i.item_id for i in dataset_kgcn.items()] == ["0", "1", "7", "99999999999"]
    assert list(dataset_kgcn.triples())[1] == TripleRecord("7", "r0", "e:100000000000")


def test_a_movielens_tag_typed_decomposed_is_the_composed_tags_entity() -> None:
    # kgrec makes the tag's entity id, so it normalises it (NFC), as tag events' tags are: the
    # id rule refuses an id that is not NFC, and a decomposed "Café" row was dropped
    assert tag_entity_id("Cafe\u0301  Noir") == tag_entity_id("Caf\u00e9 noir") == "tag:caf\u00e9 noir"


def test_a_movielens_tag_with_format_characters_gets_a_valid_entity_id(tmp_path: Path) -> None:
    # The joiners of an emoji sequence and a soft hyphen are format characters, which the id rule
    # refuses: the id kept them, so `kgrec import` dropped the row that `kgrec events import
    # --format movielens-tags` takes. The tag is read as a tag event's (a soft hyphen parts no words).
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert tag_entity_id(f"{family} Film") == "tag:\U0001f468\U0001f469\U0001f467 film"
    assert tag_entity_id("Co\u00adop \u200d") == "tag:coop"
    assert tag_entity_id("e\u200d\u0301") == "tag:\u00e9"  # NFC again once the joiner is out
    assert tag_entity_id("\u200b\u00ad") is None
    folder = movielens_folder(tmp_path / "ml")
    _write(
        folder / "tags.csv",
        [
            ["userId", "movieId", "tag", "timestamp"],
            ["1", "10", f"{family} Film", "110"],
            ["2", "20", "\u200b\u00ad", "120"],
        ],
    )
    dataset = MovieLensDataset(folder)
    (tag,) = [t for t in dataset.triples() if t.relation == "has_tag"]
    assert tag.tail == "tag:\U0001f468\U0001f469\U0001f467 film" and id_problem(tag.tail) is None
    assert problems_of(dataset) == {("tags.csv", 3, "tag '\\u200b\\xad' has no visible character")}


def test_a_layout_ts_is_unix_seconds_or_the_apis_date_time_with_an_offset(tmp_path: Path) -> None:
    # The data-set layout is kgrec's own, and its ts text reads as the events API's: a date-time
    # without an offset (whose clock?) or a date alone is refused naming the value, not read as UTC.
    rows = [
        ["u1", "i1", "1700000000"],
        ["u1", "i2", "2023-11-14T23:13:20+01:00"],
        ["u1", "i3", "2016-12-31T23:59:60Z"],
        ["u1", "i4", "2024-05-01T10:00:00"],
        ["u1", "i5", "2024-05-01 10:00:00"],
        ["u1", "i6", "2024-05-01"],
        ["u1", "i7", "2023-11-14T10:15:60Z"],
        ["u1", "i8", "1_700_000_000"],  # float() reads both as Unix seconds
        ["u1", "i9", "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660"],
    ]
    _write(tmp_path / "interactions.csv", [["user_id", "item_id", "ts"], *rows])
    dataset = LayoutDataset(tmp_path)
    read = [(r.item_id, r.ts) for r in dataset.interactions()]
    assert read == [("i1", 1_700_000_000_000), ("i2", 1_700_000_000_000), ("i3", 1_483_228_799_000)]
    offset = "has no offset: add Z (UTC) or ±hh:mm, as RFC 3339 requires"
    not_seconds = "is not Unix seconds or an RFC 3339 date-time with an offset, like 2023-11-14T22:13:20Z"
    assert problems_of(dataset) == {
        ("interactions.csv", 5, f"ts '2024-05-01T10:00:00' {offset}"),
        ("interactions.csv", 6, f"ts '2024-05-01 10:00:00' {offset}"),
        (
            "interactions.csv",
            7,
            "ts '2024-05-01' is a date without a time of day: send an RFC 3339 date-time with an "
            "offset, like 2024-05-01T00:00:00Z",
        ),
        (
            "interactions.csv",
            8,
            "ts '2023-11-14T10:15:60Z' has second 60, a leap second: RFC 3339 allows it only at 23:59 UTC",
        ),
        ("interactions.csv", 9, f"ts '1_700_000_000' {not_seconds}"),
        (
            "interactions.csv",
            10,
            f"ts '\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660' {not_seconds}",
        ),
    }
    # REES46 states its event_time is UTC: that format keeps reading it so
    assert (
        rees46_event(["2019-10-01 00:00:00 UTC", "view", "1", "", "", "", "", "u", ""])["ts"]
        == (rees46_event(["2019-10-01 00:00:00", "view", "1", "", "", "", "", "u", ""])["ts"])
        == 1_569_888_000_000
    )
    for seconds in ("1_569_888_000", "\uff11\uff15\uff16\uff19\uff18\uff18\uff18\uff10\uff10\uff10"):
        with pytest.raises(ValueError, match="is neither ISO-8601 nor Unix seconds"):
            rees46_event([seconds, "view", "1", "", "", "", "", "u", ""])


ARABIC_INDIC_SECONDS = "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660"


def test_unix_seconds_are_ascii_digits_in_every_format(tmp_path: Path) -> None:
    # int() and float() also read 1_700_000_000 and other scripts' digits (str.isdigit() takes
    # them too): each format read them as seconds, or '²' passed isdigit() and int() raised.
    for bad in ("1_700_000_000", ARABIC_INDIC_SECONDS, "\u00b2"):
        with pytest.raises(ValueError, match="is not Unix seconds"):
            taobao_event(["u", "i", "c", "pv", bad])
        with pytest.raises(ValueError, match="is not Unix seconds"):
            movielens_tag_event(["u", "i", "fun", bad])
    assert taobao_event(["u", "i", "c", "pv", " 1700000000 "])["ts"] == 1_700_000_000_000
    assert movielens_tag_event(["u", "i", "fun", "1700000000"])["ts"] == 1_700_000_000_000
    folder = movielens_folder(tmp_path / "ml")
    ratings = [["userId", "movieId", "rating", "timestamp"], ["1", "10", "4.0", "1_700_000_000"]]
    _write(
        folder / "ratings.csv", [*ratings, ["1", "20", "3.5", ARABIC_INDIC_SECONDS], ["2", "20", "5", "150"]]
    )
    dataset = MovieLensDataset(folder)
    assert [(r.user_id, r.item_id, r.ts) for r in dataset.interactions()] == [("2", "20", 150_000)]
    assert {p for p in problems_of(dataset) if p[0] == "ratings.csv"} == {
        ("ratings.csv", 2, "timestamp '1_700_000_000' is not a whole number"),
        ("ratings.csv", 3, f"timestamp {ARABIC_INDIC_SECONDS!r} is not a whole number"),
    }
    # past 4,300 digits int() raises ValueError, which aborted the import; now the row's reason
    huge = "9" * 5000
    assert taobao_event(["u", "i", "c", "pv", "1700000000"])["ts"] and whole_seconds_ms(huge) is None
    with pytest.raises(ValueError, match="is not Unix seconds"):
        taobao_event(["u", "i", "c", "pv", huge])
    _write(folder / "ratings.csv", [ratings[0], ["1", "10", "4.0", huge], ["1", "20", "3.5", "100"]])
    dataset = MovieLensDataset(folder)
    assert [(r.item_id, r.seq) for r in dataset.interactions()] == [("20", None)]
    assert {p[:2] for p in problems_of(dataset) if p[0] == "ratings.csv"} == {("ratings.csv", 2)}
    layout = tmp_path / "layout"
    layout.mkdir()
    _write(
        layout / "interactions.csv",
        [["user_id", "item_id", "seq_index"], ["u1", "i1", huge], ["u1", "i2", "3"]],
    )
    assert [(r.item_id, r.seq) for r in LayoutDataset(layout).interactions()] == [("i2", 3)]
    assert parse_index(huge) is None and parse_index("007") == 7
    shop = tmp_path / "recbole_layout"
    shutil.copytree(RECBOLE, shop)
    inter = shop / "recbole_layout.inter"
    inter.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t4\t1_700_000_000\n"
    )
    recbole = RecboleDataset(shop)
    assert list(recbole.interactions()) == []
    assert problems_of(recbole) == {
        ("recbole_layout.inter", 2, "timestamp '1_700_000_000' is not a finite number")
    }
