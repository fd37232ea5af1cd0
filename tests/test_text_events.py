"""Language events: review text, tags and searches, validated, written atomically and idempotently,
and matched to the active version's topics (real graph, real sentence-transformer)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from graph_schema.statements.privacy import ERASE_USER
from graph_schema.statements.topics import ITEM_TAGS
from kgrec.config import Settings
from kgrec.decay import DAY_MS
from kgrec.embedded import EmbeddedServer
from kgrec.erasure import user_hash
from kgrec.events.bulk import import_events
from kgrec.events.ingest import EventsRefused, ingest, normalised_tag
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.limits import MAX_QUERY_LENGTH, MAX_REVIEW_LENGTH
from kgrec.migrations import migrate
from kgrec.text_model import encode
from kgrec.topics import ACTIVE, MATCH_MIN_COSINE, search_topics
from tests.processes import ApiProcess

T0 = 1_760_000_000_000
KEY = "text-key-" + uuid.uuid4().hex


def ev(event_id: str, kind: str, ts: int = T0, user: str = "alice", **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user, "type": kind, "ts": ts, **extra}


def valid(*raw: dict[str, Any]) -> list[Any]:
    events, errors = validate_batch(list(raw), max_skew_s=300, now_ms=T0 + 365 * DAY_MS)
    assert errors == []
    return events


def problems(*raw: dict[str, Any]) -> list[tuple[int, str, str]]:
    _, errors = validate_batch(list(raw), max_skew_s=300, now_ms=T0)
    return [(e.index, e.field, e.reason) for e in errors]


def test_each_new_event_type_is_validated_with_its_field_and_value_named() -> None:
    found = problems(
        ev("s1", "search", query="   "),
        ev("s2", "search"),
        ev("s3", "search", item_id="lipstick", query="red lipstick"),
        ev("r1", "review", item_id="lipstick", text="x" * (MAX_REVIEW_LENGTH + 1)),
        ev("t1", "tag", item_id="lipstick"),
        ev("v1", "view", item_id="lipstick", query="lipstick"),
        ev("v2", "view"),
        ev("s4", "search", query="q" * (MAX_QUERY_LENGTH + 1)),
        ev("s5", "search", query="ok\x00"),
        ev("ok", "search", query="vegan lip balm"),
    )
    assert found == [
        (0, "query", "must not be empty (got '   ')"),
        (1, "query", "is required for a search event"),
        (2, "item_id", "a search has no item"),
        (
            3,
            "text",
            f"must be a string of at most {MAX_REVIEW_LENGTH} characters without NUL (got 5001 characters)",
        ),
        (4, "tag", "is required for a tag event"),
        (5, "query", "only a search event carries query (this is a view)"),
        (6, "item_id", "is required"),
        (
            7,
            "query",
            f"must be a string of at most {MAX_QUERY_LENGTH} characters without NUL (got 501 characters)",
        ),
        (
            8,
            "query",
            f"must be a string of at most {MAX_QUERY_LENGTH} characters without NUL (got 3 characters)",
        ),
    ]


def test_text_of_invisible_characters_is_blank_and_a_lone_surrogate_is_named() -> None:
    found = problems(
        ev("s1", "search", query="\u200b"),  # zero-width space: str.strip keeps it
        ev("t1", "tag", item_id="lipstick", tag="\u2060\ufeff\u00a0"),
        ev("r1", "review", item_id="lipstick", text="\u200b\u2028\x7f"),
        ev("s2", "search", query="shoes \ud83d"),  # a lone surrogate, as JSON's "\ud83d" gives it
        ev("t2", "tag", item_id="lipstick", tag="\ud83d"),
        ev("ok", "search", query="\u200bshoes\u200b"),
    )
    assert found == [
        (0, "query", "must not be empty (got '\\u200b')"),
        (1, "tag", "must not be empty (got '\\u2060\\ufeff\\xa0')"),
        (2, "text", "must not be empty (got '\\u200b\\u2028\\x7f')"),
        (3, "query", "is not valid Unicode: a lone surrogate U+D83D at character 6 (got 'shoes \\ud83d')"),
        (4, "tag", "is not valid Unicode: a lone surrogate U+D83D at character 0 (got '\\ud83d')"),
    ]
    # what is embedded, and a tag's node id, leave the invisible characters out
    (search,) = valid(ev("ok", "search", query="\u200bshoes\u200b"))
    assert search.language == "shoes"
    assert normalised_tag("\u200bSpace\u00a0\u200b Opera\ufeff") == "space opera"
    # inside a word too: a zero-width space or a direction override splits it (a tag that looks
    # like another is the other), a joiner or a flag's tag characters do not
    assert normalised_tag("Lip\u200bBalm") == normalised_tag("lip balm") == "lip balm"
    assert normalised_tag("ünïcödé 😀 \u202ertl") == "ünïcödé 😀 rtl"
    family, scotland = "👨\u200d👩\u200d👧", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    assert normalised_tag(f"{family} {scotland}") == f"{family} {scotland}"


def test_item_facts_and_values_are_refused_where_no_event_of_the_type_keeps_them() -> None:
    facts = {"brand": "Acme", "title": "Red lipstick"}
    found = problems(
        ev("s1", "search", query="red lipstick", item=facts),
        ev("s2", "search", query="red lipstick", value=5),
        ev("t1", "tag", item_id="lipstick", tag="red", item=facts),
        ev("t2", "tag", item_id="lipstick", tag="red", value=2.5),
        ev("r1", "review", item_id="lipstick", text="Lovely", value=4),
        ev("ok1", "review", item_id="lipstick", text="Lovely", item=facts),
        ev("ok2", "rating", item_id="lipstick", value=4),
    )
    no_facts = "carries no item facts: send them with a behaviour on the item or through the catalogue API"
    assert found == [
        (0, "item", f"a search event {no_facts}"),
        (1, "value", "a search event carries no value (got 5): a value is a rating's or a purchase's"),
        (2, "item", f"a tag event {no_facts}"),
        (3, "value", "a tag event carries no value (got 2.5): a value is a rating's or a purchase's"),
        (4, "value", "a review event carries no value (got 4): a value is a rating's or a purchase's"),
    ]


def test_tags_are_counted_per_item_normalised_and_idempotent(
    gateway: GraphGateway, settings: Settings
) -> None:
    ingest(gateway, valid(ev("v", "view", item_id="dune")), settings, now_ms=T0)
    batch = valid(
        ev("t1", "tag", item_id="dune", tag="Space  Opera"),
        ev("t2", "tag", item_id="dune", tag="space opera", user="bob"),
        ev("t3", "tag", item_id="dune", tag="Desert"),
    )
    assert ingest(gateway, batch, settings, now_ms=T0).applied == 3
    assert ingest(gateway, batch, settings, now_ms=T0).duplicates == 3  # resent: nothing changes
    rows = gateway.run_query(
        "MATCH (:Item {id: 'dune'})-[r:TAGGED]->(t:Tag) RETURN t.id AS tag, r.count AS n", {}
    )
    assert sorted((r["tag"], r["n"]) for r in rows) == [("desert", 1), ("space opera", 2)]
    # a tag is language, not a behaviour on the item: no INTERACTED edge for bob
    assert gateway.run_query("MATCH (:User {id: 'bob'})-[r:INTERACTED]->() RETURN r", {}) == []


def test_erasing_a_user_takes_their_tags_off_the_items_and_out_of_topic_text(
    gateway: GraphGateway, settings: Settings
) -> None:
    tags = [("t1", "alice", "alice smith home address"), ("t2", "alice", "cosy"), ("t3", "bob", "cosy")]
    events = [ev("v", "view", item_id="home")] + [
        ev(i, "tag", item_id="home", tag=t, user=u) for i, u, t in tags
    ]
    assert ingest(gateway, valid(*events), settings, now_ms=T0).applied == 4
    gateway.write(ERASE_USER, {"user_id": "alice", "erasure_id": user_hash("alice"), "now": T0 + 1})
    rows = gateway.run_query("MATCH (:Item)-[r:TAGGED]->(t:Tag) RETURN t.id AS tag, r.count AS n", {})
    assert [(r["tag"], r["n"]) for r in rows] == [("cosy", 1)]  # bob's stays
    assert gateway.run_query("MATCH (t:Tag {id: 'alice smith home address'}) RETURN t", {}) == []
    texts = gateway.read(ITEM_TAGS, {})
    assert "alice" not in repr(texts)
    # a late tag of hers, dated before the erasure, is not written back
    late = valid(ev("t4", "tag", item_id="home", tag="alice smith again"))
    ingest(gateway, late, settings, now_ms=T0 + 2)
    assert gateway.run_query("MATCH (t:Tag {id: 'alice smith again'}) RETURN t", {}) == []


def test_a_tag_on_an_unknown_item_refuses_the_whole_batch(gateway: GraphGateway, settings: Settings) -> None:
    batch = valid(ev("v1", "view", item_id="known"), ev("t1", "tag", item_id="nowhere", tag="x"))
    with pytest.raises(EventsRefused) as refused:
        ingest(gateway, batch, settings, now_ms=T0)
    assert [e.as_dict() for e in refused.value.errors] == [
        {"index": 1, "field": "item_id", "reason": "no item with id 'nowhere' to tag"}
    ]
    written = "MATCH (n) WHERE n:Event OR n:User OR n:Item OR n:Tag RETURN count(n) AS n"
    assert gateway.run_query(written, {}) == [{"n": 0}]  # nothing written
    # an item of the same batch can be tagged
    ok = valid(ev("v1", "view", item_id="known"), ev("t1", "tag", item_id="known", tag="x"))
    assert ingest(gateway, ok, settings, now_ms=T0).applied == 2


def test_a_late_older_review_does_not_replace_a_newer_ones_text(
    gateway: GraphGateway, settings: Settings
) -> None:
    """Reviews arriving out of order: the latest by time keeps its text (the older one is counted);
    an edge written before reviews had a time (no review_ts) takes any new review's text."""
    ingest(gateway, valid(ev("new", "review", item_id="balm", text="Newer words", ts=T0 + DAY_MS)), settings)
    ingest(gateway, valid(ev("old", "review", item_id="balm", text="Older words", ts=T0)), settings)
    query = "MATCH (:User {id: 'alice'})-[r:INTERACTED]->(:Item {id: 'balm'}) RETURN r"
    props = gateway.run_query(query, {})[0]["r"]["properties"]
    assert (props["review_text"], props["n_review"]) == ("Newer words", 2)
    assert props["review_ts"] == T0 + DAY_MS
    gateway.run_query(
        "MATCH (:User {id: 'alice'})-[r:INTERACTED]->(:Item {id: 'balm'}) SET r.review_ts = null", {}
    )
    ingest(
        gateway, valid(ev("older", "review", item_id="balm", text="Oldest words", ts=T0 - DAY_MS)), settings
    )
    props = gateway.run_query(query, {})[0]["r"]["properties"]
    assert (props["review_text"], props["review_ts"]) == ("Oldest words", T0 - DAY_MS)


