"""Embeddings for items created after training, from their text, brand and category neighbours.

A new item has no interactions, so the graph model never saw it. Its
embedding is the mean of up to three unit vectors:

- **text**: the model's embeddings of the 10 trained items whose all-MiniLM-L6-v2
  text embeddings are closest to the new item's, weighted by that similarity;
- **brand**: the model's embedding of the item's brand;
- **categories**: the mean of the model's embeddings of its categories;

then scaled to the median length of the trained items' embeddings (the graph
model's embeddings are not unit vectors; their length carries how often an item
is the next one). An item with none of the three (an item created by an event
with no title, brand or category) is folded in from its interactions instead:
the mean served profile of the users who interacted with it, over the items the
version knows (:func:`interaction_vectors`), scaled alike; the served score of a
user for it is then their profile against those users' profiles. Brand and
category vectors shorter than the item embeddings (the model's item rows carry
an extra bias column) are padded with zeros. The basis (trained items'
text vectors and embeddings, brand and category embeddings) is written next to
the model artifact at training time as ``<version>.foldin.npz``; serving
processes never load it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from graph_schema.statements.models import (
    ACTIVE_VERSION,
    ITEMS_WITHOUT_EMBEDDING,
    TRAINED_ITEMS,
    WRITE_FOLDED_ITEMS,
)
from graph_schema.statements.training import CATEGORY_NAMES
from kgrec.artifact_io import write_npz_atomically
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.model_store import load_artifacts, models_dir
from kgrec.model_versions import root_of
from workers.training.subgraph import item_text, read_item_facts
from workers.training.text import TextEmbeddingCache
from workers.training.topics import about_new_items, with_description

TEXT_NEIGHBOURS = 10
BASIS_SUFFIX = ".foldin.npz"
BASES_KEPT = 2  # fold-in bases a worker process keeps loaded (the active version's, and the last one's)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass
class FoldInBasis:
    """What folding in needs from one model version."""

    item_embeddings: np.ndarray  # (n_items, dim) the model's item embeddings, in the artifact's item order
    text_vectors: np.ndarray | None  # (n_items, 384) or None when the model used no text
    brand_ids: list[str]
    brand_vectors: np.ndarray  # unit rows
    category_ids: list[str]
    category_vectors: np.ndarray  # unit rows

    def save(self, path: Path) -> None:
        """Write atomically (before the version can be activated)."""
        arrays = {
            "item_embeddings": self.item_embeddings,
            "brand_ids": np.array(self.brand_ids, dtype=str),
            "brand_vectors": self.brand_vectors,
            "category_ids": np.array(self.category_ids, dtype=str),
            "category_vectors": self.category_vectors,
        }
        if self.text_vectors is not None:
            arrays["text_vectors"] = self.text_vectors.astype(np.float16)
        write_npz_atomically(path, arrays)

    @classmethod
    def load(cls, path: Path) -> FoldInBasis:
        """Read a basis written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as stored:
            return cls(
                item_embeddings=stored["item_embeddings"],
                text_vectors=stored["text_vectors"].astype(np.float32)
                if "text_vectors" in stored.files
                else None,
                brand_ids=stored["brand_ids"].tolist(),
                brand_vectors=stored["brand_vectors"],
                category_ids=stored["category_ids"].tolist(),
                category_vectors=stored["category_vectors"],
            )

    def embed(
        self,
        text_vectors: np.ndarray | None,
        brands: Sequence[Sequence[str]],
        categories: Sequence[Sequence[str]],
    ) -> np.ndarray:
        """(n, dim) unit embeddings for new items; a row with nothing to go on stays zero."""
        n = len(brands)
        width = self.item_embeddings.shape[1]
        brand_vectors = _padded(self.brand_vectors, width)
        category_vectors = _padded(self.category_vectors, width)
        total = np.zeros((n, width), dtype=np.float32)
        if text_vectors is not None and self.text_vectors is not None and self.text_vectors.size:
            similarity = text_vectors @ self.text_vectors.T  # (n, n_items)
            k = min(TEXT_NEIGHBOURS, similarity.shape[1])
            top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            weights = np.maximum(np.take_along_axis(similarity, top, axis=1), 0.0)
            has_text = (np.linalg.norm(text_vectors, axis=1) > 0) & (weights.sum(axis=1) > 0)
            mixed = np.einsum(
                "nk,nkd->nd",
                weights,
                unit_rows(self.item_embeddings[top].reshape(-1, width)).reshape((*top.shape, width)),
            )
            total[has_text] += unit_rows(mixed[has_text])
        brand_index = {b: k for k, b in enumerate(self.brand_ids)}
        category_index = {c: k for k, c in enumerate(self.category_ids)}
        for row in range(n):
            known_brands = [brand_index[b] for b in brands[row] if b in brand_index]
            if known_brands:
                total[row] += unit_rows(brand_vectors[known_brands].mean(axis=0, keepdims=True))[0]
            known_categories = [category_index[c] for c in categories[row] if c in category_index]
            if known_categories:
                mean = category_vectors[known_categories].mean(axis=0, keepdims=True)
                total[row] += unit_rows(mean)[0]
        return unit_rows(total) * self.typical_norm()

    @cached_property
    def _typical_norm(self) -> float:
        if self.item_embeddings.size == 0:
            return 1.0
        return float(np.median(np.linalg.norm(self.item_embeddings, axis=1)))

    def typical_norm(self) -> float:
        """The median length of the trained items' embeddings (1.0 for unit embeddings)."""
        return self._typical_norm


_bases: dict[Path, FoldInBasis] = {}  # this process's loaded bases, the latest used last
_bases_lock = threading.Lock()


