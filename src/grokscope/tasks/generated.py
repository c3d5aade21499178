"""Tasks whose examples come from a seeded generator: finite (a stored, seeded training set) or
infinite (a fresh batch per step), with a held-out test set either way.

A subclass implements `generate(g, n) -> Batch`; this base turns it into train batches, eval
sets and a split file, and checks that finite train and test sets share no example.
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.tasks.base import Batch, Task, minibatch_indices, step_generator
from grokscope.tasks.sampling import row_keys


class GeneratedTask(Task):
    n_train: int
    n_test: int

    def generate(self, g: torch.Generator, n: int) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    def _setup_split(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed * 7919 + 101)
        self._test = self.generate(g, self.n_test)
        self._train = self.generate(g, self.n_train) if self.n_train else None
        self._train_eval = self._train if self._train is not None else self.generate(g, self.n_test)
        self.test_keys = row_keys(self._test.tokens)
        if self._train is not None and torch.isin(row_keys(self._train.tokens), self.test_keys).any():
            raise GrokscopeError(
                "bad config: the finite train and test sets share examples; the example space is too "
                "small for task.n_train + task.n_test (lower them or enlarge the vocabulary / length)"
            )

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        if self._train is not None:
            if batch_size <= 0 or batch_size >= len(self._train):
                return self._train
            return self._train.select(minibatch_indices(len(self._train), step, batch_size, seed))
        if batch_size <= 0:
            raise GrokscopeError("bad config: infinite data (task.n_train = 0) needs train.batch_size >= 1")
        batch = self.generate(step_generator(seed, step), batch_size)
        leaked = torch.isin(row_keys(batch.tokens), self.test_keys)
        if leaked.any():  # a held-out test example drawn by chance does not count
            batch.mask = batch.mask & ~leaked[:, None]
        return batch

    def eval_sets(self) -> dict[str, Batch]:
        return {"train": self._train_eval, "test": self._test}

    def split_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"test_tokens": self._test.tokens.numpy().astype(np.int32)}
        if self._train is not None:
            arrays["train_tokens"] = self._train.tokens.numpy().astype(np.int32)
        return arrays

    def check_split(self, arrays: dict[str, np.ndarray]) -> None:
        for name, ours in self.split_arrays().items():
            if name not in arrays or not np.array_equal(arrays[name], ours):
                raise GrokscopeError(
                    f"the saved {name} split differs from the one this version of grokscope draws "
                    "for the same config; the run folder comes from another version"
                )
