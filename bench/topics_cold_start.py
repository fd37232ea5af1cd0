"""Benchmark: search-driven cold start and topic quality on MovieLens (ml-latest-small).

Protocol (issue 11): leave-last-out by time; each test user is represented only by one search,
made from their held-out movie's tags (those other users gave, at most five), and nothing else.

- ``popularity``: the 20 most rated movies of the training ratings.
- ``topics_central``: the search is embedded and matched to the topics
  (:class:`kgrec.topics.TopicIndex`, the ingestion rule: cosine ≥ 0.35, at most 3, shares by
  cosine); the 20 slots are shared by the matched topics in proportion, each filled with its most
  central movies (ABOUT score), the movies the served profile takes.
- ``topics_popular``: the same slots filled with each topic's most rated movies (serving adds
  decayed popularity as its prior).
- ``topics_query``: the matched topics' movies (all of them, one pool) ranked by the cosine of the
  search's embedding to each movie's text embedding: the search itself, not only its topics, orders
  the candidates the topics allow.
- ``query_nearest``: every movie by that cosine, topics ignored (a reference for the above).
Both topic rankings fall back to popularity for a search that matches no topic (as serving does)
and fill unused slots with it.

Topics are mined by :func:`workers.training.topics.compute_topics` from every movie's
title | genres | tags. Also reports the topics' NPMI coherence, coverage and ten topics.
Prints one JSON object.

    .venv/bin/python -m bench.topics_cold_start [--datasets-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from kgrec.text_model import encode
from kgrec.topics import TopicIndex
from workers.training.topics import compute_topics

K = 20
TAGS_PER_QUERY = 5


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


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


def main() -> None:
    """Run the protocol and print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--vectors", type=Path, help="an .npy file to keep the movie embeddings in (reruns)")
    args = parser.parse_args()
    folder = args.datasets_dir / "movielens-ml-latest-small"
    movies = _read(folder / "movies.csv")
    index = {m["movieId"]: k for k, m in enumerate(movies)}
    tags: dict[int, list[tuple[str, str]]] = defaultdict(list)  # movie -> (user, tag)
    for row in _read(folder / "tags.csv"):
        if row["movieId"] in index:
            tags[index[row["movieId"]]].append((row["userId"], " ".join(row["tag"].lower().split())))

    by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in _read(folder / "ratings.csv"):
        by_user[row["userId"]].append((int(row["timestamp"]), index[row["movieId"]]))
    held_out: dict[str, int] = {}
    train_seen: dict[str, set[int]] = {}
    popularity: Counter[int] = Counter()
    for user, rows in by_user.items():
        rows.sort()
        held_out[user] = rows[-1][1]
        train_seen[user] = {m for _, m in rows[:-1]}
        popularity.update(train_seen[user])

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
    else:
        vectors = encode(texts)
        if args.vectors is not None:
            np.save(args.vectors, vectors)
    encode_s = time.perf_counter() - started
    model = compute_topics(texts, vectors, seed=0)
    assert model is not None
    topic_index = TopicIndex(
        "bench", tuple(str(t) for t in range(model.n_topics)), tuple(model.names), model.centroids
    )
    members = [np.flatnonzero(model.item_topic == t).tolist() for t in range(model.n_topics)]
    central = [sorted(m, key=lambda i: -model.item_score[i]) for m in members]
    most_rated = [sorted(m, key=lambda i: (-popularity[i], i)) for m in members]

    users, queries = [], []
    for user, movie in sorted(held_out.items()):
        others = list(dict.fromkeys(t for u, t in tags.get(movie, []) if u != user))[:TAGS_PER_QUERY]
        if others:
            users.append(user)
            queries.append(", ".join(others))
    top_popular = [m for m, _ in popularity.most_common()]
    query_vectors = encode(queries)
    matches = topic_index.match(query_vectors)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    hits = {"popularity": 0, "topics_central": 0, "topics_popular": 0, "topics_query": 0, "query_nearest": 0}
    unmatched = 0
    for user, found, query in zip(users, matches, query_vectors, strict=True):
        seen = train_seen[user]
        shares = [(int(t), share) for t, share in found]
        unmatched += not shares
        popular_list = [m for m in top_popular if m not in seen][:K]
        hits["popularity"] += held_out[user] in popular_list
        hits["topics_central"] += held_out[user] in _topic_ranking(shares, central, seen, popular_list)
        hits["topics_popular"] += held_out[user] in _topic_ranking(shares, most_rated, seen, popular_list)
        cosine = unit @ query
        nearest = [m for m in np.argsort(-cosine, kind="stable")[: K + len(seen)].tolist() if m not in seen]
        hits["query_nearest"] += held_out[user] in nearest[:K]
        pool = [m for t, _ in shares for m in members[t] if m not in seen]
        by_query = sorted(pool, key=lambda m: (-cosine[m], m))[:K]
        hits["topics_query"] += held_out[user] in _topic_ranking([], [], seen, [*by_query, *popular_list])
    result: dict[str, Any] = {
        "what": "bench/topics_cold_start.py, MovieLens ml-latest-small, leave-last-out, one search per user",
        "test_users": len(users),
        "queries_without_topic": unmatched,
        f"recall@{K}": {name: round(count / len(users), 4) for name, count in hits.items()},
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