def loaded_basis(path: Path) -> FoldInBasis:
    """The basis at ``path``, read once per worker process: a version's basis never changes, and
    reading it (the trained items' text vectors, 384 numbers each) took each fold-in task about
    0.1 GB at 64,000 items."""
    with _bases_lock:
        basis = _bases.pop(path, None)
    if basis is None:
        basis = FoldInBasis.load(path)
    with _bases_lock:
        _bases[path] = basis
        while len(_bases) > BASES_KEPT:
            _bases.pop(next(iter(_bases)))
    return basis


def _padded(vectors: np.ndarray, width: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] >= width:
        return vectors
    return np.pad(vectors, ((0, 0), (0, width - vectors.shape[1])))


def basis_path(models_folder: Path, artifact: str) -> Path:
    """Where the fold-in basis of an artifact lives."""
    return models_folder / artifact.replace(".npz", BASIS_SUFFIX)


def interaction_vectors(
    gateway: GraphGateway, settings: Settings, artifact: str, item_ids: Sequence[str]
) -> np.ndarray:
    """(n, dim) unit vectors of ``item_ids`` from their interactions: each the mean served profile
    (as an incremental update makes a user's vector) of the users who interacted with it, over the
    items the version ``artifact`` knows; zero for an item none of whose users has such a history."""
    # incremental imports this module (the fold-in basis): import it here, not at the top
    from workers.training.incremental import local_graph, pull_partition, user_vectors

    model = load_artifacts(models_dir(settings.data_dir) / artifact)
    rows = pull_partition(gateway, item_ids, [])
    graph, _last_ts = local_graph(model, rows, int(time.time() * 1000), settings.half_life_ms)
    users, vectors = user_vectors(model, graph, graph.user_ids)
    row_of = {user: k for k, user in enumerate(users)}
    wanted = set(item_ids)
    users_of: dict[str, list[int]] = {}
    for r in rows:
        if r["item_id"] in wanted and r["user_id"] in row_of:
            users_of.setdefault(r["item_id"], []).append(row_of[r["user_id"]])
    result = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    for k, item_id in enumerate(item_ids):
        if users_of.get(item_id):
            result[k] = vectors[users_of[item_id]].mean(axis=0)
    return unit_rows(result)


def sweep_page(gateway: GraphGateway, after: str, limit: int) -> list[str]:
    """The next ``limit`` listed items, in id order after ``after``, that the active version has no
    vector for: one page of the fold-in sweep. Items it cannot fold in (no facts, no buyer with a
    known history) stay behind ``after`` once passed, so they never hold back the rest."""
    return [row["id"] for row in gateway.read(ITEMS_WITHOUT_EMBEDDING, {"after": after, "limit": limit})]


def embed_new_items(gateway: GraphGateway, settings: Settings, item_ids: Sequence[str]) -> dict[str, object]:
    """Embed ``item_ids`` that the active version cannot score and write them under that version.

    ``skipped`` counts items with nothing to go on: no text, brand or category the version knows,
    and no user with a history of items it knows. Items the version was trained on are left as
    they are (neither folded nor skipped): the API asks against the model it holds, which may be
    the version before the active one.
    Idempotent (MERGE on the version's EMBEDDING relationship): a redelivered
    task writes the same vectors again.
    """
    active = gateway.read(ACTIVE_VERSION)
    if not active or not item_ids:
        return {"version": None, "folded": 0}
    version, artifact = active[0]["id"], active[0]["artifact"]
    path = basis_path(models_dir(settings.data_dir), artifact)
    if not path.exists():
        raise FileNotFoundError(f"model version {version} has no fold-in basis at {path}")
    basis = loaded_basis(path)
    trained = {row["id"] for row in gateway.read(TRAINED_ITEMS, {"version": version, "ids": list(item_ids)})}
    facts = read_item_facts(gateway, [i for i in item_ids if i not in trained])
    if not facts:
        return {"version": version, "folded": 0}
    names = {row["id"]: row["name"] for row in gateway.read(CATEGORY_NAMES)}
    brands = [row["brands"] for row in facts]
    categories = [row["categories"] for row in facts]
    text_vectors = None
    if basis.text_vectors is not None:
        texts = [item_text(row["title"], row["brands"], row["categories"], names) for row in facts]
        cache = TextEmbeddingCache(
            Path(settings.data_dir) / "text-embeddings", offline=settings.hf_hub_offline
        )
        # new items get their topics too, without a retrain, from their topic text (with the description);
        # one embed() for both, so that a task adds its new texts to the cache file in one write
        topic_texts = [with_description(t, row["description"]) for t, row in zip(texts, facts, strict=True)]
        embedded = cache.embed(texts if topic_texts == texts else [*texts, *topic_texts])
        text_vectors = embedded[: len(texts)]
        topic_vectors = embedded[-len(texts) :]
        folded = [row["item_id"] for row in facts]
        about_new_items(gateway, version, folded, topic_vectors, topics_of=root_of(active[0]) or version)
    vectors = basis.embed(text_vectors, brands, categories)
    bare = [k for k in range(len(facts)) if not np.any(vectors[k])]
    if bare:  # nothing in their facts to go on: their interactions
        found = interaction_vectors(gateway, settings, artifact, [facts[k]["item_id"] for k in bare])
        vectors[bare] = found * basis.typical_norm()
    rows = [
        {"id": row["item_id"], "vector": [round(float(x), 6) for x in vector]}
        for row, vector in zip(facts, vectors, strict=True)
        if np.any(vector)
    ]
    written = 0
    if rows:
        now = int(time.time() * 1000)
        done = gateway.write(WRITE_FOLDED_ITEMS, {"version": version, "rows": rows, "now": now})
        written = done.rows[0]["folded"] if done.rows else 0
    return {"version": version, "folded": written, "skipped": len(facts) - len(rows)}
