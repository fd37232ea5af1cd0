"""KG-Seq: relation-weighted graph propagation trained to predict each user's next item.

**Graph.** One node per user, item, brand, category and knowledge-graph entity.
Every edge type is a relation of its own, each direction separately:
``interacted`` (user → item and back), ``produced_by`` (item → brand),
``belongs_to`` (item → category), and every relation of the open knowledge graph
(``TrainingGraph.kg_triples``, else the item–item ``knowledge`` edges). The joint
adjacency is degree-normalised as in LightGCN and split by relation:

    h⁽ˡ⁺¹⁾ = Σ_r softplus(α_{l,r}) · A_r h⁽ˡ⁾,        E = mean(h⁽⁰⁾ … h⁽ᴸ⁾)

so each layer learns how much each relation carries (a diagonal R-GCN without
per-relation matrices, which keeps an epoch within LightGCN's cost). Layer-0
item rows are a free embedding plus the item's text embedding through a learnt
projection; that projection is how items created after training get an
embedding (:mod:`workers.training.item_fold_in`).

**Objective.** Serving scores items as ``(profile · E_ctx) · E_itemᵀ`` where the
profile weighs a user's items by relative weight × ``decay ** rank`` (rank 0 =
most recent, :class:`kgrec.recommender.Recommender`). Training optimises exactly
that score: for every interaction after a user's first, the context is the
recency-weighted mean of the user's earlier items' context embeddings (the last
:data:`CONTEXT_WINDOW` of them; the decay is learnt), and the target is the item
itself under a softmax over all items (over :data:`FULL_SOFTMAX_MAX_ITEMS` items, a
sampled softmax with the logQ correction: :func:`sampled_logits`). ``E_item`` is the
propagated embedding (``dim - 1`` wide) plus a bias column; ``E_ctx`` adds a free
per-item offset (zero at start), so a transition a → b need not imply b → a, and a
constant column that carries the bias. Every vector the model hands out is ``dim``
wide (other nodes: a zero last column).

**Schedule.** Adam; after every epoch, NDCG@10 of the model's own score on the
validation users; the best epoch's parameters are kept, training stops after
``patience`` epochs without improvement or at the epoch cap
(:class:`~workers.training.config.TrainConfig` ``epochs``).
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from kgrec.item_graphs import history_order
from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig, check_device
from workers.training.validation import pessimistic_ranks

LOG = logging.getLogger(__name__)

INTERACTED = "interacted"  # the user → item relation of the typed graph (its inverse: "interacted^-1")
CONTEXT_WINDOW = 50  # earlier items in a training context; decay^50 is negligible below decay 0.9
LOSS_CHUNK = 2_048  # rows of logits per chunk (memory), the batch's propagation is shared
SAMPLED_NEGATIVES = 2_048
# A sampled softmax scores each row against its chunk's targets plus the shared negatives, so it
# costs a fixed LOSS_CHUNK + SAMPLED_NEGATIVES columns: larger catalogues use it, and an epoch
# grows with the examples alone (a full softmax grows with examples x items).
FULL_SOFTMAX_MAX_ITEMS = LOSS_CHUNK + SAMPLED_NEGATIVES
# Loss chunks scored together in one pass (stacked, :func:`loss_passes`). The same logits either
# way, so the same model; on a GPU a pass's dozens of small kernels dominate an epoch, and scoring
# a step's chunks together launches them once per step instead of once per chunk. A pass of 16
# sampled chunks holds about 3 GB of logits, their masks and gradients on the device (one chunk:
# about 200 MB). The CPU keeps one chunk per pass: stacking there raised peak RSS by 1.3 GB and
# was not faster (bench/loss_passes.py).
CUDA_CHUNKS_PER_PASS = 16
VALIDATION_USERS = 3_000
# Every optimiser step propagates over the whole typed graph, so a step costs O(edges): with a
# fixed batch an epoch would cost O(examples x edges), quadratic in the size of the shop. Beyond
# this many steps per epoch the batch grows instead (the data sets of the README take at most 24).
MAX_STEPS_PER_EPOCH = 32


# --- the typed graph --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeLayout:
    """Where each node type starts in the joint node index: users, items, brands, categories, entities."""

    users: int
    items: int
    brands: int
    categories: int
    entities: int

    @property
    def item_offset(self) -> int:
        """Index of the first item node."""
        return self.users

    @property
    def brand_offset(self) -> int:
        """Index of the first brand node."""
        return self.users + self.items

    @property
    def category_offset(self) -> int:
        """Index of the first category node."""
        return self.brand_offset + self.brands

    @property
    def entity_offset(self) -> int:
        """Index of the first knowledge-graph entity node."""
        return self.category_offset + self.categories

    @property
    def total(self) -> int:
        """Number of nodes."""
        return self.entity_offset + self.entities


@dataclass
class RelationBlock:
    """One relation's normalised matrix, restricted to the nodes it reaches.

    A relation touches only some nodes (``produced_by`` reaches brands alone), so it is
    multiplied on those rows and added into the layer's output there: a layer's dense
    work grows with the nodes each relation reaches, not with relations × all nodes.
    """

    rows: torch.Tensor  # (m,) receiving nodes
    matrix: torch.Tensor  # sparse CSR (m × total): those rows of the relation's matrix
    sources: torch.Tensor  # (k,) sending nodes
    transpose: torch.Tensor  # sparse CSR (k × m): the matrix's transpose, on those rows and columns

    def to(self, device: str) -> RelationBlock:
        """The same block on ``device``."""
        return RelationBlock(
            self.rows.to(device), self.matrix.to(device), self.sources.to(device), self.transpose.to(device)
        )


@dataclass
class TypedGraph:
    """The joint graph's normalised adjacency, one block per relation (and direction).

    Each block carries its own transpose on the nodes it touches: the backward pass
    multiplies by it instead of transposing a sparse matrix every step, which is faster
    and keeps CPU runs bit-for-bit repeatable.
    """

    layout: NodeLayout
    relations: list[str]  # "interacted", "interacted^-1", "produced_by", …, one per block
    blocks: list[RelationBlock]

    def to(self, device: str) -> TypedGraph:
        """The same graph on ``device``."""
        return TypedGraph(self.layout, self.relations, [b.to(device) for b in self.blocks])

    def propagate(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``Σ_r weights[r] · A_r x``, differentiable in ``weights`` and ``x``."""
        return _WeightedPropagation.apply(x, weights, self.blocks)


