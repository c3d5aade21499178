"""Repeated subsequences: the induction-head task of the grokking paper's appendix.

A sequence of `seq_len` uniform random tokens in which a random stretch of `sub_len` tokens
(starting at `src_start`) appears again later (at `copy_start`). Only the copy's tokens after its
first are predictable: `[.. A B C D .. A -> B, B -> C, C -> D]`, which a 2-layer attention-only
model solves with a previous-token head and an induction head. Loss positions are every position
0..seq_len-2 (logits at t predict token t+1); `mask` selects the predictable ones.
Meta: `src_start`, `copy_start` [B].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.errors import require
from grokscope.registry import TASKS
from grokscope.tasks.base import Batch
from grokscope.tasks.generated import GeneratedTask


@dataclass
class InductionConfig:
    """`kind = "induction"`: random tokens with one repeated subsequence."""

    kind: str = "induction"
    vocab: int = 32
    seq_len: int = 24
    sub_len: int = 6
    n_train: int = 0  # 0 = infinite data
    n_test: int = 1000
    split_seed: int | None = None

    def validate(self) -> None:
        require(self.vocab >= 2, f"task.vocab must be >= 2, got {self.vocab}")
        require(self.sub_len >= 2, f"task.sub_len must be >= 2, got {self.sub_len}")
        require(
            self.seq_len >= 2 * self.sub_len,
            f"task.seq_len = {self.seq_len} must hold the subsequence twice (>= 2 * task.sub_len = {2 * self.sub_len})",
        )
        require(self.n_train >= 0, "task.n_train must be >= 0 (0 = infinite data)")
        require(self.n_test >= 1, "task.n_test must be >= 1")
        space = self.vocab ** (self.seq_len - self.sub_len)
        require(
            self.n_train + self.n_test <= space // 2,
            f"task.n_train + task.n_test = {self.n_train + self.n_test} is too large for the {space} "
            "distinct sequences; train and test would overlap",
        )


@TASKS.register("induction")
class InductionTask(GeneratedTask):
    config_class = InductionConfig

    def __init__(self, config: InductionConfig, seed: int):
        self.config = config
        self.d_vocab = self.d_vocab_out = config.vocab
        self.n_ctx = config.seq_len
        self.loss_positions = list(range(config.seq_len - 1))
        self.n_train, self.n_test = config.n_train, config.n_test
        self._setup_split(seed if config.split_seed is None else config.split_seed)

    def generate(self, g: torch.Generator, n: int) -> Batch:
        T, L = self.config.seq_len, self.config.sub_len
        tokens = torch.randint(0, self.config.vocab, (n, T), generator=g)
        src = (torch.rand(n, generator=g) * (T - 2 * L + 1)).long()
        room = T - L - (src + L) + 1  # copy starts in [src + L, T - L]
        dst = src + L + (torch.rand(n, generator=g) * room).long()
        t = torch.arange(T)[None, :]
        in_copy = (t >= dst[:, None]) & (t < (dst + L)[:, None])
        tokens = tokens.gather(1, torch.where(in_copy, t - dst[:, None] + src[:, None], t))
        pos = torch.arange(T - 1)[None, :]
        mask = (pos >= dst[:, None]) & (pos < (dst + L - 1)[:, None])
        return Batch(tokens, tokens[:, 1:].clone(), mask, {"src_start": src, "copy_start": dst})
