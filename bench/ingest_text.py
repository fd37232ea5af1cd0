"""Benchmark: events/s of language events next to text-free ones, in the same run.

Data: MovieLens ml-latest-small. Every side writes through ``kgrec.events.ingest``'s
``prepare`` and ``commit`` (the API's and the importer's path) in 1,000-event batches,
with ``appendfsync always``, on a fresh embedded server:

1. ``text_free_before``: rating events through the ingestion statement as it was before topics
   (today's text-free statement without its one new line, the review text);
2. ``text_free_after``: the same events through today's code and statement;
3. ``text``: tag events (``tags.csv``) and one search per tag row (the tag as the query),
   embedded before the write and matched to topics mined from the rated movies' text.

Sides 1 and 2 alternate over ``--rounds`` rounds on fresh graphs. Prints one JSON object.

    .venv/bin/python -m bench.ingest_text [--datasets-dir ../shared/data] [--ratings 50000]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import register_version
from graph_schema.catalogue import write
from graph_schema.statements.admin import RELATIONSHIP_COUNTS
from graph_schema.statements.events import INGEST_EVENTS
from graph_schema.statements.models import ACTIVATE_VERSION
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events import ingest as ingest_module
from kgrec.events.ingest import commit, prepare
from kgrec.events.validation import Event, validate_each
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.migrations import migrate
from kgrec.text_model import encode
from workers.training.topics import compute_topics, write_topics

BATCH = 1_000
MOVIES_FOR_TOPICS = 1_500
REVIEW_LINES = (
    "        r.review_text = CASE WHEN newer_review THEN p.review_text ELSE r.review_text END,\n",
    "        r.review_ts = CASE WHEN newer_review THEN p.review_ts ELSE r.review_ts END,\n",
)
assert all(line in INGEST_EVENTS.cypher for line in REVIEW_LINES)
BEFORE = write(
    "ingest_events_before_topics",
    INGEST_EVENTS.cypher.replace(REVIEW_LINES[0], "").replace(REVIEW_LINES[1], ""),
    **INGEST_EVENTS.params,
)


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _valid(raw: list[dict[str, Any]]) -> list[Event]:
    checked = validate_each(raw, max_skew_s=300, now_ms=int(time.time() * 1000))
    return [c for c in checked if isinstance(c, Event)]


def rating_events(folder: Path, limit: int) -> list[Event]:
    """MovieLens ratings as rating events."""
    rows = _read(folder / "ratings.csv")[:limit]
    return _valid(
        [
            {
                "event_id": f"r-{i}",
                "user_id": r["userId"],
                "item_id": r["movieId"],
                "type": "rating",
                "ts": int(r["timestamp"]) * 1000,
                "value": float(r["rating"]),
            }
            for i, r in enumerate(rows)
        ]
    )


def text_events(folder: Path, rated: set[str]) -> list[Event]:
    """One tag event per tags.csv row on a rated movie, and one search with the same text."""
    raw: list[dict[str, Any]] = []
    for i, r in enumerate(_read(folder / "tags.csv")):
        if r["movieId"] not in rated or not r["tag"].strip():
            continue
        ts = int(r["timestamp"]) * 1000
        raw.append(
            {"event_id": f"t-{i}", "user_id": r["userId"], "item_id": r["movieId"], "type": "tag", "ts": ts}
            | {"tag": r["tag"][:100]}
        )
        raw.append(
            {"event_id": f"q-{i}", "user_id": r["userId"], "type": "search", "ts": ts, "query": r["tag"]}
        )
    return _valid(raw)


def _write_all(
    gateway: GraphGateway,
    events: list[Event],
    settings: Settings,
    statement_for: Callable[..., Any] | None = None,
) -> float:
    """Seconds to ingest ``events`` in batches (``statement_for`` replaces the statement, for 'before')."""
    original = ingest_module.statement_for
    if statement_for is not None:
        ingest_module.statement_for = statement_for
    try:
        started = time.perf_counter()
        for start in range(0, len(events), BATCH):
            batch = events[start : start + BATCH]
            now = int(time.time() * 1000)
            commit(gateway, prepare(gateway, batch, settings, now), batch, settings, now)
        return time.perf_counter() - started
    finally:
        ingest_module.statement_for = original


def _before(params: dict[str, Any]) -> Any:
    assert "tags" not in params  # a text-free batch
    return BEFORE


def _fresh(root: Path) -> tuple[Settings, EmbeddedServer]:
    settings = Settings(data_dir=root, aof_fsync="always")
    server = EmbeddedServer(settings.data_dir, "always")
    server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)
    return settings, server


def _interest_edges(gateway: GraphGateway) -> int:
    counts = {r["type"]: int(r["count"]) for r in gateway.read(RELATIONSHIP_COUNTS)}
    return counts.get("INTERESTED_IN", 0)


def _topics(gateway: GraphGateway, folder: Path, ratings: list[Event]) -> dict[str, Any]:
    """An active version whose topics are mined from the most rated movies' title and genres."""
    counts: dict[str, int] = {}
    for e in ratings:
        counts[e.item_id or ""] = counts.get(e.item_id or "", 0) + 1
    top = set(sorted(counts, key=lambda m: -counts[m])[:MOVIES_FOR_TOPICS])
    movies = [m for m in _read(folder / "movies.csv") if m["movieId"] in top]
    texts = [f"{m['title']} | {' > '.join(m['genres'].split('|'))}" for m in movies]
    started = time.perf_counter()
    model = compute_topics(texts, encode(texts), seed=0)
    assert model is not None
    # The topics go in as training writes them: a version, its topics, then the switch.
    now = register_version(gateway, "bench")
    write_topics(gateway, "bench", [m["movieId"] for m in movies], model)
    gateway.write(ACTIVATE_VERSION, {"id": "bench", "now": now})
    return {"topics": model.n_topics, "movies": len(texts), "mine_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    """Run the sides and print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--ratings", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = args.datasets_dir / "movielens-ml-latest-small"
    ratings = rating_events(folder, args.ratings)
    result: dict[str, Any] = {
        "what": "bench/ingest_text.py, MovieLens ml-latest-small, 1,000-event batches, appendfsync always",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "rating_events": len(ratings),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="kgrec-text-") as scratch:
        for round_number in range(args.rounds):
            for side, statement_for in (("text_free_before", _before), ("text_free_after", None)):
                settings, server = _fresh(Path(scratch) / f"{side}-{round_number}")
                try:
                    with open_gateway(settings) as gateway:
                        seconds = _write_all(gateway, ratings, settings, statement_for)
                finally:
                    server.stop()
                rate = round(len(ratings) / seconds)
                result["runs"].append({"side": side, "round": round_number + 1, "events_per_s": rate})
        settings, server = _fresh(Path(scratch) / "text")
        try:
            with open_gateway(settings) as gateway:
                _write_all(gateway, ratings, settings)
                result["topics"] = _topics(gateway, folder, ratings)
                language = text_events(folder, {e.item_id for e in ratings if e.item_id})
                encode(["warm up"])  # the model is loaded once per process, not per batch
                before = _interest_edges(gateway)
                seconds = _write_all(gateway, language, replace(settings))
                # Tags and searches write no brand or category interest: the new edges are topic interests.
                interests = _interest_edges(gateway) - before
        finally:
            server.stop()
        result["text"] = {
            "events": len(language),
            "events_per_s": round(len(language) / seconds),
            "topic_interest_edges": interests,
        }
    for side in ("text_free_before", "text_free_after"):
        rates = [r["events_per_s"] for r in result["runs"] if r["side"] == side]
        result[f"{side}_median_events_per_s"] = float(np.median(rates))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