class _WeightedPropagation(torch.autograd.Function):
    """y = Σ_r w_r A_r x, each relation on the rows it reaches, one output for the layer.

    A per-relation ``w_r * (A_r @ x)`` on the full node table made relations × nodes of
    dense temporaries per layer, forward and backward; on large shops that memory traffic,
    not the sparse products, was most of an epoch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weights: torch.Tensor, blocks: list[RelationBlock]) -> torch.Tensor:  # type: ignore[override]
        out = torch.zeros_like(x)
        parts = []
        for r, block in enumerate(blocks):
            part = block.matrix @ x
            out.index_add_(0, block.rows, weights[r] * part)
            parts.append(part)
        ctx.blocks = blocks
        ctx.parts = parts
        ctx.save_for_backward(weights)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # type: ignore[override]
        (weights,) = ctx.saved_tensors
        grad_x = torch.zeros_like(grad) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weights) if ctx.needs_input_grad[1] else None
        for r, block in enumerate(ctx.blocks):
            received = grad.index_select(0, block.rows)
            if grad_w is not None:
                grad_w[r] = (received * ctx.parts[r]).sum()
            if grad_x is not None:
                grad_x.index_add_(0, block.sources, block.transpose @ (weights[r] * received))
        ctx.parts = None
        return grad_x, grad_w, None


def _relation_edges(graph: TrainingGraph, layout: NodeLayout, use_knowledge: bool) -> dict[str, tuple]:
    """relation name -> (source nodes, target nodes) in the joint index, forward direction only."""
    item = layout.item_offset
    edges: dict[str, tuple[np.ndarray, np.ndarray]] = {
        INTERACTED: (graph.inter_user.astype(np.int64), item + graph.inter_item.astype(np.int64))
    }
    if not use_knowledge:
        return edges
    has_brand = np.flatnonzero(graph.item_brand >= 0) if graph.item_brand.size else np.zeros(0, np.int64)
    if has_brand.size:
        edges["produced_by"] = (item + has_brand, layout.brand_offset + graph.item_brand[has_brand])
    if graph.item_category_pairs.size:
        pairs = graph.item_category_pairs
        edges["belongs_to"] = (item + pairs[:, 0], layout.category_offset + pairs[:, 1])

    def node(index: np.ndarray) -> np.ndarray:
        # kg_triples nodes: items [0, n_items), then entities
        return np.where(
            index < graph.n_items, item + index, layout.entity_offset + (index - graph.n_items)
        ).astype(np.int64)

    for r, name in enumerate(graph.relation_names):
        rows = graph.kg_triples[graph.kg_triples[:, 1] == r]
        if rows.size:
            edges[f"kg:{name}"] = (node(rows[:, 0]), node(rows[:, 2]))
    for name, pairs in sorted(graph.knowledge.items()):
        if name not in graph.relation_names and pairs.size:
            edges[f"kg:{name}"] = (item + pairs[:, 0].astype(np.int64), item + pairs[:, 1].astype(np.int64))
    return edges


def _torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data.astype(np.float32)),
            size=matrix.shape,
            check_invariants=False,
        )


def directed_relations(
    graph: TrainingGraph, use_knowledge: bool
) -> tuple[NodeLayout, list[tuple[str, sp.csr_matrix]]]:
    """The joint node layout, and every relation in both directions as a 0/1 matrix (rows receive):
    each relation's forward matrix, then its inverse (``name^-1``)."""
    layout = NodeLayout(
        graph.n_users,
        graph.n_items,
        len(graph.brand_ids) if use_knowledge else 0,
        len(graph.category_ids) if use_knowledge else 0,
        graph.n_entities if use_knowledge else 0,
    )
    n = layout.total
    directed: list[tuple[str, sp.csr_matrix]] = []
    for name, (src, dst) in _relation_edges(graph, layout, use_knowledge).items():
        ones = np.ones(src.size, dtype=np.float32)
        # rows receive: the forward relation carries head → tail, the inverse tail → head
        forward = sp.csr_matrix((ones, (dst, src)), shape=(n, n))
        directed += [(name, forward), (f"{name}^-1", forward.T.tocsr())]
    for _, matrix in directed:
        matrix.data[:] = 1.0  # duplicate edges count once
    return layout, directed


