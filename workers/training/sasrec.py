"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention model of each user's item sequence.

Architecture as published: item + learnt position embeddings, ``blocks`` pre-norm
blocks of causal single-head attention and a point-wise feed-forward network,
dropout 0.5 (the paper's value for sparse Amazon data), max_len 50, dim 64, and
the item embedding table shared with the output layer.

Loss: softmax cross-entropy at every position of the sequence, instead of the
paper's binary cross-entropy with one sampled negative; it converges in far
fewer epochs and ranks better (Klenitskiy & Vasilev, RecSys 2023; Petrov &
Macdonald, RecSys 2023). By default the softmax runs over the target and
``negatives`` = 256 items drawn uniformly per batch (shared by its positions; a
draw equal to the target is masked): the full softmax over 12,101 Beauty items
costs 44 CPU-seconds an epoch, most of the training. ``negatives=0`` is the full
softmax.

Dropout is chosen on validation from ``dropouts``: the paper used 0.5 for sparse
Amazon data and 0.2 for dense MovieLens, and which one fits a data set is not
known in advance. Each candidate is trained in full (early-stopped) and the one
with the best validation NDCG@10 is kept.

Protocol (the paper's): trained on each user's sequence without their validation
item, early-stopped on validation NDCG@10 with that sequence as input; the test
ranking reads the whole training sequence (the validation item included) with the
best epoch's weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from kgrec.item_graphs import histories
from kgrec.training_graph import TrainingGraph
from workers.training.kg_model import seed_everything
from workers.training.validation import EarlyStop, ValidationSet, early_stopping


@dataclass(frozen=True)
class SasRecConfig:
    """Hyper-parameters (the published ones, CE loss); dropout chosen on validation from ``dropouts``."""

    max_len: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5  # the one trained; train_sasrec sets it to each of ``dropouts`` in turn
    dropouts: tuple[float, ...] = (0.2, 0.5)  # the paper's for dense (MovieLens) and sparse (Amazon) data
    lr: float = 1e-3
    batch_size: int = 128
    negatives: int = 256  # items per batch the softmax is taken over besides the target; 0: all items
    # The schedule counts optimiser steps, not epochs: an epoch is one pass over the users, 175
    # batches on Amazon Beauty but 8 on MovieLens-100k, where "every 2 epochs, patience 3"
    # stopped SASRec after 112 steps, below popularity. Rounded up to whole epochs
    # (:meth:`schedule`); on Beauty it is every 2 epochs, cap 200, as before.
    check_steps: int = 350  # steps between two validation checks
    patience: int = 3  # checks without a new best before stopping
    max_steps: int = 35_000  # the cap
    seed: int = 7

    def schedule(self, batches_per_epoch: int) -> tuple[int, int]:
        """``(every, max_epochs)``: epochs between checks and the epoch cap, for epochs of so many batches."""
        per_epoch = max(batches_per_epoch, 1)
        every = -(-self.check_steps // per_epoch)
        return every, every * -(-self.max_steps // (every * per_epoch))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.forward_norm = nn.LayerNorm(dim, eps=1e-8)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, dim), nn.Dropout(dropout), nn.ReLU(), nn.Linear(dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        query = self.attention_norm(x)
        attended, _ = self.attention(query, x, x, attn_mask=blocked, need_weights=False)
        x = query + attended
        x = self.forward_norm(x)
        x = x + self.feed_forward(x)
        return x * keep


class SasRec(nn.Module):
    """The network: item indices (0 = padding, item k is k + 1) -> one hidden vector per position."""

    def __init__(self, n_items: int, config: SasRecConfig) -> None:
        """Embeddings, blocks and the final norm for ``n_items`` items."""
        super().__init__()
        self.items = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            _Block(config.dim, config.heads, config.dropout) for _ in range(config.blocks)
        )
        self.norm = nn.LayerNorm(config.dim, eps=1e-8)
        self.scale = config.dim**0.5
        # As the reference implementation: Xavier-normal for every matrix. nn.Embedding's N(0, 1),
        # times the √dim input scale, saturated the softmax and Beauty barely trained.
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1 and "norm" not in name:
                nn.init.xavier_normal_(parameter)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """(batch, length ≤ max_len) left-padded item indices -> (batch, length, dim) hidden states.

        Positions count back from the end (the latest item is always the last position),
        and padding is never attended to, so cutting a batch's all-padding columns off
        changes nothing but the cost.
        """
        length = sequences.shape[1]
        real = sequences > 0
        keep = real.unsqueeze(-1).float()
        positions = torch.arange(self.positions.num_embeddings - length, self.positions.num_embeddings)
        x = self.items(sequences) * self.scale + self.positions(positions.to(sequences.device))[None]
        x = self.dropout(x) * keep
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=sequences.device), 1)
        blocked = future[None] | ~real[:, None, :]
        # A padding position may see itself, so that no row is all blocked (a NaN softmax).
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=sequences.device)[None]
        heads = self.blocks[0].attention.num_heads
        blocked = blocked.repeat_interleave(heads, dim=0)
        for block in self.blocks:
            x = block(x, blocked, keep)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item (padding left out) for hidden states (..., dim)."""
        return hidden @ self.items.weight[1:].T


def _loss(
    model: SasRec,
    hidden: torch.Tensor,
    wanted: torch.Tensor,
    negatives: int,
    generator: torch.Generator,
    n_items: int,
) -> torch.Tensor:
    """Cross-entropy of the wanted items, over all items or over them and shared sampled negatives."""
    if negatives <= 0 or negatives >= n_items:
        return nn.functional.cross_entropy(model.logits(hidden), wanted)
    drawn = torch.randint(0, n_items, (negatives,), generator=generator).to(hidden.device)
    table = model.items.weight[1:]
    positive = (hidden * table[wanted]).sum(-1, keepdim=True)
    negative = hidden @ table[drawn].T
    negative = negative.masked_fill(drawn[None, :] == wanted[:, None], float("-inf"))
    logits = torch.cat([positive, negative], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros_like(wanted))


def _batches(lengths: torch.Tensor, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of sequences of similar length (sorted within random chunks of 50 batches).

    Most sequences are short; a batch is cut to its longest one (:func:`trimmed`), so
    grouping by length saves most of the padding.
    """
    order = torch.randperm(lengths.numel(), generator=generator)
    batches: list[torch.Tensor] = []
    chunk = size * 50
    for start in range(0, order.numel(), chunk):
        part = order[start : start + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part.split(size))
    return [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]


