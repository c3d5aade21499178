"""What every task gives the trainer: token batches, loss targets, a split, metadata.

A task reads its answer at fixed *loss positions* (e.g. the `=` token of `a b =`), so the model
only computes logits where the loss looks. `targets[:, k]` is the label for the logits at
`loss_positions[k]`; `mask` marks which of those count (all true where every one does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Batch:
    tokens: torch.Tensor  # [batch, pos] int64
    targets: torch.Tensor  # [batch, n_loss] int64
    mask: torch.Tensor  # [batch, n_loss] bool: the targets that count (all true: every one)
    meta: dict[str, torch.Tensor] = field(default_factory=dict)  # per-example labels, e.g. carries

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool or self.mask.shape != self.targets.shape:
            raise ValueError(
                f"Batch.mask must be a bool tensor shaped like targets {tuple(self.targets.shape)}, "
                f"got {self.mask.dtype} {tuple(self.mask.shape)} (use all_true(targets))"
            )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor on `device` (itself when they already are)."""
        if self.tokens.device == torch.device(device):
            return self
        return Batch(
            self.tokens.to(device),
            self.targets.to(device),
            self.mask.to(device),
            {k: v.to(device) for k, v in self.meta.items()},
        )

    def select(self, index: torch.Tensor) -> Batch:
        return Batch(
            self.tokens[index],
            self.targets[index],
            self.mask[index],
            {k: v[index] for k, v in self.meta.items()},
        )


def all_true(targets: torch.Tensor) -> torch.Tensor:
    """The mask of a batch whose every target counts: [batch, n_loss] bool, all true."""
    return torch.ones_like(targets, dtype=torch.bool)


class Task(ABC):
    """A task family instance: vocabulary, context, loss positions, data and split."""

    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    loss_positions: list[int]

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """The batch trained on at `step`: a pure function of (step, batch_size, seed)."""

    @abstractmethod
    def eval_sets(self) -> dict[str, Batch]:
        """Named evaluation sets; `train` and `test` at least."""

    @abstractmethod
    def split_arrays(self) -> dict[str, np.ndarray]:
        """What must be saved in the run folder to reproduce the exact split."""

    @abstractmethod
    def use_split(self, arrays: dict[str, np.ndarray]) -> bool:
        """Take a saved split (as `split_arrays` writes it) in place of the drawn one; True if it
        differs from the drawn one. Raises `tasks.split.InvalidSplit` if it cannot be this task's."""

    def token_names(self) -> list[str]:
        return [str(i) for i in range(self.d_vocab)]

    @property
    def d_vocab_read(self) -> int:
        """How many input tokens (ids 0..n-1) the task's sequences can hold: the smallest model
        vocabulary that reads them all (a model trained elsewhere may have exactly this many)."""
        return self.d_vocab

    @property
    def d_vocab_emitted(self) -> int:
        """How many output classes (ids 0..n-1) the task's targets can take: the smallest unembedding
        that scores them all."""
        return self.d_vocab_out


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator whose state depends only on (seed, step), so that resume needs no RNG state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def minibatch_indices(n: int, step: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the training examples used at `step` (full batch when batch_size is 0 or >= n)."""
    if batch_size <= 0 or batch_size >= n:
        return torch.arange(n)
    return torch.randint(0, n, (batch_size,), generator=step_generator(seed, step))


def drop_examples(batch: Batch, drop: torch.Tensor) -> Batch:
    """`batch` with the examples where `drop` [batch] is True masked out of the loss (e.g. a held-out
    test example drawn by chance into an infinite-data training batch)."""
    if drop.any():
        batch.mask = batch.mask & ~drop[:, None]
    return batch