def joint_normalised(
    graph: TrainingGraph, use_knowledge: bool
) -> tuple[NodeLayout, list[tuple[str, sp.csr_matrix]]]:
    """:func:`directed_relations`, each normalised by the joint degree of every relation (D^-½ A D^-½)."""
    layout, directed = directed_relations(graph, use_knowledge)
    degree = np.zeros(layout.total, dtype=np.float64)
    for _, matrix in directed:
        degree += np.asarray(matrix.sum(axis=1)).ravel()
    scale = sp.diags((1.0 / np.sqrt(np.maximum(degree, 1.0))).astype(np.float32))
    return layout, [(name, (scale @ matrix @ scale).tocsr()) for name, matrix in directed]


def build_typed_graph(graph: TrainingGraph, use_knowledge: bool) -> TypedGraph:
    """Every relation in both directions, normalised by the joint degree (D^-½ A D^-½)."""
    layout, normalised = joint_normalised(graph, use_knowledge)
    return TypedGraph(
        layout, [name for name, _ in normalised], [relation_block(matrix) for _, matrix in normalised]
    )


def is_knowledge(relation: str) -> bool:
    """Whether a typed-graph relation (either direction) comes from knowledge, not interactions."""
    return not relation.startswith(INTERACTED)


def relation_block(matrix: sp.csr_matrix) -> RelationBlock:
    """``matrix`` (total × total) on the rows it has entries in, with its transpose likewise."""
    rows = np.flatnonzero(np.diff(matrix.indptr))
    transpose = matrix.T.tocsr()
    sources = np.flatnonzero(np.diff(transpose.indptr))
    compact = np.full(matrix.shape[0], -1, dtype=np.int64)
    compact[rows] = np.arange(rows.size)
    restricted = transpose[sources]
    restricted = sp.csr_matrix(
        (restricted.data, compact[restricted.indices], restricted.indptr), shape=(sources.size, rows.size)
    )
    return RelationBlock(
        torch.from_numpy(rows.astype(np.int64)),
        _torch_csr(matrix[rows]),
        torch.from_numpy(sources.astype(np.int64)),
        _torch_csr(restricted),
    )