def test_review_text_is_kept_and_a_search_needs_no_item(gateway: GraphGateway, settings: Settings) -> None:
    batch = valid(
        ev("r1", "review", item_id="balm", text="Soft and vegan", ts=T0),
        ev("r2", "review", item_id="balm", text="Even better now", ts=T0 + 1000),
        ev("s1", "search", query="vegan lip balm", user="carol"),
    )
    assert ingest(gateway, batch, settings, now_ms=T0).applied == 3
    edge = gateway.run_query("MATCH (:User {id: 'alice'})-[r:INTERACTED]->(:Item {id: 'balm'}) RETURN r", {})
    props = edge[0]["r"]["properties"]
    assert props["review_text"] == "Even better now" and props["n_review"] == 2
    carol = gateway.run_query(
        "MATCH (u:User {id: 'carol'}) OPTIONAL MATCH (u)-[r]->() RETURN count(r) AS n", {}
    )
    assert carol == [{"n": 0}]  # the user exists, with no edge: there are no topics yet
    assert gateway.run_query("MATCH (i:Item) RETURN count(i) AS n", {}) == [{"n": 1}]


def _topics(gateway: GraphGateway, version: str, topics: dict[str, str]) -> None:
    """An active version whose topics' centroids are the embeddings of the given texts."""
    vectors = encode(list(topics.values()))
    gateway.run_query(
        "CREATE (:ModelVersion {id: $v, active: true, status: 'ready', created_at: 1})",
        {"v": version},
    )
    for (topic_id, text), vector in zip(topics.items(), vectors, strict=True):
        gateway.run_query(
            "MATCH (m:ModelVersion {id: $v}) CREATE (m)-[:HAS_TOPIC {centroid: $c, size: 1}]->"
            "(:Topic {id: $id, name: $name})",
            {"v": version, "id": topic_id, "name": text, "c": [float(x) for x in vector]},
        )


