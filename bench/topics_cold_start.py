"""Benchmark: search-driven cold start and topic quality on MovieLens (ml-latest-small).

Protocol (issue 11): leave-last-out by time; each test user is represented only by one search,
made from their held-out movie's tags (those other users gave, at most five), and nothing else.

**Validation, not test, chooses.** Every constant the served ranking uses is chosen on a
validation split of the same users, never on the test users: each user's *second-to-last* movie
(by time) is their validation target, the search is made the same way from its tags, and
popularity counts only the ratings before it. The grid: the match bar of
:class:`kgrec.topics.TopicIndex` (``MATCH_MIN_COSINE``), how many topics an item is ABOUT
(``ABOUT_TOPICS``) and the popularity weight of :mod:`kgrec.search_cold_start`
(``POPULARITY_WEIGHT``); each point ranks with the very functions serving calls
(``TopicIndex.match``, ``search_ranking``). The best point by validation Recall@20 is reported
next to the constants in the code; the test columns use the constants in the code.

Test columns (Recall@20 over the test users):

- ``popularity``: the 20 most rated movies of the training ratings, the user's own training
  movies left out (a stronger baseline than a newcomer gets).
- ``popularity_newcomer``: what serving returns to a user with no activity at all (the real
  :class:`kgrec.serving.Serving`, nothing to leave out).
- ``topics_central`` / ``topics_popular``: the 20 slots shared by the search's matched topics in
  proportion, each filled with its most central (ABOUT score) or most rated movies (the nearest
  topic only, as before).
- ``topics_query``: the matched topics' movies (every membership) ranked by the cosine of the
  search's embedding to each movie's text embedding.
- ``query_nearest``: every movie by that cosine, topics ignored (a reference: the search is made
  of the held-out movie's own tags, which are part of its text, so this is close to text retrieval).
- ``served``: **the real serving path.** An embedded FalkorDB holds every movie, a model version
  whose artifact carries the training popularity (no item–item signals: a search-only user's page
  does not read them), its topics written by :func:`workers.training.topics.write_topics` (with the
  version's topic-items file), and each test user's one search sent through
  ``Serving.ingest_events`` (embedded, matched, written); then ``Serving.recommendations(k=20)``
  (exploration off: its random slots are not what this compares). ``served_search_path`` is the
  share of those answers ranked by the search (``reason`` says so), ``cold_start`` must be true.

Topics are mined by :func:`workers.training.topics.compute_topics` from every movie's
title | genres | tags. Also reports the topics' NPMI coherence, coverage and ten topics.
Prints one JSON object.

    .venv/bin/python -m bench.topics_cold_start [--datasets-dir ../shared/data] [--vectors v.npy]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import register_version
from kgrec import catalogue
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.validation import validate_batch
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate
from kgrec.model_store import models_dir, save_artifacts
from kgrec.recommender import ModelArtifacts, Recommender
from kgrec.search_cold_start import POPULARITY_WEIGHT, search_ranking
from kgrec.serving import ItemFilters, Serving
from kgrec.text_model import encode
from kgrec.topic_items import TopicItems
from kgrec.topics import MATCH_MIN_COSINE, TopicIndex
from workers.training.publish import activate
from workers.training.topics import ABOUT_TOPICS, TopicModel, compute_topics, write_topics

K = 20
TAGS_PER_QUERY = 5
MATCH_GRID = (0.25, 0.3, 0.35, 0.4, 0.45)
ABOUT_GRID = (1, 2, 3)
POPULARITY_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
EVENT_BATCH = 100


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class Split:
    """One target movie per user, the search made of its tags, and what the user saw before it."""

    users: list[str]
    targets: list[int]
    queries: list[str]
    seen: list[set[int]]
    popularity: Counter[int]


def _split(
    by_user: dict[str, list[tuple[int, int]]], tags: dict[int, list[tuple[str, str]]], back: int
) -> Split:
    """``back`` = 1: each user's last movie (test); 2: the one before (validation)."""
    popularity: Counter[int] = Counter()
    split = Split([], [], [], [], popularity)
    for user, rows in sorted(by_user.items()):
        if len(rows) <= back:
            continue
        before = {m for _, m in rows[:-back]}
        popularity.update(before)
        target = rows[-back][1]
        others = list(dict.fromkeys(t for u, t in tags.get(target, []) if u != user))[:TAGS_PER_QUERY]
        if others:
            split.users.append(user)
            split.targets.append(target)
            split.queries.append(", ".join(others))
            split.seen.append(before)
    return split


