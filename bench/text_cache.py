"""Benchmark: what a fold-in task's text-embedding cache costs at 64,000 items.

Why the cache (workers/training/text.py) keeps its entries in memory per process: each ``embed()``
read the whole cache file (64,000 texts × 384 floats, about 100 MB) and, on a miss, wrote all of it
back, and a fold-in task called it twice. This writes a cache file of ``--items`` entries (random
unit vectors under the keys of made-up texts: the file's size is what is measured), then, in one
process, times ``--rounds`` of each: reading the whole file (what every call did before
2026-12-07), an ``embed()`` of cached texts, and an ``embed()`` with one new text (encoded, merged
under the lock into the file and written). It counts the file reads the cached calls made.

    .venv/bin/python -m bench.text_cache [--items 64000] [--rounds 5]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import percentile
from kgrec.text_model import DIMENSION, encode
from workers.training.text import FILE_NAME, TextEmbeddingCache, file_reads, text_key


def run(args: argparse.Namespace) -> dict[str, object]:
    """Time whole-file reads, cached calls and one-miss calls on a cache of ``args.items`` entries."""
    rng = np.random.default_rng(0)
    texts = [f"made-up item {k} | Brand {k % 500} | Category {k % 40}" for k in range(args.items)]
    vectors = rng.normal(size=(args.items, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    encode(["warm-up"])  # the model's load is not what is measured
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        path = folder / FILE_NAME
        np.savez(path, keys=np.array([text_key(t) for t in texts]), vectors=vectors)
        size_mb = path.stat().st_size / 1e6

        def seconds(call: object) -> list[float]:
            taken = []
            for k in range(args.rounds):
                started = time.perf_counter()
                call(k)  # type: ignore[operator]
                taken.append(time.perf_counter() - started)
            return taken

        def whole_file(_: int) -> None:
            with np.load(path) as stored:
                dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))

        read = seconds(whole_file)
        TextEmbeddingCache(folder).embed(texts[:1])  # this process's first read
        reads = file_reads(folder)
        hit = seconds(lambda k: TextEmbeddingCache(folder).embed(texts[k * 10 : k * 10 + 10]))
        hit_reads = file_reads(folder) - reads
        miss = seconds(lambda k: TextEmbeddingCache(folder).embed([*texts[:9], f"a new item {k} | Acme"]))
    read_ms, hit_ms, miss_ms = (round(percentile([s * 1000 for s in t], 50), 2) for t in (read, hit, miss))
    return {
        "bench": "text_cache",
        "items": args.items,
        "file_mb": round(size_mb, 1),
        "rounds": args.rounds,
        "whole_file_read_ms_p50": read_ms,
        "cached_embed_ms_p50": hit_ms,
        "cached_embed_file_reads": hit_reads,
        "one_miss_embed_ms_p50": miss_ms,
        "read_over_cached": round(read_ms / max(hit_ms, 1e-3), 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64000)
    parser.add_argument("--rounds", type=int, default=5)
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
