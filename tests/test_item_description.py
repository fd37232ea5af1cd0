"""An item's description on a real embedded graph: ``kgrec import`` reads the optional column, and the
description reaches the topic text (training and fold-in) but never the training text."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from kgrec.catalogue import validate_items, write_items
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.datasets.records import write_csv_rows
from kgrec.events.validation import field_problem
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec.limits import MAX_DESCRIPTION_LENGTH
from kgrec.text_model import encode
from workers.training.config import TrainConfig
from workers.training.item_fold_in import embed_new_items
from workers.training.job import run_training
from workers.training.subgraph import pull
from workers.training.topics import (
    DESCRIPTION_CHARS,
    compute_topics,
    description_snippet,
    topic_texts,
)

LIPS = [
    "Vegan lip balm with shea butter",
    "Organic tinted lip balm, cherry",
    "Moisturising lip balm for dry lips",
    "Coconut oil lip care stick",
    "Beeswax lip balm with vitamin E",
    "Matte lipstick, cruelty free",
    "Hydrating lip gloss with jojoba",
    "Overnight lip mask, berry",
    "Lip scrub with brown sugar",
    "Sheer lip oil with rose hip",
]
SPACE = [
    "Astronauts on a mission to Mars",
    "A starship lost beyond the galaxy",
    "Alien invasion of planet Earth",
    "Space station crew fights to survive in orbit",
    "Interstellar voyage through a wormhole",
    "Robots and rockets in a distant star system",
    "The first moon landing, a space drama",
    "Galactic empire war among the stars",
    "A comet threatens Earth, astronauts launch",
    "Cosmonauts stranded on a spaceship",
]
ONLY_DESCRIBED = "A science fiction film: astronauts fly a spaceship through space to a distant planet."


def _shop(folder: Path, with_description: bool) -> Path:
    """A kgrec-layout folder: lip care and space films, each bought by its own users, and one item
    ``described`` with no title, brand or category (its description, when given, is its only text)."""
    folder.mkdir(parents=True, exist_ok=True)
    titles = {f"lip-{k}": t for k, t in enumerate(LIPS)} | {f"space-{k}": t for k, t in enumerate(SPACE)}
    header = ["item_id", "brand", "categories", "title", "price"]
    rows = [[item, "", "", title, ""] for item, title in titles.items()] + [["described", "", "", "", ""]]
    if with_description:
        header.append("description")
        rows = [[*row, ONLY_DESCRIBED if row[0] == "described" else ""] for row in rows]
        rows.append(["too-long", "", "", "Long", "", "x" * (MAX_DESCRIPTION_LENGTH + 1)])  # line 23
    write_csv_rows(folder / "items.csv", header, rows)
    interactions = [
        [f"u-{theme}-{u}", f"{theme}-{(u + j) % 10}", f"2024-01-0{1 + j}T00:00:00Z"]
        for theme in ("lip", "space")
        for u in range(10)
        for j in range(3)
    ]
    write_csv_rows(folder / "interactions.csv", ["user_id", "item_id", "ts"], interactions)
    return folder


def _descriptions(gateway: GraphGateway) -> dict[str, str | None]:
    rows = gateway.run_query("MATCH (i:Item) RETURN i.id AS id, i.description AS d", {})
    return {row["id"]: row["d"] for row in rows}


def test_import_reads_the_description_column_and_works_without_it(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    described = _shop(tmp_path / "described", with_description=True)
    report = import_dataset(gateway, open_dataset(str(described), settings.datasets_dir), settings)
    found = {(Path(p.file).name, p.line): p.reason for p in report.problems}
    assert found == {
        # one bound, one message: the API's own words for it
        ("items.csv", 23): f"description {field_problem('description', 'x' * (MAX_DESCRIPTION_LENGTH + 1))}"
    }
    stored = _descriptions(gateway)
    assert stored["described"] == ONLY_DESCRIBED
    assert stored["lip-0"] is None and "too-long" not in stored  # an empty cell writes nothing
    # a file without the column imports as before and keeps the stored description (as a title is kept)
    plain = _shop(tmp_path / "plain", with_description=False)
    again = import_dataset(gateway, open_dataset(str(plain), settings.datasets_dir), settings)
    assert again.problems == []
    assert _descriptions(gateway)["described"] == ONLY_DESCRIBED


def test_description_snippet_cuts_at_a_word() -> None:
    long = "word " * 400
    snippet = description_snippet(long)
    assert len(snippet) <= DESCRIPTION_CHARS and snippet.endswith("word")
    assert description_snippet("  two\nlines ") == "two lines"
    assert description_snippet(None) == ""


def test_a_described_item_gets_the_topic_its_description_tells_and_training_text_leaves_it_out(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    import_dataset(gateway, open_dataset(str(_shop(tmp_path, True)), settings.datasets_dir), settings)
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    k = graph.item_ids.index("described")
    assert graph.item_text[k] == ""  # the training text (the graph model's feature) has no description
    assert all(ONLY_DESCRIBED not in text for text in graph.item_text)
    texts = topic_texts(graph)
    assert texts[k] == ONLY_DESCRIBED
    vectors = encode(texts)
    model = compute_topics(texts, vectors, seed=0)
    assert model is not None
    topic = int(model.item_topic[k])
    assert topic >= 0
    members = {graph.item_ids[i] for i in np.flatnonzero(model.item_topic == topic)} - {"described"}
    assert members and all(m.startswith("space-") for m in members), members
    # without its description the item has no text, so no topic
    blank = [t if i != k else "" for i, t in enumerate(texts)]
    bare = compute_topics(blank, encode(blank), seed=0)
    assert bare is not None and int(bare.item_topic[k]) == -1


def test_a_new_item_folded_in_gets_its_topic_from_its_description(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    import_dataset(gateway, open_dataset(str(_shop(tmp_path, True)), settings.datasets_dir), settings)
    run_training(gateway, settings, TrainConfig(epochs=1, use_ease=False), device="cpu", version="described")
    space_topics = {
        row["t"]
        for row in gateway.run_query(
            "MATCH (i:Item)-[:ABOUT]->(t:Topic) WHERE i.id STARTS WITH 'space-' RETURN DISTINCT t.id AS t", {}
        )
    }
    items, problems = validate_items([{"item_id": "new-film", "description": ONLY_DESCRIBED}])
    assert problems == []
    write_items(gateway, items)
    embed_new_items(gateway, settings, ["new-film"])
    about = gateway.run_query(
        "MATCH (:Item {id: 'new-film'})-[a:ABOUT]->(t:Topic) RETURN t.id AS t ORDER BY a.score DESC", {}
    )
    assert about and about[0]["t"] in space_topics


@pytest.mark.parametrize("value", [5, "x" * (MAX_DESCRIPTION_LENGTH + 1), "nul\x00"])
def test_validation_refuses_a_bad_description_naming_it(value: object) -> None:
    items, problems = validate_items([{"item_id": "a", "description": value}])
    assert items == [] and [(p.index, p.field) for p in problems] == [(0, "description")]
    got = f"{len(value)} characters" if isinstance(value, str) else repr(value)
    assert problems[0].reason.endswith(f"(got {got})")
