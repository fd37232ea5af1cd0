"""Model artifacts on disk, and the active model of a process, refreshed when the version changes.

An artifact (``<data_dir>/models/<version>.npz``) holds what the Recommender
needs beyond the graph: item embeddings (and item context embeddings, when the
model has them), the item–item blend matrices (one per
model signal of :mod:`kgrec.signals`, under its name), weights, decay and
popularity. It is written before its version can be activated, and never
changes afterwards, so a process loads each version once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from graph_schema.statements.models import (
    ACTIVE_VERSION,
    FOLDED_ITEMS,
    POPULARITY_ADJUSTMENTS,
    VERSION_ADJUSTED_AT,
)
from kgrec.artifact_io import write_npz_atomically
from kgrec.gateway import GraphGateway
from kgrec.item_facts import ItemFacts, links_in_id_order
from kgrec.recommender import ModelArtifacts, Recommender
from kgrec.signals import check_weights, signal
from kgrec.single_flight import SingleFlight

MODELS_DIR = "models"
# 2: every signal has a weight. Version 1 artifacts (no "format") left some out, which scored as 0.0.
ARTIFACT_FORMAT = 2


def models_dir(data_dir: Path) -> Path:
    """Where artifacts live."""
    return Path(data_dir) / MODELS_DIR


def artifact_name(version: str) -> str:
    """The file name of a version's artifact."""
    return f"{version}.npz"


def save_artifacts(artifacts: ModelArtifacts, folder: Path, file_name: str | None = None) -> str:
    """Write ``<version>.npz`` (or ``file_name``: a write-back's staged copy) atomically; returns
    its file name.

    Raises :class:`kgrec.signals.SignalError` for an unregistered signal or one without a weight.
    """
    check_weights(artifacts.components, artifacts.weights)
    arrays: dict[str, np.ndarray] = {
        "item_ids": np.array(artifacts.item_ids),
        "item_embeddings": artifacts.item_embeddings,
        "popularity": artifacts.popularity,
        "meta": np.array(
            json.dumps(
                {
                    "format": ARTIFACT_FORMAT,
                    "version": artifacts.version,
                    "weights": artifacts.weights,
                    "recency_decay": artifacts.recency_decay,
                    "components": list(artifacts.components),
                    "parameters": artifacts.parameters,
                },
                default=str,
            )
        ),
    }
    if artifacts.item_context_embeddings is not None:
        arrays["item_context_embeddings"] = artifacts.item_context_embeddings
    if artifacts.facts is not None:
        arrays.update(artifacts.facts.arrays())
    for name, matrix in artifacts.components.items():
        arrays[f"{name}.data"] = matrix.data
        arrays[f"{name}.indices"] = matrix.indices
        arrays[f"{name}.indptr"] = matrix.indptr
    file_name = file_name or artifact_name(artifacts.version)
    write_npz_atomically(folder / file_name, arrays)
    return file_name


def load_artifacts(path: Path) -> ModelArtifacts:
    """Read an artifact written by :func:`save_artifacts`."""
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        item_ids = stored["item_ids"].tolist()
        n = len(item_ids)
        for name in meta["components"]:
            signal(name)  # an unregistered signal is an error, not a matrix nobody reads
        components = {
            name: sp.csr_matrix(
                (stored[f"{name}.data"], stored[f"{name}.indices"], stored[f"{name}.indptr"]), shape=(n, n)
            )
            for name in meta["components"]
        }
        weights = dict(meta["weights"])
        if meta.get("format", 1) < 2:
            weights = {**{name: 0.0 for name in components}, **weights}
        return ModelArtifacts(
            version=meta["version"],
            item_ids=item_ids,
            item_embeddings=stored["item_embeddings"],
            components=components,
            weights=weights,
            recency_decay=meta["recency_decay"],
            popularity=stored["popularity"],
            parameters=meta["parameters"],
            facts=ItemFacts.from_arrays(stored, n),
            item_context_embeddings=stored["item_context_embeddings"]
            if "item_context_embeddings" in stored.files
            else None,
        )


@dataclass(frozen=True)
class _Built:
    """What :class:`ActiveModel`'s model was built from: the version as loaded, that with its
    folded items, and the version's stamps they were read at."""

    base: Recommender
    folded: Recommender
    folded_at: object
    adjusted_at: object


