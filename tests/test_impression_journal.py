"""The impression journal: recording is a local append, shipped to the stream; what a dead process
left is shipped by the next one, once.

Real embedded graph and impressions servers. A process is killed with -9 while the impressions
server is stopped (SIGSTOP), so its impressions are in its journal only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kgrec import impression_ids, impression_journal
from kgrec.attribution import attribute
from kgrec.config import Settings
from kgrec.events.validation import validate_batch
from kgrec.impression_journal import JOURNAL_BYTES, SHIPPED, SUFFIX
from kgrec.impressions import ImpressionStore
from tests.conftest import embedded_only

pytestmark = embedded_only

RECORD_AND_WAIT = """
import json, sys, time
from pathlib import Path
from kgrec.config import Settings
from kgrec.impressions import ImpressionStore
store = ImpressionStore(Settings(data_dir=Path(sys.argv[1])))
ids = [
    store.record(surface="recommendations", user_id="u1", items=[(f"i{n}", 1.0), ("shared", 0.5)],
                 model_version="m1", filters={}, now_ms=int(time.time() * 1000) - 1000 * (30 - n))
    for n in range(int(sys.argv[2]))
]
print(json.dumps(ids), flush=True)
time.sleep(600)
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def record_small(store: ImpressionStore, n: int) -> list[str]:
    """Record ``n`` impressions of five items for one user (218 bytes a journal line)."""
    items = [(f"item-{k}", 0.5) for k in range(5)]
    return [
        store.record(
            surface="recommendations",
            user_id="u1",
            items=items,
            model_version="m1",
            filters={},
            now_ms=now_ms(),
        )
        for _ in range(n)
    ]


def written(path: Path) -> bytes:
    """What a journal file holds before its first zero byte."""
    return path.read_bytes().partition(b"\0")[0]


def journals(store: ImpressionStore) -> list[Path]:
    """The journal files of the store's graph on this host."""
    return sorted(store.journal.directory.glob(f"*{SUFFIX}"))


def killed_with_unshipped(settings: Settings, server: Any, n: int) -> list[str]:
    """Ids a process recorded and answered while the impressions server was stopped, then kill -9."""
    impressions_pid = server.impressions.running().pid
    os.kill(impressions_pid, signal.SIGSTOP)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", RECORD_AND_WAIT, str(settings.data_dir), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        ids = json.loads(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        os.kill(impressions_pid, signal.SIGCONT)
    return ids


def test_recording_is_an_append_and_readers_see_it_at_once(settings: Settings, graph_server: Any) -> None:
    store = ImpressionStore(settings.with_overrides(graph_name=f"jnl_{uuid.uuid4().hex[:8]}"))
    ids = [
        store.record(
            surface="recommendations",
            user_id="u1",
            items=[(f"i{n}", 0.5)],
            model_version="m1",
            filters={"brand": "b"},
            now_ms=now_ms(),
        )
        for n in range(50)
    ]
    assert len(set(ids)) == 50 and {uuid.UUID(rid).version for rid in ids} == {7}
    (path,) = journals(store)
    assert path.stat().st_size == JOURNAL_BYTES  # allocated up front, written up to the first zero byte
    assert len(written(path).splitlines()) == 50  # one line per impression, before any read
    found = store.get(ids[-1])  # settles: everything recorded so far is shipped
    assert found is not None and found.filters == {"brand": "b"} and found.items[0].item_id == "i49"
    assert store.length() == 50
    assert int(path.with_suffix(SHIPPED).read_bytes()) == len(written(path))
    assert store.get(ids[0].upper()) is not None  # ids are not case-sensitive
    store.close()