# --- training examples --------------------------------------------------------------------------


@dataclass
class Sequences:
    """One row per predicted interaction: its earlier items (most recent first) and the target.

    Column ``k`` of a row is the item ``k`` steps before the target's predecessor (recency rank k).
    """

    context: np.ndarray  # (n, W) int32 item indices, -1 = none
    relative: np.ndarray  # (n, W) weight relative to the strongest earlier item in the window
    target: np.ndarray  # (n,) item index
    user: np.ndarray  # (n,) user index


def user_sequences(graph: TrainingGraph) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each user's (items, weights) oldest first (same-time ties as ``history_order`` orders them)."""
    order = history_order(graph)
    users = graph.inter_user[order]
    result: list[tuple[np.ndarray, np.ndarray]] = [
        (np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(graph.n_users)
    ]
    if order.size == 0:
        return result
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for a, b in itertools.pairwise(bounds):
        rows = order[a:b]
        result[int(users[a])] = (
            graph.inter_item[rows].astype(np.int64),
            graph.inter_weight[rows].astype(np.float32),
        )
    return result


def next_item_examples(graph: TrainingGraph, window: int = CONTEXT_WINDOW) -> Sequences:
    """Every (earlier items → next item) example of every user with at least two interactions."""
    contexts, relatives, targets, users = [], [], [], []
    for u, (items, weights) in enumerate(user_sequences(graph)):
        n = items.size
        if n < 2:
            continue
        positions = np.arange(1, n)
        offsets = positions[:, None] - 1 - np.arange(window)[None, :]  # most recent first
        valid = offsets >= 0
        safe = np.where(valid, offsets, 0)
        context = np.where(valid, items[safe], -1)
        w = np.where(valid, np.maximum(weights[safe], 0.0), 0.0)
        strongest = w.max(axis=1, keepdims=True)
        relative = np.where(strongest > 0, w / np.maximum(strongest, 1e-30), valid.astype(np.float32))
        contexts.append(context)
        relatives.append(relative.astype(np.float32))
        targets.append(items[positions])
        users.append(np.full(positions.size, u, dtype=np.int64))
    if not targets:
        empty = np.zeros((0, window))
        return Sequences(
            empty.astype(np.int32), empty.astype(np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        )
    context = np.concatenate(contexts)
    return Sequences(
        context.astype(np.int32), np.concatenate(relatives), np.concatenate(targets), np.concatenate(users)
    )


# --- the model ----------------------------------------------------------------------------------


def rows_of(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]``: one row of ``table`` per entry of ``index``, shaped ``(*index.shape, dim)``.

    The same values and, on the CPU, the same gradient bits as ``nn.functional.embedding``. Its
    backward is one ``index_add_`` where embedding's sorts the indices on a GPU first, which took
    39% of a GPU epoch's kernel time (README › Performance).
    """
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])


class RelationalSequenceModel(nn.Module):
    """Relation-weighted propagation; item target and context embeddings; a learnt recency decay."""

    def __init__(
        self, typed: TypedGraph, dim: int, layers: int, text_dim: int | None, decay: float | None = 0.7
    ) -> None:
        """``decay`` is the recency decay to start from, or None for none (every earlier item alike)."""
        super().__init__()
        self.layout = typed.layout
        self.embedding = nn.Embedding(typed.layout.total, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.text_projection = nn.Linear(text_dim, dim, bias=False) if text_dim else None
        if self.text_projection is not None:
            nn.init.normal_(self.text_projection.weight, std=0.01)
        # softplus(0.5413) = 1: every relation starts as plain LightGCN propagation
        self.relation_logits = nn.Parameter(torch.full((layers, len(typed.relations)), 0.5413))
        n_items = typed.layout.items
        self.context_offset = nn.Embedding(n_items, dim)
        nn.init.zeros_(self.context_offset.weight)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.decay_logit = (
            nn.Parameter(torch.tensor(float(np.log(decay / (1 - decay))))) if decay is not None else None
        )
        self.layers = layers

    def relation_weights(self) -> torch.Tensor:
        """(layers, relations) non-negative weights of each relation in each layer."""
        return nn.functional.softplus(self.relation_logits)

    def decay(self) -> torch.Tensor:
        """The learnt recency decay in (0, 1) (exactly 1 for a model without recency)."""
        if self.decay_logit is None:
            return self.item_bias.new_ones(())
        return torch.sigmoid(self.decay_logit)

    def initial(self, text: torch.Tensor | None) -> torch.Tensor:
        """Layer-0 node features: free embeddings, plus projected text on item rows."""
        x = self.embedding.weight
        if self.text_projection is None or text is None:
            return x
        start, end = self.layout.item_offset, self.layout.brand_offset
        return torch.cat([x[:start], x[start:end] + self.text_projection(text), x[end:]])

    def forward(self, typed: TypedGraph, text: torch.Tensor | None) -> torch.Tensor:
        """Final node embeddings: the mean over layers 0..L of relation-weighted propagation."""
        x = self.initial(text)
        out = x
        weights = self.relation_weights()
        for layer in range(self.layers):
            x = typed.propagate(weights[layer], x)
            out = out + x
        return out / (self.layers + 1)

    def item_tables(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, context) item embeddings, each with its extra column (bias / constant one)."""
        items = nodes[self.layout.item_offset : self.layout.brand_offset]
        target = torch.cat([items, self.item_bias[:, None]], dim=1)
        ones = torch.ones(items.shape[0], 1, device=items.device)
        context = torch.cat([items + self.context_offset.weight, ones], dim=1)
        return target, context

    def contexts(
        self, context_table: torch.Tensor, items: torch.Tensor, relative: torch.Tensor
    ) -> torch.Tensor:
        """Recency-weighted mean of context embeddings (the served profile, scaled to sum one)."""
        rank = torch.arange(items.shape[1], device=items.device, dtype=relative.dtype)
        weight = relative * self.decay() ** rank * (items >= 0)
        items = items.long()
        weight = weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.einsum("bw,bwd->bd", weight, rows_of(context_table, items.clamp_min(0)))


# --- training -------------------------------------------------------------------------------


@dataclass
class TrainedEmbeddings:
    """What training produces: item tables for serving, other node embeddings, and the run's record."""

    items: np.ndarray  # (n_items, dim) target embeddings (last column: bias)
    item_context: np.ndarray  # (n_items, dim) context embeddings (last column: one)
    users: np.ndarray
    brands: np.ndarray
    categories: np.ndarray
    entities: np.ndarray
    relation_weights: dict[str, list[float]]  # relation -> weight per layer
    decay: float  # the learnt recency decay
    seconds_per_epoch: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    validation_ndcg: list[float] = field(default_factory=list)  # per epoch, when validated
    best_epoch: int = 0  # 1-based; the parameters kept


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when a GPU is present, the CPU otherwise."""
    check_device(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return name


def seed_everything(seed: int) -> None:
    """Make a run repeatable on CPU (and as far as cuDNN allows on GPU)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(False)


def validation_ndcg(
    target_table: np.ndarray,
    context_table: np.ndarray,
    decay: float,
    sequences: list[tuple[np.ndarray, np.ndarray]],
    targets: dict[int, int],
    users: np.ndarray,
) -> float:
    """NDCG@10 of the served score ``(profile · E_ctx) · E_itemᵀ`` for ``users``' held-out items
    (ties count against the target: :func:`workers.training.validation.pessimistic_ranks`)."""
    if users.size == 0:
        return 0.0
    total = 0.0
    for start in range(0, users.size, 1024):
        part = users[start : start + 1024]
        profiles = np.zeros((part.size, context_table.shape[1]), dtype=np.float32)
        for row, u in enumerate(part):
            items, weights = sequences[u]
            if items.size == 0:
                continue
            recent = items[::-1]
            w = np.maximum(weights[::-1], 0.0)
            strongest = w.max()
            relative = w / strongest if strongest > 0 else np.ones_like(w)
            profiles[row] = (relative * decay ** np.arange(items.size)) @ context_table[recent]
        scores = profiles @ target_table.T
        for row, u in enumerate(part):
            scores[row, sequences[u][0]] = -np.inf
        rank = pessimistic_ranks(scores, np.array([targets[int(u)] for u in part], dtype=np.int64))
        total += float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).sum())
    return total / users.size


