"""The text-embedding cache shared by fold-in tasks and training: read once per process, added to
under a lock by several processes at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from workers.training.text import FILE_NAME, TextEmbeddingCache, file_reads, text_key

ROUNDS = 12


def _writer(folder: str, name: str, start: object) -> None:
    """Add ROUNDS texts of its own to the cache, one embed() call each, as a pool child would."""
    cache = TextEmbeddingCache(Path(folder))
    cache.embed([f"warm-up {name}"])  # the model loaded before both start together
    start.wait()  # type: ignore[attr-defined]
    for k in range(ROUNDS):
        cache.embed([f"{name} item {k} | Acme | Makeup > Lips"])


def stored_keys(folder: Path) -> set[str]:
    with np.load(folder / FILE_NAME) as stored:
        return set(stored["keys"].tolist())


def test_concurrent_writers_each_keep_their_entries(tmp_path: Path) -> None:
    """Each writer read the whole file, added its entries and saved it: the last save won, and the
    entries another process had saved in between were lost."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    writers = [
        context.Process(target=_writer, args=(str(tmp_path), name, start)) for name in ("left", "right")
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=300)
    assert [w.exitcode for w in writers] == [0, 0]
    wanted = {
        text_key(f"{name} item {k} | Acme | Makeup > Lips")
        for name in ("left", "right")
        for k in range(ROUNDS)
    }
    assert wanted <= stored_keys(tmp_path)


def test_cached_texts_are_served_without_reading_the_file_again(tmp_path: Path) -> None:
    """Every embed() read the whole file (about 100 MB at 64,000 items), twice per fold-in task."""
    texts = [
        "Red matte lipstick | Acme | Makeup > Lips",
        "Anti-dandruff shampoo | Head | Hair Care > Shampoos",
    ]
    cache = TextEmbeddingCache(tmp_path)
    first = cache.embed(texts)
    stamp = (tmp_path / FILE_NAME).stat().st_mtime_ns
    reads = file_reads(tmp_path)
    again = TextEmbeddingCache(tmp_path).embed([texts[1], "", texts[0]])  # a new instance, as each task makes
    assert np.array_equal(again[[2, 0]], first) and not np.any(again[1])
    assert file_reads(tmp_path) == reads and (tmp_path / FILE_NAME).stat().st_mtime_ns == stamp

    # another process adds an entry: the file is read again, and its entry used without encoding
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(1)
    other = context.Process(target=_writer, args=(str(tmp_path), "other", start))
    other.start()
    other.join(timeout=300)
    assert other.exitcode == 0
    theirs = "other item 0 | Acme | Makeup > Lips"
    cache.embed([theirs, texts[0]])
    assert cache.encoded_last_call == 0 and file_reads(tmp_path) == reads + 1
    assert text_key(theirs) in stored_keys(tmp_path) and set(map(text_key, texts)) <= stored_keys(tmp_path)