def test_a_killed_process_journal_is_shipped_by_the_next_once(
    own_server: tuple[Any, Settings], tmp_path: Path
) -> None:
    server, settings = own_server
    store = ImpressionStore(settings)
    ids = killed_with_unshipped(settings, server, 30)
    (orphan,) = journals(store)
    assert int(orphan.with_suffix(SHIPPED).read_bytes()) < len(written(orphan))  # not all shipped
    # As if the process had died after a batch was stored but before its offset was saved: the
    # whole journal again, under another name, with no offset.
    copy = orphan.with_name(f"copy-{orphan.name}")
    shutil.copy(orphan, copy)
    with copy.open("r+b") as damaged:  # and a damaged line after them, which must not hold up the rest
        damaged.seek(len(written(orphan)))
        damaged.write(b'{"r": "broken\n')

    # The acknowledged clicks' impressions are found by id and by window, and only once each.
    raw = [
        {"event_id": "e1", "user_id": "u1", "item_id": "i3", "type": "click", "ts": now_ms()}
        | {"recommendation_id": ids[3]},
        {"event_id": "e2", "user_id": "u1", "item_id": "shared", "type": "click", "ts": now_ms()},
    ]
    events, errors = validate_batch(raw, max_skew_s=300)
    assert errors == []
    assert attribute(store, events, max_skew_ms=300_000, now_ms=now_ms()).attributed == 2  # settles first
    assert journals(store) == []  # both shipped and removed
    assert store.length() == 30
    assert all(store.get(rid) is not None for rid in ids)
    by_id = store.get(ids[3])
    newest = store.get(ids[-1])
    assert by_id is not None and newest is not None
    assert [e["by"] for e in store.attributed(by_id.entry_id)] == ["id"]
    # By window: the impression recorded last.
    assert [e["event_id"] for e in store.attributed(newest.entry_id)] == ["e2"]
    store.close()


def test_ids_of_older_versions_are_still_found(settings: Settings, graph_server: Any) -> None:
    store = ImpressionStore(settings.with_overrides(graph_name=f"jnl_{uuid.uuid4().hex[:8]}"))
    tag = 0xABC_DEAD_BEEF
    fields = {"s": "similar", "u": "", "q": "x", "m": "m0", "e": "", "x": "", "o": "0", "f": "{}"}
    entry = store.run(
        lambda client: client.xadd(store.stream, {**fields, "i": '[["a", 1.0]]', "t": format(tag, "x")})
    ).decode()
    ms, _, seq = entry.partition("-")
    old_id = impression_ids.encode_legacy(int(ms), int(seq), tag)
    found = store.get(old_id)
    assert found is not None and found.recommendation_id == old_id and found.created_at == int(ms)
    assert store.get(impression_ids.encode_legacy(int(ms), int(seq), tag ^ 1)) is None  # a forged tag
    store.close()


def test_a_full_journal_is_sealed_and_removed_once_shipped(
    settings: Settings, graph_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(impression_journal, "JOURNAL_BYTES", 4096)  # 18 of these impressions a file
    monkeypatch.setattr(impression_journal, "SHIP_INTERVAL_S", 60.0)  # only settle() ships here
    store = ImpressionStore(settings.with_overrides(graph_name=f"jnl_{uuid.uuid4().hex[:8]}"))
    ids = record_small(store, 60)
    assert len(journals(store)) == 4  # 60 lines of 218 bytes: three full files and the one being written
    store.settle()
    assert len(journals(store)) == 1  # the sealed ones shipped and removed; the one appends go to stays
    assert store.length() == 60 and set(store.by_ids(ids)) == set(ids)
    store.close()


def test_the_shipper_makes_the_next_journal_before_the_current_one_is_full(
    settings: Settings, graph_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(impression_journal, "JOURNAL_BYTES", 4096)
    monkeypatch.setattr(impression_journal, "SHIP_INTERVAL_S", 0.01)
    store = ImpressionStore(settings.with_overrides(graph_name=f"jnl_{uuid.uuid4().hex[:8]}"))
    ids = record_small(store, 12)  # past half of the first file
    deadline = time.monotonic() + 10
    while len(journals(store)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len([path for path in journals(store) if written(path)]) == 1
    (spare,) = [path for path in journals(store) if not written(path)]  # made by the shipper
    ids += record_small(store, 10)  # the first file fills: appends go on in the spare
    store.settle()
    assert store.length() == 22 and set(store.by_ids(ids)) == set(ids)
    assert journals(store) == [spare] and written(spare)  # the full one shipped and removed
    store.close()