def _topic_ranking(
    shares: list[tuple[int, float]], order: list[list[int]], seen: set[int], fallback: list[int]
) -> list[int]:
    """K movies: each matched topic's slots (by share) filled with its first unseen movies in ``order``,
    the rest from ``fallback``."""
    ranked: list[int] = []
    for position, (topic, share) in enumerate(shares):
        slots = K - len(ranked) if position == len(shares) - 1 else round(K * share)
        for movie in order[topic]:
            if slots <= 0 or len(ranked) >= K:
                break
            if movie not in seen and movie not in ranked:
                ranked.append(movie)
                slots -= 1
    ranked.extend(m for m in fallback if m not in ranked and len(ranked) < K)
    return ranked[:K]


def _popularity_model(movie_ids: list[str], popularity: Counter[int], version: str) -> Recommender:
    counts = np.asarray([popularity[k] for k in range(len(movie_ids))], dtype=np.float32)
    return Recommender(
        ModelArtifacts(
            version=version,
            item_ids=movie_ids,
            item_embeddings=np.zeros((len(movie_ids), 1), dtype=np.float32),
            components={},
            weights={},
            recency_decay=1.0,
            popularity=counts,
        )
    )


def _topic_items(model: TopicModel, movie_ids: list[str], version: str) -> TopicItems:
    ids = [str(t) for t in range(model.n_topics)]
    assert model.vectors is not None
    return TopicItems(version, movie_ids, model.vectors, ids, model.item_topics, model.item_scores)


def _search_recall(
    split: Split, vectors: np.ndarray, index: TopicIndex, items: TopicItems, model: Recommender, *, bar: float
) -> dict[float, float]:
    """Validation Recall@K of the served ranking functions, per popularity weight of the grid."""
    matches = index.match(vectors, bar)
    popular = model.rank([[]], K)[0]
    hits = dict.fromkeys(POPULARITY_GRID, 0)
    for target, vector, found in zip(split.targets, vectors, matches, strict=True):
        for weight in POPULARITY_GRID:
            ranking = search_ranking(model, items, vector, [t for t, _ in found], weight)
            rows = (ranking.rank(lambda n, _a: popular)(K, None) if ranking else popular).rows
            hits[weight] += target in rows[:K].tolist()
    return {w: hits[w] / len(split.users) for w in POPULARITY_GRID}


def _validation(split: Split, texts: list[str], vectors: np.ndarray, movie_ids: list[str]) -> dict[str, Any]:
    """The grid on the validation users; the best point and every point's Recall@K."""
    query_vectors = encode(split.queries)
    model = _popularity_model(movie_ids, split.popularity, "validation")
    points = []
    for about in ABOUT_GRID:
        topics = compute_topics(texts, vectors, seed=0, about_topics=about)
        assert topics is not None
        index = TopicIndex(
            "validation", tuple(str(t) for t in range(topics.n_topics)), tuple(topics.names), topics.centroids
        )
        items = _topic_items(topics, movie_ids, "validation")
        for bar in MATCH_GRID:
            for weight, recall in _search_recall(split, query_vectors, index, items, model, bar=bar).items():
                points.append(
                    {
                        "about_topics": about,
                        "match_min_cosine": bar,
                        "popularity_weight": weight,
                        f"recall@{K}": round(recall, 4),
                    }
                )
    best = max(
        points,
        key=lambda p: (p[f"recall@{K}"], -p["about_topics"], p["match_min_cosine"], -p["popularity_weight"]),
    )
    return {"users": len(split.users), "best": best, "points": points}


