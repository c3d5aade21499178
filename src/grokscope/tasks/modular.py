"""Modular arithmetic `a op b mod p` on tokens `[a, b, =]`: the grokking paper's task family."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from grokscope.errors import GrokscopeError, require
from grokscope.registry import TASKS
from grokscope.tasks.base import Batch, Task, all_true, minibatch_indices
from grokscope.tasks.split import InvalidSplit, same_split, saved_array

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

    def memory_bytes(self, batch_size: int) -> dict[str, int]:
        """What the task will allocate: every pair's tokens (int64, kept twice: all and split), and
        a full batch's float64 logits with their log-softmax and gradient."""
        n, n_train = self.p**2, int(self.frac_train * self.p**2)
        rows = n_train if batch_size <= 0 else min(batch_size, n_train)
        return {
            f"task (p = {self.p}: {n:,} examples)": 2 * 4 * 8 * n,
            f"training batch ({rows:,} examples x {self.p} logits)": 3 * 8 * rows * self.p,
        }

    def validate(self) -> None:
        require(self.p >= 2, f"task.p must be >= 2, got {self.p}")
        require(0 < self.frac_train < 1, f"task.frac_train must be in (0, 1), got {self.frac_train}")
        n_train = int(self.frac_train * self.p**2)
        require(
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


@TASKS.register("modular")
class ModularTask(Task):
    config_class = ModularConfig
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
        self.all = Batch(self.tokens, self.labels[:, None], all_true(self.labels[:, None]))
        self._set_split(order[:n_train].sort().values, order[n_train:].sort().values)

    def _set_split(self, train_idx: torch.Tensor, test_idx: torch.Tensor) -> None:
        self.train_idx, self.test_idx = train_idx, test_idx  # [batch] indices into the p² pairs
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

    def use_split(self, arrays: dict[str, np.ndarray]) -> bool:
        if same_split(arrays, self.split_arrays()):
            return False
        n = self.p * self.p
        train, test = (
            torch.from_numpy(saved_array(arrays, k, 1, 0, n).astype(np.int64)) for k in ("train", "test")
        )
        if len(train) == 0 or len(test) == 0:
            raise InvalidSplit("its train or test set is empty")
        if (
            torch.isin(train, test).any()
            or len(train.unique()) < len(train)
            or len(test.unique()) < len(test)
        ):
            raise InvalidSplit("an example appears twice (in train and test, or twice in one set)")
        self._set_split(train.sort().values, test.sort().values)
        return True

    def token_names(self) -> list[str]:
        return [str(i) for i in range(self.p)] + ["="]