def _topic_interest(gateway: GraphGateway, user: str) -> dict[str, dict[str, Any]]:
    rows = gateway.run_query(
        "MATCH (:User {id: $u})-[x:INTERESTED_IN]->(t:Topic) RETURN t.id AS t, properties(x) AS p",
        {"u": user},
    )
    return {r["t"]: r["p"] for r in rows}


def test_text_is_matched_to_the_active_topics_and_decays_like_other_interests(
    gateway: GraphGateway, settings: Settings
) -> None:
    _topics(gateway, f"v-{uuid.uuid4().hex[:6]}", {"lips": "vegan lip balm", "space": "space opera films"})
    query = "organic lip balm for dry lips"
    cosines = encode([query]) @ encode(["vegan lip balm", "space opera films"]).T
    assert cosines[0, 0] >= MATCH_MIN_COSINE > cosines[0, 1]  # the query is about lips only
    ingest(gateway, valid(ev("s1", "search", query=query, ts=T0)), settings, now_ms=T0)
    first = _topic_interest(gateway, "alice")
    assert set(first) == {"lips"}
    assert math.isclose(first["lips"]["weight"], 3.0) and first["lips"]["count"] == 1
    # two weeks later (one half-life) the same search again: 3·½ + 3, stamped at the later time
    later = T0 + 14 * DAY_MS
    ingest(gateway, valid(ev("s2", "search", query=query, ts=later)), settings, now_ms=later)
    second = _topic_interest(gateway, "alice")["lips"]
    assert math.isclose(second["weight"], 4.5) and second["weight_ts"] == later and second["count"] == 2
    # a review about space opera: the review's weight (4) goes to that topic, in the same write
    review = ev("r1", "review", item_id="dune", text="A grand space opera film", ts=later)
    ingest(gateway, valid(review), settings, now_ms=later)
    assert math.isclose(_topic_interest(gateway, "alice")["space"]["weight"], 4.0)
    assert ingest(gateway, valid(review), settings, now_ms=later).duplicates == 1  # idempotent
    assert math.isclose(_topic_interest(gateway, "alice")["space"]["weight"], 4.0)