def _served(
    split: Split,
    movies: list[dict[str, str]],
    movie_ids: list[str],
    texts: list[str],
    vectors: np.ndarray,
    popularity: Counter[int],
    work: Path,
) -> dict[str, Any]:
    """Recall@K through the real serving path (see the module docstring)."""
    settings = Settings(
        data_dir=work / "var", graph_name="coldstart", aof_fsync="everysec", explore_share=0.0
    )
    server = EmbeddedServer(settings.data_dir, settings.aof_fsync)
    server.start()
    try:
        with open_gateway(settings) as gateway:
            migrate(gateway)
            started = time.perf_counter()
            items = [catalogue.CatalogueItem(item_id=m["movieId"], title=m["title"][:200]) for m in movies]
            for start in range(0, len(items), 2_000):
                catalogue.write_items(gateway, items[start : start + 2_000])
            version = "coldstart"
            folder = models_dir(settings.data_dir)
            folder.mkdir(parents=True, exist_ok=True)
            artifact = save_artifacts(_popularity_model(movie_ids, popularity, version).artifacts, folder)
            now = register_version(gateway, version, artifact)
            topics = compute_topics(texts, vectors, seed=0)
            assert topics is not None
            write_topics(gateway, version, movie_ids, topics, folder=folder)
            activate(gateway, version)
            setup_s = time.perf_counter() - started
        serving = Serving(settings)
        try:
            newcomer = [
                i["item_id"]
                for i in serving.recommendations(
                    "nobody", k=K, offset=0, exclude="seen", filters=ItemFilters(), explain=False
                )["items"]
            ]
            users = [f"cold-{user}-{uuid.uuid4().hex[:6]}" for user in split.users]
            started = time.perf_counter()
            for start in range(0, len(users), EVENT_BATCH):
                raw = [
                    {"event_id": f"s-{user}", "user_id": user, "type": "search", "ts": now, "query": query}
                    for user, query in zip(
                        users[start : start + EVENT_BATCH],
                        split.queries[start : start + EVENT_BATCH],
                        strict=True,
                    )
                ]
                events, errors = validate_batch(raw, max_skew_s=300, now_ms=now)
                assert not errors, errors
                serving.ingest_events(events)
            ingest_s = time.perf_counter() - started
            hits = by_search = cold = newcomer_hits = 0
            latencies = []
            for user, target in zip(users, split.targets, strict=True):
                started = time.perf_counter()
                answer = serving.recommendations(
                    user, k=K, offset=0, exclude="seen", filters=ItemFilters(), explain=False
                )
                latencies.append(time.perf_counter() - started)
                ranked = [i["item_id"] for i in answer["items"]]
                hits += movie_ids[target] in ranked
                newcomer_hits += movie_ids[target] in newcomer
                cold += answer["cold_start"] is True
                by_search += "closest to what they searched" in answer.get("reason", "")
        finally:
            serving.close()
    finally:
        server.stop()
    n = len(split.users)
    return {
        "served": round(hits / n, 4),
        "popularity_newcomer": round(newcomer_hits / n, 4),
        "served_search_path": round(by_search / n, 4),
        "served_cold_start": round(cold / n, 4),
        "setup_s": round(setup_s, 1),
        "ingest_s": round(ingest_s, 1),
        "recommend_ms_median": round(1000 * float(np.median(latencies)), 1),
        "recommend_ms_p95": round(1000 * float(np.percentile(latencies, 95)), 1),
    }


