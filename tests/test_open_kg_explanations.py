"""Explanations through the open knowledge graph: any relation, entities, templates, Browser Cypher.

The graph is built by the real importer from a kgrec-layout folder (interactions,
items, kg_triples.csv with arbitrary and hostile-but-valid relation names, and
entities.csv), and explained by the serving core with a hand-built model whose
embeddings are all zero, so a path's score is exactly prior × strength
(``kgrec/explanations.py``):

    fan bought a1 (most recent) and viewed a6 (earlier)
    a1, a2, a6 -origin-> uk;   a3 -influenced_by-> uk and -Origin-> uk (same type, another relation)
    a1, a3 -film.film.genre-> m.jazz;   a1, a2 -rdf:type-> m.band
    a1 -http://schema.org/isSimilarTo-> a4;   a5 -sequel_of-> a1
    a1, a2 and 2,000 filler items -film.film.genre-> m.pop (a high-degree entity)
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graph_schema.relation_names import relationship_type
from graph_schema.statements.explanations import EXPLANATION_PATHS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.model_store import models_dir, save_artifacts
from kgrec.recommender import ModelArtifacts, Recommender
from kgrec.relation_sentences import SentenceTemplateError, load_sentences, relation_label
from kgrec.serving import ItemFilters, Serving
from tests.cypher_lint import lint

FILLERS = 2_000
TITLES = {f"a{k}": f"Artist {chr(64 + k)}" for k in range(1, 7)}  # a1: Artist A, ... a6: Artist F
TRIPLES = [
    ("a1", "origin", "uk"),
    ("a2", "origin", "uk"),
    ("a6", "origin", "uk"),
    # the same entity by other relations (one of the same type, ORIGIN): no shared attribute
    ("a3", "influenced_by", "uk"),
    ("a3", "Origin", "uk"),
    ("a1", "film.film.genre", "m.jazz"),
    ("a3", "film.film.genre", "m.jazz"),
    ("a1", "rdf:type", "m.band"),
    ("a2", "rdf:type", "m.band"),
    ("a1", "http://schema.org/isSimilarTo", "a4"),
    ("a5", "sequel_of", "a1"),
    ("a1", "film.film.genre", "m.pop"),
    ("a2", "film.film.genre", "m.pop"),
    *((f"p{k:04d}", "film.film.genre", "m.pop") for k in range(FILLERS)),
]
ENTITIES = [
    ("uk", "country", "United Kingdom"),
    ("m.jazz", "genre", "Jazz"),
    ("m.band", "", "Band"),
    ("m.pop", "genre", "Pop"),
]
RELATIONS = sorted({relation for _, relation, _ in TRIPLES})

# The user's template file: one item–entity relation and one item–item relation.
USER_TEMPLATES = """
[item_entity]
origin = "{target} comes from {entity} ({kind}), like {hub}, which you {verb}."