def test_a_users_text_vector_is_the_decayed_sum_of_their_texts_and_far_text_takes_the_nearest_topic(
    gateway: GraphGateway, settings: Settings
) -> None:
    topics = {"lips": "vegan lip balm", "hair": "shampoo for curly hair"}
    _topics(gateway, f"v-{uuid.uuid4().hex[:6]}", topics)
    near, far = "organic lip balm for dry lips", "space opera films"
    lips, space = encode([near, far])
    cosines = encode(list(topics.values())) @ space
    assert max(cosines) < MATCH_MIN_COSINE
    ingest(gateway, valid(ev("s1", "search", query=near, ts=T0, user="dora")), settings, now_ms=T0)
    later = T0 + 14 * DAY_MS  # one half-life
    ingest(gateway, valid(ev("s2", "search", query=far, ts=later, user="dora")), settings, now_ms=later)
    row = gateway.run_query(
        "MATCH (u:User {id: 'dora'}) RETURN u.text_vector AS v, u.text_vector_ts AS ts", {}
    )[0]
    # a search weighs 3: the first one, a half-life old, is worth half of the second
    assert row["ts"] == later
    assert np.allclose(row["v"], 3 * 0.5 * lips + 3 * space, atol=1e-4)
    # no topic reaches the bar for the far search: the nearest one takes it all the same
    nearest = list(topics)[int(np.argmax(cosines))]
    assert _topic_interest(gateway, "dora")[nearest]["count"] >= 1


