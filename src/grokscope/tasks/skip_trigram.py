"""Skip trigrams `A ... B -> C`: the grokking paper's appendix task for attention-only models.

Each sequence holds filler tokens, one *key* token A at a random position and, last, a *query*
token B; the answer C = table[A, B] is a fixed random table (seeded by `table_seed`). The model
must attend from B back to A, skipping the fillers: the skip-trigram circuit of a 1-layer
attention-only transformer. Token ids: keys 0..n_keys-1, queries next, fillers last; answers are
key ids. One loss position (the query); meta: `key`, `key_pos`, `query` [B].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.errors import require
from grokscope.registry import TASKS
from grokscope.tasks.base import Batch, all_true
from grokscope.tasks.generated import GeneratedTask


@dataclass
class SkipTrigramConfig:
    """`kind = "skip_trigram"`: answer = table[key token, final query token]."""

    kind: str = "skip_trigram"
    n_keys: int = 16
    n_queries: int = 4
    n_fillers: int = 16
    seq_len: int = 12
    table_seed: int = 0
    n_train: int = 0  # 0 = infinite data
    n_test: int = 1000
    split_seed: int | None = None

    def validate(self) -> None:
        require(self.n_keys >= 2, "task.n_keys must be >= 2")
        require(self.n_queries >= 1, "task.n_queries must be >= 1")
        require(self.n_fillers >= 1, "task.n_fillers must be >= 1")
        require(self.seq_len >= 2, "task.seq_len must be >= 2 (a key and a query)")
        require(self.n_train >= 0, "task.n_train must be >= 0 (0 = infinite data)")
        require(self.n_test >= 1, "task.n_test must be >= 1")
        space = self.n_keys * self.n_queries * (self.seq_len - 1) * self.n_fillers ** (self.seq_len - 2)
        require(
            self.n_train + self.n_test <= space // 2,
            f"task.n_train + task.n_test = {self.n_train + self.n_test} is too large for the {space} "
            "distinct sequences; train and test would overlap",
        )


@TASKS.register("skip_trigram")
class SkipTrigramTask(GeneratedTask):
    config_class = SkipTrigramConfig

    def __init__(self, config: SkipTrigramConfig, seed: int):
        self.config = config
        c = config
        self.d_vocab = c.n_keys + c.n_queries + c.n_fillers
        self.d_vocab_out = c.n_keys
        self.n_ctx = c.seq_len
        self.loss_positions = [c.seq_len - 1]
        self.table = torch.randint(
            0, c.n_keys, (c.n_keys, c.n_queries), generator=torch.Generator().manual_seed(c.table_seed)
        )
        self.n_train, self.n_test = c.n_train, c.n_test
        self._setup_split(seed if c.split_seed is None else c.split_seed)

    def generate(self, g: torch.Generator, n: int) -> Batch:
        c = self.config
        T = c.seq_len
        filler0 = c.n_keys + c.n_queries
        tokens = filler0 + torch.randint(0, c.n_fillers, (n, T), generator=g)
        key = torch.randint(0, c.n_keys, (n,), generator=g)
        key_pos = torch.randint(0, T - 1, (n,), generator=g)
        query = torch.randint(0, c.n_queries, (n,), generator=g)
        tokens[torch.arange(n), key_pos] = key
        tokens[:, T - 1] = c.n_keys + query
        answer = self.table[key, query]
        return Batch(
            tokens,
            answer[:, None],
            all_true(answer[:, None]),
            {"key": key, "key_pos": key_pos, "query": query},
        )

    def token_names(self) -> list[str]:
        c = self.config
        return (
            [f"K{i}" for i in range(c.n_keys)]
            + [f"Q{i}" for i in range(c.n_queries)]
            + [f"f{i}" for i in range(c.n_fillers)]
        )