[item_item]
"http://schema.org/isSimilarTo" = "{target} is similar to {hub}, which you {verb}."
"""


def _write_csv(path: Path, header: list[str], rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _dataset_folder(folder: Path) -> Path:
    folder.mkdir()
    now_s = int(time.time())
    _write_csv(
        folder / "interactions.csv",
        ["user_id", "item_id", "ts", "type"],
        [
            ("fan", "a6", now_s - 3600, "view"),
            ("fan", "a1", now_s - 60, "purchase"),
            ("other", "a3", now_s, "view"),
        ],
    )
    items = [(i, "", "", title, "") for i, title in TITLES.items()]
    items += [(f"p{k:04d}", "", "", f"Pop song {k}", "") for k in range(FILLERS)]
    _write_csv(folder / "items.csv", ["item_id", "brand", "categories", "title", "price"], items)
    _write_csv(folder / "kg_triples.csv", ["head", "relation", "tail"], TRIPLES)
    _write_csv(folder / "entities.csv", ["entity_id", "kind", "name"], ENTITIES)
    return folder


def _model(version: str, item_ids: list[str]) -> ModelArtifacts:
    # Zero embeddings: the cosine term adds nothing, so scores are prior × strength.
    n = len(item_ids)
    return ModelArtifacts(
        version=version,
        item_ids=item_ids,
        item_embeddings=np.zeros((n, 4), dtype=np.float32),
        components={},
        weights={"embedding": 1.0},
        recency_decay=1.0,
        popularity=np.ones(n, dtype=np.float32),
    )


@pytest.fixture(scope="module")
def open_kg(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Serving, GraphGateway]]:
    """The serving core on the imported graph, with the user's template file and an active model."""
    tmp = tmp_path_factory.mktemp("open-kg")
    templates = tmp / "sentences.toml"
    templates.write_text(USER_TEMPLATES, encoding="utf-8")
    name = f"openkg_{uuid.uuid4().hex[:10]}" if settings.embedded else None
    version = f"openkg-{uuid.uuid4().hex[:10]}"
    local = settings.with_overrides(graph_name=name, relation_sentences=templates)
    gw = open_gateway(local)
    clear_graph(gw)
    migrate(gw)
    import_dataset(gw, open_dataset(str(_dataset_folder(tmp / "shop")), local.datasets_dir), local)
    item_ids = sorted(r["id"] for r in gw.run_query("MATCH (i:Item) RETURN i.id AS id", {}))
    folder = models_dir(local.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    save_artifacts(_model(version, item_ids), folder)
    gw.run_query(
        "CREATE (:ModelVersion {id: $v, artifact: $artifact, status: 'ready', active: true,"
        " created_at: 0, activated_at: 0})",
        {"v": version, "artifact": f"{version}.npz"},
    )
    core = Serving(local)
    try:
        yield core, gw
    finally:
        core.gateway.close()
        clear_graph(gw)
        gw.close()
        (folder / f"{version}.npz").unlink(missing_ok=True)


def _paths(core: Serving, item: str) -> list[dict[str, Any]]:
    return core.explanation("fan", item, max_paths=50)["paths"]


def _through(paths: list[dict[str, Any]], kind: str, relation: str) -> dict[str, Any]:
    found = [p for p in paths if p["kind"] == kind and p["relationships"][1].get("relation") == relation]
    assert len(found) == 1, (kind, relation, [(p["kind"], p["relationships"]) for p in paths])
    return found[0]


def _strength(path: dict[str, Any]) -> float:
    return 1 - math.exp(-path["relationships"][0]["weight"] / 5)


def test_the_graph_was_imported_with_typed_knowledge_edges(open_kg: tuple[Serving, GraphGateway]) -> None:
    _, gw = open_kg
    rows = gw.run_query(
        "MATCH (i:Item)-[k]->(e:Entity {id: 'uk'})"
        " RETURN i.id AS item, type(k) AS type, k.relation AS relation, e.kind AS kind ORDER BY item, relation",
        {},
    )
    assert [(r["item"], r["type"], r["relation"], r["kind"]) for r in rows] == [
        ("a1", "ORIGIN", "origin", "country"),
        ("a2", "ORIGIN", "origin", "country"),
        ("a3", "ORIGIN", "Origin", "country"),
        ("a3", "INFLUENCED_BY", "influenced_by", "country"),
        ("a6", "ORIGIN", "origin", "country"),
    ]


def test_shared_attribute_through_an_arbitrary_relation_with_the_users_sentence(
    open_kg: tuple[Serving, GraphGateway],
) -> None:
    core, _ = open_kg
    path = _through(_paths(core, "a2"), "shared_attribute", "origin")
    assert [n["id"] for n in path["nodes"]] == ["fan", "a1", "uk", "a2"]
    assert path["nodes"][2] == {"label": "Entity", "id": "uk", "name": "United Kingdom", "kind": "country"}
    assert [(r["type"], r.get("relation"), r["direction"]) for r in path["relationships"]] == [
        ("INTERACTED", None, "out"),
        ("ORIGIN", "origin", "out"),
        ("ORIGIN", "origin", "in"),
    ]
    # a1 (bought, the most recent) is the witness; a6 shares the entity too.
    assert path["support"] == 2
    assert (
        path["sentence"] == "Artist B comes from United Kingdom (country), like Artist A, which you bought."
    )
    # prior 0.5 × specificity, uk links 3 of the model's items
    specificity = 1 - math.sqrt(3 / (6 + FILLERS))
    assert path["score"] == pytest.approx(0.5 * specificity * _strength(path), abs=2e-6)


def test_hostile_relation_names_get_the_readable_fallback_sentence(
    open_kg: tuple[Serving, GraphGateway],
) -> None:
    core, _ = open_kg
    band = _through(_paths(core, "a2"), "shared_attribute", "rdf:type")
    assert band["relationships"][1]["type"] == "RDF_TYPE"
    assert band["sentence"] == "Artist B has the same type, Band, as Artist A, which you bought."
    jazz = _through(_paths(core, "a3"), "shared_attribute", "film.film.genre")
    assert jazz["nodes"][2]["id"] == "m.jazz"
    assert jazz["sentence"] == "Artist C has the same genre, Jazz, as Artist A, which you bought."


def test_an_entity_reached_by_another_relation_is_not_a_shared_attribute(
    open_kg: tuple[Serving, GraphGateway],
) -> None:
    core, _ = open_kg
    paths = _paths(core, "a3")
    assert [(p["kind"], p["nodes"][2]["id"]) for p in paths] == [("shared_attribute", "m.jazz")]


def test_related_items_through_any_item_item_relation_both_ways(
    open_kg: tuple[Serving, GraphGateway],
) -> None:
    core, _ = open_kg
    similar = _through(_paths(core, "a4"), "related_item", "http://schema.org/isSimilarTo")
    assert [n["id"] for n in similar["nodes"]] == ["fan", "a1", "a4"]
    assert similar["relationships"][1]["direction"] == "out"
    assert similar["sentence"] == "Artist D is similar to Artist A, which you bought."
    assert similar["score"] == pytest.approx(0.5 * _strength(similar), abs=2e-6)
    sequel = _through(_paths(core, "a5"), "related_item", "sequel_of")
    assert sequel["relationships"][1]["direction"] == "in"
    assert sequel["sentence"] == 'Artist E is linked to Artist A ("sequel of"), which you bought.'
    assert sequel["score"] == pytest.approx(0.5 * 0.8 * _strength(sequel), abs=2e-6)


def test_a_high_degree_entity_is_joined_not_expanded_and_explains_almost_nothing(
    open_kg: tuple[Serving, GraphGateway],
) -> None:
    core, _ = open_kg
    paths = _paths(core, "a2")
    pop = _through(paths, "shared_attribute", "film.film.genre")
    assert pop["nodes"][2]["id"] == "m.pop"
    # m.pop links 2,002 of 2,006 items: specificity ≈ 0.0005, far below the specific "origin" path.
    assert pop["score"] == pytest.approx(0.5 * (1 - math.sqrt(2002 / 2006)) * _strength(pop), abs=2e-6)
    assert pop["score"] < _through(paths, "shared_attribute", "origin")["score"] / 100
    filler = _paths(core, "p0042")  # a filler item: reached only through the popular genre
    assert [(p["kind"], p["nodes"][2]["id"]) for p in filler] == [("shared_attribute", "m.pop")]
    # Recommendations for the whole batch, with reasons, in the same one read.
    answer = core.recommendations("fan", k=30, offset=0, exclude="seen", filters=ItemFilters(), explain=True)
    assert answer["items"]


def test_a_popular_entitys_count_is_remembered_and_not_walked_again(
    open_kg: tuple[Serving, GraphGateway],
) -> None:
    core, gw = open_kg
    first = _through(_paths(core, "a2"), "shared_attribute", "film.film.genre")
    version = core.active_model().artifacts.version
    known = core.entity_counts.known(version)
    # m.pop (2,002 items) is remembered; uk (3 items) is cheap to count and is not.
    assert known.get(("m.pop", "film.film.genre")) == 2002 and ("uk", "origin") not in known
    # An experiment's variant served in between keeps them (they were forgotten at each switch).
    variant = Recommender(_model("a-variant", core.active_model().artifacts.item_ids))
    core.explanation_paths(variant, "fan", ["a2"], core.user_history("fan"), places=50)
    assert core.entity_counts.known(version) == known
    again = _through(_paths(core, "a2"), "shared_attribute", "film.film.genre")
    assert again["score"] == pytest.approx(first["score"], abs=2e-6)
    # The read skips the pairs it is given: no count for m.pop, a fresh one for uk.
    rows = gw.read(
        EXPLANATION_PATHS,
        {
            "user_id": "fan",
            "item_ids": ["a2"],
            "hubs": 30,
            "now": 0,
            "half_life_ms": 1.0,
            "forward": [],
            "backward": [],
            "counted": [["m.pop", "film.film.genre"]],
        },
    )
    linked = {r["nodes"][2]["id"]: r["nodes"][2]["linked"] for r in rows if r["kind"] == "shared_attribute"}
    assert linked == {"m.pop": None, "uk": 3, "m.band": 2}


def test_every_paths_cypher_refinds_it_in_the_graph_and_passes_lint(
    open_kg: tuple[Serving, GraphGateway],
) -> None:
    core, gw = open_kg
    queries: list[str] = []
    kinds: set[str] = set()
    for item in ["a2", "a3", "a4", "a5", "p0042"]:
        for path in _paths(core, item):
            kinds.add(path["kind"])
            ids = [n["id"] for n in path["nodes"]]
            columns = ", ".join(f"n{k}.id AS n{k}" for k in range(len(ids)))
            found = gw.run_query(path["cypher"] + ", " + columns, {})
            assert [[row[f"n{k}"] for k in range(len(ids))] for row in found] == [ids], path["cypher"]
            for rel in path["relationships"]:
                if rel.get("relation"):
                    assert f"{{relation: '{rel['relation']}'}}" in path["cypher"]
            queries.append(path["cypher"])
    assert kinds == {"shared_attribute", "related_item"}
    # Another relation of the same type would not be found: the relation property is in the query.
    wrong = queries[0].replace("relation: 'origin'", "relation: 'ORIGIN'")
    if wrong != queries[0]:
        assert gw.run_query(wrong, {}) == []
    diagnostics = lint([{"name": f"path{k}", "cypher": q, "params": {}} for k, q in enumerate(queries)])
    # Types rendered from the data's relation names are not in the fixed allow-list; nothing else may warn.
    data_types = {relationship_type(r) for r in RELATIONS}
    problems = {
        name: [d for d in diags if not any(re.search(rf"\b{t}\b", d["message"]) for t in data_types)]
        for name, diags in diagnostics.items()
    }
    assert {name: d for name, d in problems.items() if d} == {}


def test_relation_labels_are_readable() -> None:
    assert relation_label("film.film.genre") == "genre"
    assert relation_label("rdf:type") == "type"
    assert relation_label("also_bought") == "also bought"
    assert relation_label("dbo:birthPlace") == "birth place"
    assert relation_label("http://schema.org/isSimilarTo") == "is similar to"
    assert relation_label("P31") == "P31"
    assert relation_label("...") == "..."


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[item_entity]\norigin = "{target} is from {country}."', ["relation 'origin'", "{country}"]),
        (
            '[item_item]\n"rdf:type" = { out = "{entity}", in = "{hub}" }',
            ["relation 'rdf:type'.out", "{entity}"],
        ),
        ('[item_item]\nsequel_of = { out = "{hub}" }', ["relation 'sequel_of'", "'out' and 'in'"]),
        ('[item_entity]\n"bad name!" = "{hub}"', ["[item_entity]", "bad name!"]),
        ('[item_entity]\norigin = "{hub.__class__}"', ["relation 'origin'", "{hub.__class__}"]),
        ('[item_entity]\norigin = "{hub!r}"', ["relation 'origin'", "{hub}"]),
        ('[item_entity]\norigin = "{hub"', ["relation 'origin'"]),
        ('[item_entity]\norigin = "{country\\n}"', ["relation 'origin'", "'{country\\n}'"]),  # still one line
        ("[relations]\norigin = 'x'", ["unknown table 'relations'"]),
        ("origin = ", ["not valid TOML"]),
    ],
)
def test_a_bad_template_file_is_refused_in_one_line_naming_file_and_relation(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SentenceTemplateError) as caught:
        load_sentences(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for name in names:
        assert name in message


def test_a_bad_template_file_stops_the_service_at_start(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[item_entity]\norigin = "{artist}"', encoding="utf-8")
    with pytest.raises(SentenceTemplateError, match="origin"):
        Serving(settings.with_overrides(relation_sentences=path))
    with pytest.raises(SentenceTemplateError, match="cannot read"):
        load_sentences(tmp_path / "missing.toml")
    utf16 = tmp_path / "utf16.toml"
    utf16.write_bytes('[item_entity]\norigin = "x"'.encode("utf-16"))
    with pytest.raises(SentenceTemplateError, match=r"utf16.toml: not UTF-8 \(byte 0xff at offset 0\)"):
        load_sentences(utf16)
    # a FIFO blocked the worker until gunicorn killed it; a huge file was read whole
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(SentenceTemplateError, match=r"fifo\.toml: not a regular file"):
        load_sentences(fifo)
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (1 << 20), encoding="utf-8")
    with pytest.raises(SentenceTemplateError, match=r"huge.toml: 1,048,578 bytes, more than 1,048,576"):
        load_sentences(huge)
    # an editor's byte-order mark was "not valid TOML ... line 1, column 1"
    marked = tmp_path / "bom.toml"
    marked.write_text('\ufeff[item_entity]\norigin = "{target} comes from {entity}."', encoding="utf-8")
    assert load_sentences(marked).shared_attribute(
        "origin", hub="H", target="T", verb="v", entity="UK", kind=None
    ) != load_sentences().shared_attribute("origin", hub="H", target="T", verb="v", entity="UK", kind=None)


def test_the_setting_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    assert Settings.from_env({"KGREC_RELATION_SENTENCES": str(path)}).relation_sentences == path
    assert Settings.from_env({}).relation_sentences is None


def test_user_templates_extend_and_replace_the_bundled_ones(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[item_item]\nbought_together = "{hub} and {target} go together."\n'
        '[fallback]\nitem_entity = "{target} and {hub}: same {relation}."',
        encoding="utf-8",
    )
    loaded, bundled = load_sentences(path), load_sentences()
    assert (
        loaded.related_item("bought_together", "in", hub="H", target="T", verb="v") == "H and T go together."
    )
    assert loaded.related_item("also_bought", "out", hub="H", target="T", verb="bought") == (
        bundled.related_item("also_bought", "out", hub="H", target="T", verb="bought")
    )
    assert loaded.shared_attribute(
        "film.film.genre", hub="H", target="T", verb="v", entity="E", kind=None
    ) == ("T and H: same genre.")