def test_text_without_a_word_the_model_reads_gets_no_topic_and_no_text_vector(
    gateway: GraphGateway, settings: Settings
) -> None:
    _topics(gateway, f"v-{uuid.uuid4().hex[:6]}", {"lips": "vegan lip balm", "space": "space opera films"})
    unread = ["ワイヤレスイヤホン", "🎧🎧🎧", "???", "a" * MAX_QUERY_LENGTH]  # [UNK] or punctuation only
    searches = [ev(f"u{n}", "search", query=q, user="gina") for n, q in enumerate(unread)]
    result = ingest(gateway, valid(*searches), settings, now_ms=T0)
    assert (result.applied, result.duplicates) == (4, 0)  # recorded and acknowledged as before
    assert _topic_interest(gateway, "gina") == {}
    vector = gateway.run_query("MATCH (u:User {id: 'gina'}) RETURN u.text_vector AS v", {})
    assert vector == [{"v": None}]
    assert [search_topics(gateway, q, 3)["topics"] for q in unread] == [[]] * 4
    # a text with one word the model reads keeps the nearest-topic rule
    ingest(gateway, valid(ev("u9", "search", query="??? balm", user="gina")), settings, now_ms=T0)
    assert set(_topic_interest(gateway, "gina")) == {"lips"}


def test_a_new_active_version_is_picked_up(gateway: GraphGateway, settings: Settings) -> None:
    _topics(gateway, "v-old", {"lips": "vegan lip balm"})
    assert ACTIVE.get(gateway).ids == ("lips",)
    gateway.run_query("MATCH (m:ModelVersion) SET m.active = false", {})
    _topics(gateway, "v-new", {"space": "space opera films"})
    assert ACTIVE.get(gateway).ids == ("space",)