def chunks_per_pass(device: str) -> int:
    """How many loss chunks one pass scores together: 1 on the CPU, ``CUDA_CHUNKS_PER_PASS`` on a GPU."""
    return CUDA_CHUNKS_PER_PASS if device.startswith("cuda") else 1


def loss_passes(batch: torch.Tensor, per_pass: int) -> list[torch.Tensor]:
    """The batch's ``LOSS_CHUNK``-row chunks, ``per_pass`` of them stacked as one (chunks, rows) pass.

    A pass holding a short last chunk pads it with -1; a lone chunk is never padded.
    """
    chunks = list(batch.split(LOSS_CHUNK))
    passes = []
    for start in range(0, len(chunks), per_pass):
        group = chunks[start : start + per_pass]
        width = group[0].numel()
        passes.append(
            torch.stack([nn.functional.pad(chunk, (0, width - chunk.numel()), value=-1) for chunk in group])
        )
    return passes


def sampled_logits(
    contexts: torch.Tensor,
    target_table: torch.Tensor,
    targets: torch.Tensor,
    target_share: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a sampled softmax: each row against its chunk's targets and shared negatives.

    ``contexts`` is (chunks, rows, dim) and ``targets`` (chunks, rows), -1 where a short chunk
    is padded. Each chunk's candidates are its own targets (drawn by popularity:
    ``target_share``, each item's share of all examples) plus ``SAMPLED_NEGATIVES`` uniform
    draws of its own. Every logit is corrected by the log of how often its item is expected
    among the candidates (logQ), or popular items would be pushed down for being drawn more
    often. A candidate that is the row's own target in another column is not a negative, and
    is masked, as are padding columns; padding rows get label -1 (ignored).
    """
    chunks, rows = targets.shape
    n_items = target_share.numel()
    # one draw for all chunks: the same numbers as one draw per chunk, in chunk order
    negatives = torch.randint(0, n_items, (chunks * SAMPLED_NEGATIVES,), generator=generator)
    negatives = negatives.to(targets.device).view(chunks, SAMPLED_NEGATIVES)
    real = targets >= 0
    candidates = torch.cat([targets.clamp_min(0), negatives], dim=1)
    drawn = real.sum(dim=1, keepdim=True)
    expected = drawn * target_share[candidates] + SAMPLED_NEGATIVES / n_items
    logits = contexts @ rows_of(target_table, candidates).transpose(1, 2)
    logits = logits - torch.log(expected)[:, None, :]
    diagonal = torch.arange(rows, device=targets.device)
    hits = candidates[:, None, :] == targets[:, :, None]
    hits[:, diagonal, diagonal] = False
    hits[:, :, :rows] |= ~real[:, None, :]
    return logits.masked_fill(hits, float("-inf")), diagonal.expand(chunks, rows).masked_fill(~real, -1)


def epoch_batch_size(examples: int, batch_size: int, max_steps: int) -> int:
    """``batch_size``, or larger so that an epoch of ``examples`` takes at most ``max_steps`` steps."""
    return max(batch_size, -(-examples // max_steps))


def train_kg_model(
    graph: TrainingGraph,
    config: TrainConfig,
    device: str = "cpu",
    text: np.ndarray | None = None,
    validation: dict[int, int] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    epochs: int | None = None,
) -> TrainedEmbeddings:
    """Train on ``graph``; with ``validation`` (user → held-out item), keep the best epoch.

    ``epochs`` fixes the number of epochs (no early stopping); by default the cap is
    ``config.epochs`` with ``config.patience`` epochs of patience.
    """
    seed_everything(config.seed)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    typed = build_typed_graph(graph, config.use_knowledge).to(device)
    layout = typed.layout
    text_tensor = (
        torch.from_numpy(np.asarray(text, dtype=np.float32)).to(device)
        if config.use_text and text is not None
        else None
    )
    initial_decay = 0.7 if config.use_recency else None
    model = RelationalSequenceModel(
        typed,
        config.dim - 1,  # + the bias column
        config.layers,
        text_tensor.shape[1] if text_tensor is not None else None,
        decay=initial_decay,
    ).to(device)
    learn_decay = model.decay_logit is not None
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.model_lr)

    examples = next_item_examples(graph)
    context = torch.from_numpy(examples.context).to(device)
    relative = torch.from_numpy(examples.relative).to(device)
    target = torch.from_numpy(examples.target).to(device)
    n_items = graph.n_items
    sampled = n_items > FULL_SOFTMAX_MAX_ITEMS
    target_share = torch.bincount(target, minlength=n_items).float() / max(target.numel(), 1)

    sequences = user_sequences(graph)
    check_users = np.zeros(0, dtype=np.int64)
    if validation:
        check_users = np.array(sorted(validation), dtype=np.int64)
        if check_users.size > VALIDATION_USERS:
            check_users = np.sort(
                np.random.default_rng(config.seed).choice(check_users, VALIDATION_USERS, replace=False)
            )
    batch_size = epoch_batch_size(target.numel(), config.model_batch_size, MAX_STEPS_PER_EPOCH)
    per_pass = chunks_per_pass(device)
    cap = epochs if epochs is not None else config.epochs
    early_stopping = epochs is None and check_users.size > 0

    result = TrainedEmbeddings(
        items=np.zeros(0), item_context=np.zeros(0), users=np.zeros(0), brands=np.zeros(0),
        categories=np.zeros(0), entities=np.zeros(0), relation_weights={}, decay=1.0,
    )  # fmt: skip
    best_score, best_state, since_best = -1.0, None, 0
    for epoch in range(cap):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(target.numel(), generator=generator).to(device)
        total = 0.0
        for start in range(0, target.numel(), batch_size):
            batch = order[start : start + batch_size]
            nodes = model(typed, text_tensor)
            target_table, context_table = model.item_tables(nodes)
            # The chunks' gradients meet at the (detached) item tables, then flow through the
            # propagation once per batch: only one pass of chunks holds logits at a time.
            t_leaf = target_table.detach().requires_grad_()
            c_leaf = context_table.detach().requires_grad_()
            decay_grad = torch.zeros((), device=device)
            batch_loss = 0.0
            for rows in loss_passes(batch, per_pass):
                examples = rows.clamp_min(0)  # padding (-1) reads example 0; its label is -1, ignored
                flat = examples.reshape(-1)
                ctx = model.contexts(c_leaf, context[flat], relative[flat]).reshape(*rows.shape, -1)
                labels = target[examples].masked_fill(rows < 0, -1)
                if sampled:
                    logits, labels = sampled_logits(ctx, t_leaf, labels, target_share, generator)
                else:
                    logits = ctx @ t_leaf.T
                logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
                loss = nn.functional.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
                loss = loss / batch.numel()
                inputs = [t_leaf, c_leaf] + ([model.decay_logit] if learn_decay else [])
                grads = torch.autograd.grad(loss, inputs)
                t_leaf.grad = grads[0] if t_leaf.grad is None else t_leaf.grad + grads[0]
                c_leaf.grad = grads[1] if c_leaf.grad is None else c_leaf.grad + grads[1]
                if learn_decay:
                    decay_grad = decay_grad + grads[2]
                batch_loss += float(loss.detach())
            optimiser.zero_grad()
            reg = config.l2 * model.embedding.weight.pow(2).sum() / max(graph.n_users, 1)
            torch.autograd.backward(
                [target_table, context_table, reg], [t_leaf.grad, c_leaf.grad, torch.ones_like(reg)]
            )
            if learn_decay:
                model.decay_logit.grad = decay_grad
            optimiser.step()
            total += batch_loss * batch.numel()
        result.seconds_per_epoch.append(time.perf_counter() - started)
        result.losses.append(total / max(target.numel(), 1))
        if on_epoch is not None:
            on_epoch(epoch, result.losses[-1])
        if not early_stopping:
            continue
        tables = _tables(model, typed, text_tensor)
        score = validation_ndcg(
            tables[0], tables[1], float(model.decay().detach()), sequences, validation, check_users
        )
        result.validation_ndcg.append(score)
        LOG.info(
            "epoch %d: loss %.4f, validation NDCG@10 %.4f, decay %.3f, %.0fs",
            epoch + 1, result.losses[-1], score, float(model.decay().detach()), result.seconds_per_epoch[-1],
        )  # fmt: skip
        if score > best_score:
            best_score, since_best, result.best_epoch = score, 0, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif not early_stopping:
        result.best_epoch = cap
    with torch.no_grad():
        nodes = model(typed, text_tensor).cpu().numpy()
    result.items, result.item_context = _tables(model, typed, text_tensor)
    nodes = np.pad(nodes, ((0, 0), (0, 1)))  # the width of the item tables, bias column zero
    result.users = nodes[: layout.users]
    result.brands = nodes[layout.brand_offset : layout.category_offset]
    result.categories = nodes[layout.category_offset : layout.entity_offset]
    result.entities = nodes[layout.entity_offset :]
    weights = model.relation_weights().detach().cpu().numpy()
    result.relation_weights = {
        name: weights[:, r].round(4).tolist() for r, name in enumerate(typed.relations)
    }
    result.decay = float(model.decay().detach())
    if not config.use_knowledge:
        result.brands = np.zeros((len(graph.brand_ids), config.dim), dtype=np.float32)
        result.categories = np.zeros((len(graph.category_ids), config.dim), dtype=np.float32)
    return result


def _tables(
    model: RelationalSequenceModel, typed: TypedGraph, text: torch.Tensor | None
) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    with torch.no_grad():
        target, context = model.item_tables(model(typed, text))
    return target.cpu().numpy().astype(np.float32), context.cpu().numpy().astype(np.float32)