class ActiveModel:
    """The active model version of this process; reloads only when the active version changes.

    Items folded in after training (``folded_at`` on the version) are added to
    the loaded version with one read whenever that stamp moves.
    """

    def __init__(self, gateway: GraphGateway, data_dir: Path, check_every_s: float = 1.0) -> None:
        self._gateway = gateway
        self._folder = models_dir(data_dir)
        self._view: SingleFlight[Recommender] = SingleFlight(check_every_s)
        # What the view's model was built from; written by the one thread that loads.
        self._built: _Built | None = None

    def get(self) -> Recommender | None:
        """The Recommender of the active version (None before the first training).

        While another thread checks the graph, the model held is served; a stalled graph server
        so holds each request one bound (:mod:`kgrec.single_flight`).
        """
        return self._view.get(self._load)

    def _load(self, held: Recommender | None) -> Recommender | None:
        rows = self._gateway.read(ACTIVE_VERSION)
        if not rows:
            self._built = None
            return None
        active, built = rows[0], self._built
        folded_at, adjusted_at = active["folded_at"], active["adjusted_at"]
        if built is None or built.base.artifacts.version != active["id"]:
            base = served_base(self._folder / active["artifact"])
            folded = self._with_folded_items(base)
        elif held is not None and (folded_at, adjusted_at) == (built.folded_at, built.adjusted_at):
            return held
        else:
            # an erasure moves only adjusted_at: then only the popularity is laid over again
            base = built.base
            folded = built.folded if folded_at == built.folded_at else self._with_folded_items(base)
        # Served only once complete: the folded items and the erasures' popularity both applied.
        model = self._with_adjusted_popularity(folded)
        self._built = _Built(base, folded, folded_at, adjusted_at)
        return model

    def stale(self) -> None:
        """Ask the graph on the next call (this process just changed the active version)."""
        self._view.stale()

    def held_version(self) -> str | None:
        """The version loaded so far, without asking the graph (None before the first load)."""
        held = self._view.held()
        return None if held is None else held.artifacts.version

    def _with_adjusted_popularity(self, model: Recommender) -> Recommender:
        return with_adjusted_popularity(self._gateway, model)

    def _with_folded_items(self, base: Recommender) -> Recommender:
        rows = [
            links_in_id_order(r)
            for r in self._gateway.read(FOLDED_ITEMS, {"version": base.artifacts.version})
            if r["id"] not in base.item_index
        ]
        if not rows:
            return base
        facts = base.facts.extended(
            [r["brands"][0] if r["brands"] else None for r in rows],
            [r["categories"] for r in rows],
            [r["price"] for r in rows],
        )
        vectors = np.array([r["vector"] for r in rows], dtype=np.float32)
        return base.with_items([r["id"] for r in rows], vectors, facts)


def served_base(path: Path) -> Recommender:
    """The version at ``path`` as serving holds it, the copies its fold-ins and erasures make
    sharing what cannot change: the co-purchase links are summed here once, not again on the
    first explained request after each copy (a copy keeps those of the model it copies)."""
    model = Recommender(load_artifacts(path))
    _ = model.co_purchase_links
    return model


def with_adjusted_popularity(gateway: GraphGateway, model: Recommender) -> Recommender:
    """``model`` without the erased users' share of its popularity (one read; the same object when
    no erasure touched its version)."""
    rows = gateway.read(POPULARITY_ADJUSTMENTS, {"version": model.artifacts.version})
    known = [(model.item_index[r["id"]], r["delta"]) for r in rows if r["id"] in model.item_index]
    if not known:
        return model
    popularity = model.artifacts.popularity.copy()
    for index, delta in known:
        popularity[index] += delta
    return model.with_popularity(popularity)


class ReadyVersion:
    """A ready version served besides the active one (an experiment's variant): its artifact, loaded
    once, without the share of the users erased since its training.

    Its ``adjusted_at`` is re-checked at most every ``check_every_s``, so an erasure reaches it in
    every process as it reaches the active version. Items folded in are not added (the active
    version gets them).
    """

    def __init__(self, path: Path, check_every_s: float = 1.0) -> None:
        self._base = served_base(path)
        self._view: SingleFlight[Recommender] = SingleFlight(check_every_s)
        self._stamp: object = None  # the adjusted_at the view's model was built at

    def get(self, gateway: GraphGateway) -> Recommender:
        """The version with the erasures applied, as of at most ``check_every_s`` ago (or the one
        held, while another thread checks)."""
        model = self._view.get(lambda held: self._load(gateway, held))
        assert model is not None  # the load always answers a model
        return model

    def _load(self, gateway: GraphGateway, held: Recommender | None) -> Recommender:
        rows = gateway.read(VERSION_ADJUSTED_AT, {"version": self._base.artifacts.version})
        stamp = rows[0]["adjusted_at"] if rows else None
        if held is not None and stamp == self._stamp:
            return held
        model = with_adjusted_popularity(gateway, self._base)
        self._stamp = stamp
        return model