def left_padded(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """The last ``max_len`` items of each sequence, shifted by one (0 = padding), padded on the left."""
    out = np.zeros((len(sequences), max_len), dtype=np.int64)
    for row, items in enumerate(sequences):
        tail = items[-max_len:]
        if tail.size:
            out[row, max_len - tail.size :] = tail + 1
    return out


def trimmed(*batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The batches without the leading columns that are padding in every row of the first."""
    used = int((batches[0] > 0).sum(dim=1).max().item()) if batches[0].numel() else 0
    return tuple(b[:, b.shape[1] - max(used, 1) :] for b in batches)


@dataclass
class SasRecFit:
    """The best epoch's model, and how training went."""

    model: SasRec
    stop: EarlyStop[dict[str, torch.Tensor]]
    seconds_per_epoch: float
    config: SasRecConfig
    device: str
    every: int = 0  # epochs between validation checks (SasRecConfig.schedule)
    max_epochs: int = 0  # the epoch cap
    validation_by_dropout: dict[float, float] = field(default_factory=dict)  # best validation NDCG@10

    @torch.no_grad()
    def scores(self, sequences: list[np.ndarray], batch: int = 1_024) -> np.ndarray:
        """Dense (users × items) scores of the next item after each sequence."""
        self.model.eval()
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), batch):
            (inputs,) = trimmed(
                torch.from_numpy(left_padded(sequences[start : start + batch], self.config.max_len))
            )
            hidden = self.model(inputs.to(self.device))[:, -1]
            out.append(self.model.logits(hidden).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.items.num_embeddings - 1), np.float32)


def train_sasrec(
    validation: ValidationSet, config: SasRecConfig = SasRecConfig(), device: str = "cpu"
) -> SasRecFit:
    """Train one model per dropout of ``config.dropouts`` (each early-stopped on ``validation``'s
    held-out items) and keep the one with the best validation NDCG@10 (the first on a tie)."""
    dropouts = config.dropouts or (config.dropout,)
    fits = [_train(validation, replace(config, dropout=d), device) for d in dropouts]
    best = max(fits, key=lambda fit: fit.stop.best_score)  # max keeps the first of equal scores
    best.validation_by_dropout = {fit.config.dropout: round(fit.stop.best_score, 5) for fit in fits}
    return best


def _train(validation: ValidationSet, config: SasRecConfig, device: str) -> SasRecFit:
    """Train on ``validation.graph``'s sequences with ``config.dropout``, early-stopped on its hold-out."""
    seed_everything(config.seed)
    graph: TrainingGraph = validation.graph
    sequences = histories(graph)
    trainable = [s for s in sequences if s.size >= 2]
    inputs = torch.from_numpy(left_padded([s[:-1] for s in trainable], config.max_len))
    targets = torch.from_numpy(left_padded([s[1:] for s in trainable], config.max_len)) - 1  # -1: padding
    lengths = (inputs > 0).sum(dim=1)
    model = SasRec(graph.n_items, config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    generator = torch.Generator().manual_seed(config.seed)
    seconds: list[float] = []

    def epoch() -> None:
        started = time.perf_counter()
        model.train()
        for batch in _batches(lengths, config.batch_size, generator):
            given, wanted = trimmed(inputs[batch], targets[batch])
            wanted = wanted.to(device)
            hidden = model(given.to(device))
            valid = wanted >= 0
            # Only real positions reach the logits: most of a sequence is padding.
            loss = _loss(model, hidden[valid], wanted[valid], config.negatives, generator, graph.n_items)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        seconds.append(time.perf_counter() - started)

    fit = SasRecFit(model, None, 0.0, config, device)  # type: ignore[arg-type]
    user_sequences = [sequences[int(u)] for u in validation.users]
    index = {int(u): k for k, u in enumerate(validation.users)}

    def score() -> float:
        scores = fit.scores(user_sequences)
        return validation.ndcg(lambda users: scores[[index[int(u)] for u in users]])

    every, max_epochs = config.schedule(len(_batches(lengths, config.batch_size, torch.Generator())))
    stop = early_stopping(
        epoch,
        score,
        lambda: copy.deepcopy(model.state_dict()),
        max_epochs=max_epochs,
        every=every,
        patience=config.patience,
    )
    if stop.best is not None:
        model.load_state_dict(stop.best)
    fit.stop, fit.seconds_per_epoch = stop, float(np.mean(seconds)) if seconds else 0.0
    fit.every, fit.max_epochs = every, max_epochs
    return fit
