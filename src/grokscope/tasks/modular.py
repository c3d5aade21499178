"""Modular arithmetic `a op b mod p` on tokens `[a, b, =]`: the grokking paper's task family."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from grokscope.config import _require
from grokscope.errors import GrokscopeError
from grokscope.tasks.base import Batch, Task, all_true, minibatch_indices

# add, subtract, a^2+ab+b^2 and a random table need only the ring Z_p, so any p >= 2 trains;
# the Fourier analysis of issue-3 measures (grokscope.analysis) is what asks for an odd prime.
OPS = ("add", "subtract", "quad", "random")


@dataclass
class ModularConfig:
    """`kind = "modular"`: all p*p pairs (a, b), a seeded fraction of them for training."""

    kind: str = "modular"
    p: int = 113
    op: str = field(default="add", metadata={"choices": OPS})
    frac_train: float = 0.3
    split_seed: int | None = None

    def validate(self) -> None:
        _require(self.p >= 2, f"task.p must be >= 2, got {self.p}")
        _require(0 < self.frac_train < 1, f"task.frac_train must be in (0, 1), got {self.frac_train}")
        n_train = int(self.frac_train * self.p**2)
        _require(
            0 < n_train < self.p**2,
            f"task.frac_train={self.frac_train} leaves an empty split for p={self.p}",
        )


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def modular_answers(a: torch.Tensor, b: torch.Tensor, p: int, op: str, seed: int = 0) -> torch.Tensor:
    """The label of each pair; `random` is a fixed table drawn from `seed`."""
    if op == "add":
        return (a + b) % p
    if op == "subtract":
        return (a - b) % p
    if op == "quad":
        return (a * a + a * b + b * b) % p
    if op == "random":
        table = torch.randint(0, p, (p, p), generator=torch.Generator().manual_seed(seed))
        return table[a, b]
    raise GrokscopeError(f"unknown modular op {op!r}")


class ModularTask(Task):
    """All p² inputs in row-major order: example i is (a, b) = (i // p, i % p)."""

    def __init__(self, config: ModularConfig, seed: int):
        self.config = config
        p = config.p
        self.p = p
        self.d_vocab = p + 1  # the numbers, then '='
        self.d_vocab_out = p
        self.n_ctx = 3
        self.loss_positions = [2]
        self.equals_token = p
        split_seed = seed if config.split_seed is None else config.split_seed
        a = torch.arange(p).repeat_interleave(p)
        b = torch.arange(p).repeat(p)
        self.tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
        self.labels = modular_answers(a, b, p, config.op, seed=split_seed)
        order = torch.randperm(p * p, generator=torch.Generator().manual_seed(split_seed))
        n_train = int(config.frac_train * p * p)
        self.train_idx = order[:n_train].sort().values
        self.test_idx = order[n_train:].sort().values
        self.all = Batch(self.tokens, self.labels[:, None], all_true(self.labels[:, None]))
        self._train = self.all.select(self.train_idx)
        self._test = self.all.select(self.test_idx)

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        if batch_size <= 0 or batch_size >= len(self._train):
            return self._train
        return self._train.select(minibatch_indices(len(self._train), step, batch_size, seed))

    def eval_sets(self) -> dict[str, Batch]:
        return {"train": self._train, "test": self._test}

    def split_arrays(self) -> dict[str, np.ndarray]:
        return {"train": self.train_idx.numpy(), "test": self.test_idx.numpy()}

    def check_split(self, arrays: dict[str, np.ndarray]) -> None:
        for name, ours in self.split_arrays().items():
            if name not in arrays or not np.array_equal(arrays[name], ours):
                raise GrokscopeError(
                    f"the saved {name} split differs from the one this version of grokscope draws "
                    "for the same config; the run folder comes from another version"
                )

    def token_names(self) -> list[str]:
        return [str(i) for i in range(self.p)] + ["="]
