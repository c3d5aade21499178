"""Tasks whose examples come from a seeded generator: finite (a stored, seeded training set) or
infinite (a fresh batch per step), with a held-out test set either way.

A subclass implements `generate(g, n) -> Batch`; this base turns it into train batches, eval
sets and a split file, and checks that finite train and test sets share no example.
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.tasks.base import Batch, Task, all_true, drop_examples, minibatch_indices, step_generator
from grokscope.tasks.sampling import row_keys
from grokscope.tasks.split import InvalidSplit, same_split, saved_array


class GeneratedTask(Task):
    n_train: int
    n_test: int

    def generate(self, g: torch.Generator, n: int) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    def _setup_split(self, seed: int) -> None:
        g = torch.Generator().manual_seed((seed * 7919 + 101) % 2**63)
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
        return drop_examples(batch, torch.isin(row_keys(batch.tokens), self.test_keys))

    def eval_sets(self) -> dict[str, Batch]:
        return {"train": self._train_eval, "test": self._test}

    def split_arrays(self) -> dict[str, np.ndarray]:
        """The test set and any finite train set, whole (tokens, targets, mask, meta): a saved split
        then rebuilds exactly, whatever the generator draws in another version."""
        sets = {"test": self._test} if self._train is None else {"test": self._test, "train": self._train}
        arrays = {}
        for name, b in sets.items():
            arrays[f"{name}_tokens"] = b.tokens.numpy().astype(np.int32)
            arrays[f"{name}_targets"] = b.targets.numpy().astype(np.int32)
            arrays[f"{name}_mask"] = b.mask.numpy()
            arrays.update({f"{name}_meta_{k}": v.numpy() for k, v in b.meta.items()})
        return arrays

    def use_split(self, arrays: dict[str, np.ndarray]) -> bool:
        ours = self.split_arrays()
        if same_split(arrays, ours):
            return False
        finite = "train_tokens" in arrays
        if all(k.endswith("_tokens") for k in arrays) and same_split(
            arrays, {k: v for k, v in ours.items() if k.endswith("_tokens")}
        ):
            return False  # an older grokscope's file (tokens only) of the very split drawn here
        if finite != (self._train is not None):
            raise InvalidSplit(
                f"it holds {'a finite' if finite else 'no'} training set, but the config has "
                f"task.n_train = {self.n_train}"
            )
        sets = {}
        for name in ("test", "train") if finite else ("test",):
            tokens = saved_array(arrays, f"{name}_tokens", 2, 0, self.d_vocab)
            if tokens.shape[1] != self.n_ctx:
                raise InvalidSplit(
                    f"{name} sequences have {tokens.shape[1]} tokens; the task has {self.n_ctx}"
                )
            if f"{name}_targets" not in arrays:
                raise InvalidSplit(
                    f"it holds only the {name} tokens (an older grokscope saved no targets), and they differ "
                    "from what this config draws; retrain the run with this version"
                )
            targets = torch.from_numpy(
                saved_array(arrays, f"{name}_targets", 2, 0, self.d_vocab_out).astype(np.int64)
            )
            mask = arrays.get(f"{name}_mask")
            meta_keys = [k for k in arrays if k.startswith(f"{name}_meta_")]
            sets[name] = Batch(
                torch.from_numpy(tokens.astype(np.int64)),
                targets,
                all_true(targets) if mask is None else torch.from_numpy(mask.astype(bool)),
                {k[len(f"{name}_meta_") :]: torch.from_numpy(arrays[k].copy()) for k in meta_keys},
            )
        self._test = sets["test"]
        self.test_keys = row_keys(self._test.tokens)
        if finite:
            self._train = self._train_eval = sets["train"]
            if torch.isin(row_keys(self._train.tokens), self.test_keys).any():
                raise InvalidSplit("its finite train and test sets share examples")
        return True
