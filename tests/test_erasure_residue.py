"""What an erasure used to leave behind: the servers' append-only files, the impression journals of
every host, and the Celery records of incremental updates (README, "Operations: faults, privacy
and security"). Real servers, a real gunicorn, the bytes of the files on disk.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import quote

import requests

from kgrec import job_queue
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.impression_journal import ORPHAN_SCAN_S
from kgrec.impressions import JOURNAL_DIR, ImpressionStore
from tests.conftest import SMALL_API_KEY, embedded_only
from tests.planted import event
from tests.processes import ApiProcess

pytestmark = embedded_only
AUTH = {"Authorization": f"Bearer {SMALL_API_KEY}"}


def holding(folders: list[Path], needle: bytes) -> list[Path]:
    """The files under ``folders`` whose bytes contain ``needle``."""
    return [
        path
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and needle in path.read_bytes()
    ]


def eventually_none(folders: list[Path], needle: bytes, within_s: float = 2.0) -> list[Path]:
    """The files still holding ``needle`` once ``within_s`` passed (the server deletes the files a
    rewrite replaced from a background thread, a moment after the rewrite is done)."""
    deadline = time.monotonic() + within_s
    while (found := holding(folders, needle)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_erasure_over_http_leaves_the_user_in_no_aof_and_no_journal_of_the_host(
    small_api: ApiProcess, settings: Settings
) -> None:
    user = f"aof-erased-{uuid.uuid4().hex[:8]}"
    needle = user.encode()
    shown = requests.get(
        f"{small_api.url}/v1/users/{quote(user)}/recommendations", params={"k": 3}, timeout=30
    )
    answer = shown.json()
    click = event(f"aof-click-{uuid.uuid4().hex}", user, answer["items"][0]["item_id"], "click")
    posted = requests.post(f"{small_api.url}/v1/events", json=[click], headers=AUTH, timeout=30)
    assert posted.status_code == 200, posted.text
    logs = [settings.data_dir / "falkordb" / "data", settings.data_dir / "falkordb" / "impressions" / "data"]
    journals = [settings.data_dir / JOURNAL_DIR]
    assert holding(logs, needle) and holding(journals, needle)  # what an erasure has to take out

    erased = requests.delete(f"{small_api.url}/v1/users/{quote(user)}", headers=AUTH, timeout=60)
    assert erased.status_code == 200, erased.text
    assert eventually_none(logs, needle) == []
    assert holding(journals, needle) == []
    body = erased.json()
    assert body["logs"] == {"graph": "rewritten", "impressions": "rewritten"}
    assert body["removed"]["journal_lines"] >= 1

    # The API keeps recording and shipping after the blanks: a later page is found by its id.
    other = requests.get(
        f"{small_api.url}/v1/users/someone-else/recommendations", params={"k": 2}, timeout=30
    )
    found = requests.get(f"{small_api.url}/v1/impressions/{other.json()['recommendation_id']}", timeout=30)
    assert found.status_code == 200, found.text


def test_an_erasure_on_one_host_reaches_the_journals_of_another(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path: Path
) -> None:
    """Two hosts (two data directories) sharing one impression store: the erasure is made on the
    first; the second's shipper blanks its lines, and a line of the user it ships late is dropped."""
    assert graph_server is not None
    info = graph_server.running()
    assert info is not None
    graph = f"hosts_{uuid.uuid4().hex[:8]}"
    shared = settings.with_overrides(graph_name=graph, redis_url=info.redis_url(0))
    here = ImpressionStore(shared.with_overrides(data_dir=tmp_path / "host-a"))
    there = ImpressionStore(shared.with_overrides(data_dir=tmp_path / "host-b"))
    user, other = f"far-{uuid.uuid4().hex[:8]}", f"kept-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)

    def show(store: ImpressionStore, who: str, at: int) -> str:
        return store.record(
            surface="recommendations",
            user_id=who,
            items=[("i1", 1.0)],
            model_version="v",
            filters={},
            now_ms=at,
        )

    show(there, user, now - 1_000)
    kept = show(there, other, now - 1_000)
    there.settle()
    folder = tmp_path / "host-b" / JOURNAL_DIR
    assert holding([folder], user.encode())
    offsets = {p: p.read_bytes() for p in folder.rglob("*.shipped")}

    erased = here.erase_user(user, now)
    assert erased.impressions == 1 and erased.journal_lines == 0  # host a never showed them anything

    # host b's shipper looks for erasures every ORPHAN_SCAN_S
    deadline = time.monotonic() + ORPHAN_SCAN_S + 5
    while holding([folder], user.encode()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert holding([folder], user.encode()) == []
    assert holding([folder], other.encode())  # the other user's line is intact
    assert {p: p.read_bytes() for p in folder.rglob("*.shipped")} == offsets
    assert there.by_ids([kept]).keys() == {kept}

    # a line of the user recorded before the erasure, shipped after it, is dropped; one recorded
    # after it is kept (there is no tombstone)
    late = show(there, user, now - 10)
    after = show(there, user, now + 10)
    there.settle()
    assert set(there.by_ids([late, after])) == {after}
    here.close()
    there.close()


def test_incremental_plans_live_in_a_key_an_erasure_withdraws(
    settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    client = job_queue.job_client(settings)
    update = uuid.uuid4().hex
    key = job_queue.store_plan(client, update, {"users": ["plan-a", "plan-b"], "items": []})
    try:
        assert job_queue.load_plan(client, key)["users"] == ["plan-a", "plan-b"]
        assert job_queue.withdraw_plans(client, "plan-c") == 0
        assert job_queue.withdraw_plans(client, "plan-b") == 1
        try:
            job_queue.load_plan(client, key)
        except job_queue.PlanWithdrawn:
            pass
        else:
            raise AssertionError("a withdrawn plan was still read")
        assert key.encode() not in client.backend.client.smembers(job_queue.PLANS)
    finally:
        job_queue.drop_plan(client, key)