def main() -> None:
    """Run the protocol and print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--vectors", type=Path, help="an .npy file to keep the movie embeddings in (reruns)")
    parser.add_argument("--skip-validation", action="store_true", help="only the test columns")
    args = parser.parse_args()
    folder = args.datasets_dir / "movielens-ml-latest-small"
    movies = _read(folder / "movies.csv")
    movie_ids = [m["movieId"] for m in movies]
    index = {m["movieId"]: k for k, m in enumerate(movies)}
    tags: dict[int, list[tuple[str, str]]] = defaultdict(list)  # movie -> (user, tag)
    for row in _read(folder / "tags.csv"):
        if row["movieId"] in index:
            tags[index[row["movieId"]]].append((row["userId"], " ".join(row["tag"].lower().split())))
    by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in _read(folder / "ratings.csv"):
        by_user[row["userId"]].append((int(row["timestamp"]), index[row["movieId"]]))
    for rows in by_user.values():
        rows.sort()
    test = _split(by_user, tags, back=1)
    validation = _split(by_user, tags, back=2)

    texts = []
    for k, movie in enumerate(movies):
        named = list(dict.fromkeys(t for _, t in tags.get(k, [])))[:10]
        texts.append(
            " | ".join(
                p for p in (movie["title"], " > ".join(movie["genres"].split("|")), ", ".join(named)) if p
            )
        )
    started = time.perf_counter()
    if args.vectors is not None and args.vectors.exists():
        vectors = np.load(args.vectors)
        check = encode(texts[:5])
        assert np.allclose(check, vectors[:5], atol=1e-3), "the cached vectors are of other texts"
    else:
        vectors = encode(texts)
        if args.vectors is not None:
            np.save(args.vectors, vectors)
    encode_s = time.perf_counter() - started

    chosen = None if args.skip_validation else _validation(validation, texts, vectors, movie_ids)

    model = compute_topics(texts, vectors, seed=0)
    assert model is not None
    topic_index = TopicIndex(
        "bench", tuple(str(t) for t in range(model.n_topics)), tuple(model.names), model.centroids
    )
    members = [np.flatnonzero(model.item_topic == t).tolist() for t in range(model.n_topics)]
    about = [np.flatnonzero((model.item_topics == t).any(axis=1)).tolist() for t in range(model.n_topics)]
    central = [sorted(m, key=lambda i: -model.item_score[i]) for m in members]
    most_rated = [sorted(m, key=lambda i: (-test.popularity[i], i)) for m in members]

    # ties by movie order, as the Recommender's ranking breaks them
    top_popular = sorted(test.popularity, key=lambda m: (-test.popularity[m], m))
    query_vectors = encode(test.queries)
    matches = topic_index.match(query_vectors)
    # searches no topic reaches the bar for: the nearest topic takes them (TopicIndex.match)
    below_bar = int((np.max(query_vectors @ model.centroids.T, axis=1) < MATCH_MIN_COSINE).sum())
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    hits = {"popularity": 0, "topics_central": 0, "topics_popular": 0, "topics_query": 0, "query_nearest": 0}
    for target, seen, found, query in zip(test.targets, test.seen, matches, query_vectors, strict=True):
        shares = [(int(t), share) for t, share in found]
        popular_list = [m for m in top_popular if m not in seen][:K]
        hits["popularity"] += target in popular_list
        hits["topics_central"] += target in _topic_ranking(shares, central, seen, popular_list)
        hits["topics_popular"] += target in _topic_ranking(shares, most_rated, seen, popular_list)
        cosine = unit @ query
        nearest = [m for m in np.argsort(-cosine, kind="stable")[: K + len(seen)].tolist() if m not in seen]
        hits["query_nearest"] += target in nearest[:K]
        pool = sorted(
            {m for t, _ in shares for m in about[t] if m not in seen}, key=lambda m: (-cosine[m], m)
        )
        hits["topics_query"] += target in _topic_ranking([], [], seen, [*pool[:K], *popular_list])
    recall = {name: round(count / len(test.users), 4) for name, count in hits.items()}
    with tempfile.TemporaryDirectory(prefix="kgrec-coldstart-") as work:
        served = _served(test, movies, movie_ids, texts, vectors, test.popularity, Path(work))
    recall["served"] = served.pop("served")
    recall["popularity_newcomer"] = served.pop("popularity_newcomer")
    result: dict[str, Any] = {
        "what": "bench/topics_cold_start.py, MovieLens ml-latest-small, leave-last-out, one search per user",
        "machine": f"{platform.node()} ({platform.machine()}), CPU",
        "test_users": len(test.users),
        "searches_below_the_bar": below_bar,
        f"recall@{K}": recall,
        "served_vs_popularity": round(recall["served"] / recall["popularity"], 2),
        "served_vs_popularity_newcomer": round(
            recall["served"] / max(recall["popularity_newcomer"], 1e-9), 2
        ),
        "served_run": served,
        "constants_in_code": {
            "about_topics": ABOUT_TOPICS,
            "match_min_cosine": MATCH_MIN_COSINE,
            "popularity_weight": POPULARITY_WEIGHT,
        },
        "validation": chosen,
        "topic_quality": model.quality,
        "encode_s": round(encode_s, 1),
        "ten_topics": [
            {"name": model.names[t], "keywords": model.keywords[t], "movies": model.sizes[t]}
            for t in np.argsort(-np.asarray(model.sizes), kind="stable")[:10].tolist()
        ],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
