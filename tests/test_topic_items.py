"""The per-process cache of each version's topic items (kgrec/topic_items.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kgrec.topic_items import TopicItems, VersionTopicItems


def _items(version: str) -> TopicItems:
    return TopicItems(
        version,
        ["a", "b"],
        np.eye(2, 384, dtype=np.float32),
        ["t0"],
        np.array([[0], [-1]], dtype=np.int64),
        np.array([[0.5], [0.0]], dtype=np.float32),
    )


def test_a_file_is_read_once_and_a_miss_is_remembered(tmp_path: Path) -> None:
    cache = VersionTopicItems(tmp_path, size=2)
    _items("v1").save(tmp_path)
    first = cache.get("v1")
    assert first is not None and first.item_ids == ["a", "b"]
    assert first.members(["t0"]).tolist() == [0]
    assert cache.get("v1") is first  # from memory, not the disk

    assert cache.get("v2") is None
    # training never writes a file for a version after it could serve: the miss stays a miss
    _items("v2").save(tmp_path)
    assert cache.get("v2") is None

    # bounded: a version pushed out is read again from disk
    assert cache.get("v3") is None
    reread = cache.get("v1")
    assert reread is not None and reread is not first


def test_an_incremental_version_reads_its_roots_file(tmp_path: Path) -> None:
    _items("root").save(tmp_path)
    cache = VersionTopicItems(tmp_path)
    found = cache.for_model("inc-1", {"incremental": {"root": "root"}})
    assert found is not None and found.version == "root"
    assert cache.for_model("other", {}) is None