@pytest.fixture(scope="module")
def api(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A gunicorn API on its own graph."""
    graph_name = f"text_{uuid.uuid4().hex[:8]}"
    gateway = open_gateway(settings, graph_name=graph_name if settings.embedded else None)
    migrate(gateway)
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": graph_name, "KGREC_API_KEYS": KEY}
    process = ApiProcess(env, log=tmp_path_factory.mktemp("text-api") / "gunicorn.log").start()
    yield process
    process.stop()
    gateway.close()


def test_the_api_refuses_a_tag_on_an_unknown_item_with_422_and_takes_a_search(api: Any) -> None:
    url = f"{api.url}/v1/events"
    headers = {"Authorization": f"Bearer {KEY}"}
    now = T0 + 1
    tag = [{"event_id": "t1", "user_id": "u", "item_id": "ghost", "type": "tag", "ts": now, "tag": "x"}]
    refused = requests.post(url, json=tag, headers=headers, timeout=30)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [
        {"index": 0, "field": "item_id", "reason": "no item with id 'ghost' to tag"}
    ]
    search = [{"event_id": "s1", "user_id": "u", "type": "search", "ts": now, "query": "lip balm"}]
    answer = requests.post(url, json=search, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["applied"], answer.json()["duplicates"]) == (1, 0)
    empty = [{"event_id": "s2", "user_id": "u", "type": "search", "ts": now, "query": ""}]
    bad = requests.post(url, json=empty, headers=headers, timeout=30)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query"


def test_deleting_a_user_over_http_removes_their_topic_interests(api: Any, settings: Settings) -> None:
    graph_name = api.env["KGREC_GRAPH"]
    gateway = open_gateway(settings, graph_name=graph_name if settings.embedded else None)
    version = f"v-{uuid.uuid4().hex[:6]}"
    lips, space = f"lips-{version}", f"space-{version}"
    try:
        _topics(gateway, version, {lips: "vegan lip balm", space: "space opera films"})
        query = "organic lip balm for dry lips"
        searches = [ev(f"e-{user}-{version}", "search", query=query, user=user) for user in ("erin", "frank")]
        ingest(gateway, valid(*searches), settings, now_ms=T0)
        assert set(_topic_interest(gateway, "erin")) == {lips} == set(_topic_interest(gateway, "frank"))
        erased = requests.delete(
            f"{api.url}/v1/users/erin", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        )
        assert erased.status_code == 200, erased.text
        assert erased.json()["removed"]["user"] == 1 and erased.json()["removed"]["interests"] == 1
        left = gateway.run_query(
            "MATCH (u:User)-[x:INTERESTED_IN]->(t:Topic) RETURN u.id AS user, t.id AS topic", {}
        )
        # erin's interest is gone, frank's is kept, and so is the topic
        assert [(r["user"], r["topic"]) for r in left] == [("frank", lips)]
    finally:
        gateway.run_query("MATCH (m:ModelVersion {id: $v}) SET m.active = false", {"v": version})
        gateway.close()


def test_events_import_maps_language_columns_and_movielens_tags(
    gateway: GraphGateway, settings: Settings, shared_data: Path, tmp_path: Path
) -> None:
    language = tmp_path / "language.csv"
    # the CSV layout's times are the API's: epoch milliseconds or ISO-8601
    language.write_text(
        "user_id,item_id,type,ts,text,tag,query\n"
        f"u1,m1,view,{T0},,,\n"
        f"u1,m1,review,{T0},Great heist film,,\n"
        f"u1,m1,tag,{T0},,Heist,\n"
        f"u2,,search,{T0},,,heist movies\n"
        f"u2,,search,{T0},,,\n"
    )
    summary = import_events(gateway, language, "csv", settings)
    assert summary.applied == 4
    assert [(r.line, r.field) for r in summary.rejected] == [(6, "query")]
    tagged = gateway.run_query(
        "MATCH (:Item {id: 'm1'})-[r:TAGGED]->(t:Tag) RETURN t.id AS t, r.count AS n", {}
    )
    assert tagged == [{"t": "heist", "n": 1}]
    # MovieLens tags.csv, real rows: tags on movies the graph has go in, the others are rejects
    rows = (shared_data / "movielens-ml-latest-small" / "tags.csv").read_text().splitlines()[:21]
    tags = tmp_path / "tags.csv"
    tags.write_text("\n".join(rows) + "\n")
    movies = sorted({r.split(",")[1] for r in rows[1:]})
    known = movies[: len(movies) // 2]
    ingest(gateway, valid(*[ev(f"v{m}", "view", item_id=m) for m in known]), settings, now_ms=T0)
    imported = import_events(gateway, tags, "movielens-tags", settings)
    on_known = sum(1 for r in rows[1:] if r.split(",")[1] in known)
    assert imported.applied == on_known and len(imported.rejected) == 20 - on_known
    assert {r.field for r in imported.rejected} == {"item_id"}
    again = import_events(gateway, tags, "movielens-tags", settings)
    assert again.applied == 0 and again.duplicates == on_known  # deterministic ids: nothing changes


def test_the_api_workers_load_the_text_model_at_start(api: Any) -> None:
    """Each gunicorn worker loads MiniLM in post_worker_init, not on its first text event."""
    workers = 2  # tests.processes.ApiProcess; the second may still be loading when the first answers
    deadline = time.monotonic() + 120
    while (log := Path(api.log).read_text()).count("kgrec: text model loaded in") < workers:
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.5)


def test_threads_asking_for_the_text_model_at_once_share_one_load() -> None:
    """The first text events of several request threads load one model, not one each."""
    code = (
        "import threading\n"
        "from kgrec.text_model import text_model\n"
        "start, models = threading.Barrier(3), []\n"
        "def ask():\n"
        "    start.wait()\n"
        "    models.append(text_model())\n"
        "threads = [threading.Thread(target=ask) for _ in range(3)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(len({id(m) for m in models}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"
