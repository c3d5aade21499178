"""Sequence tasks with a variable-length prompt and an answer: `prompt <sep> answer <eos> <pad>...`.

The shared base of the RASP-L suite (`grokscope.tasks.rasp`): a subclass draws prompts and answers
of a given *length* (its own definition: the items of a list, the bits of a string, the integers
to count); this base pads them into one layout, so a length study can build the same task with
room for longer lengths and read any length through the same code.

Vocabulary: the task's symbols 0..S-1, then `<sep>` (S), `<eos>` (S+1), `<pad>` (S+2).
Loss: logits at position t predict token t+1; the loss positions run from the earliest possible
`<sep>` to the second-last position, and `mask` selects those whose next token is an answer token
or the EOS (loss on answer tokens only).

`Batch.meta`: `length` [B] (the task's length), `sep_pos` [B], `answer_len` [B], `digit_index`
[B, T] (the 1-based index of a token within its segment, prompt or answer; 0 for `<sep>`, EOS and
padding, so the Abacus encodings read item indices), plus the subclass's labels.

Data: infinite (`n_train = 0`, a fresh seeded batch per step) or finite (`n_train` distinct
examples, disjoint from the test set). With infinite data the test set is a seeded sample of the
same distribution, not held out of the stream: short lengths have few distinct examples (2 parity
strings of length 1), and removing them from training would remove those lengths. The length
study reads its own fresh problems per length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.errors import GrokscopeError, require
from grokscope.tasks.base import Batch, step_generator
from grokscope.tasks.generated import GeneratedTask
from grokscope.tasks.sampling import first_occurrences, row_keys

MAX_LEN = 400


@dataclass
class SequenceConfig:
    """Fields every sequence task has: its length range and its data."""

    kind: str = ""
    min_len: int = 1
    max_len: int = 10
    n_train: int = 0  # 0 = infinite data
    n_test: int = 500
    split_seed: int | None = None

    def validate(self) -> None:
        require(self.min_len >= 1, f"task.min_len must be >= 1, got {self.min_len}")
        require(
            self.min_len <= self.max_len <= MAX_LEN,
            f"task.max_len must be in [task.min_len, {MAX_LEN}], got {self.max_len}",
        )
        require(self.n_train >= 0, "task.n_train must be >= 0 (0 = infinite data)")
        require(self.n_test >= 1, f"task.n_test must be >= 1, got {self.n_test}")


@dataclass
class Parts:
    """Unpadded pieces of `n` examples: prompt and answer tokens left-aligned, their lengths, labels."""

    prompt: torch.Tensor  # [batch, prompt_width] int64 (entries past prompt_len are ignored)
    prompt_len: torch.Tensor  # [batch]
    answer: torch.Tensor  # [batch, answer_width] int64
    answer_len: torch.Tensor  # [batch]
    meta: dict[str, torch.Tensor]


class SequenceTask(GeneratedTask):
    """Base: subclasses set `n_symbols` and implement `prompt_width`, `answer_width` and `draw`."""

    config: SequenceConfig
    n_symbols: int

    def prompt_width(self, length: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def answer_width(self, length: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self, g: torch.Generator, lengths: torch.Tensor) -> Parts:  # pragma: no cover - abstract
        """Examples of the given lengths [batch]: prompts, answers and labels."""
        raise NotImplementedError

    def symbol_names(self) -> list[str]:
        return [str(i) for i in range(self.n_symbols)]

    def __init__(self, config: SequenceConfig, seed: int):
        self.config = config
        self.SEP, self.EOS, self.PAD = self.n_symbols, self.n_symbols + 1, self.n_symbols + 2
        self.d_vocab = self.d_vocab_out = self.n_symbols + 3
        self.n_ctx = self.prompt_width(config.max_len) + self.answer_width(config.max_len) + 2
        self.loss_positions = list(range(self.prompt_width(config.min_len), self.n_ctx - 1))
        self.n_train, self.n_test = config.n_train, config.n_test
        self._setup_split(seed if config.split_seed is None else config.split_seed)

    # ------------------------------------------------------------------ data
    def generate(self, g: torch.Generator, n: int) -> Batch:
        """`n` examples, lengths uniform over min_len..max_len."""
        lo, hi = self.config.min_len, self.config.max_len
        return self.encode(self.draw(g, torch.randint(lo, hi + 1, (n,), generator=g)))

    def generate_at(self, g: torch.Generator, n: int, length: int) -> Batch:
        """`n` examples of exactly `length` (within this task's max_len), for a length grid."""
        if not 1 <= length <= self.config.max_len:
            raise GrokscopeError(f"length {length} is outside 1..task.max_len = {self.config.max_len}")
        return self.encode(self.draw(g, torch.full((n,), length, dtype=torch.long)))

    def encode(self, parts: Parts) -> Batch:
        """Pad the pieces into `prompt <sep> answer <eos> <pad>...` with targets, mask and meta."""
        n, T = len(parts.prompt_len), self.n_ctx
        t = torch.arange(T)[None, :]
        pl, al = parts.prompt_len[:, None], parts.answer_len[:, None]
        in_prompt = t < pl
        in_answer = (t > pl) & (t <= pl + al)
        p_idx = t.clamp(max=max(parts.prompt.shape[1] - 1, 0)).expand(n, T)
        a_idx = (t - pl - 1).clamp(0, max(parts.answer.shape[1] - 1, 0))
        tokens = torch.full((n, T), self.PAD, dtype=torch.long)
        tokens = torch.where(in_prompt, parts.prompt.long().gather(1, p_idx), tokens)
        tokens = torch.where(in_answer, parts.answer.long().gather(1, a_idx), tokens)
        tokens = torch.where(t == pl, self.SEP, tokens)
        tokens = torch.where(t == pl + al + 1, self.EOS, tokens)
        index = torch.where(in_prompt, t + 1, torch.where(in_answer, t - pl, 0))
        pos = torch.tensor(self.loss_positions)
        targets = tokens[:, pos + 1]
        mask = (pos[None] >= pl) & (pos[None] <= pl + al)
        meta = {
            "sep_pos": parts.prompt_len.clone(),
            "answer_len": parts.answer_len.clone(),
            "digit_index": index,
            **parts.meta,
        }
        return Batch(tokens, targets, mask, meta)

    def _setup_split(self, seed: int) -> None:
        g = torch.Generator().manual_seed((seed * 7919 + 101) % 2**63)
        if not self.n_train:
            self._test = self.generate(g, self.n_test)
            self._train = None
            self._train_eval = self.generate(g, self.n_test)
        else:
            both = self._distinct(g, self.n_test + self.n_train)
            self._test = both.select(torch.arange(self.n_test))
            self._train = self._train_eval = both.select(torch.arange(self.n_test, len(both)))
        self.test_keys = row_keys(self._test.tokens)

    def _distinct(self, g: torch.Generator, n: int, rounds: int = 12) -> Batch:
        """`n` distinct examples, first occurrences in draw order (test first, then train)."""
        parts: list[Batch] = []
        keys = torch.empty(0, dtype=torch.long)
        m = max(64, int(n * 1.2))
        for _ in range(rounds):
            b = self.generate(g, m)
            parts.append(b)
            keys = torch.cat([keys, row_keys(b.tokens)])
            idx = first_occurrences(keys)
            if len(idx) >= n:
                whole = Batch(
                    torch.cat([p.tokens for p in parts]),
                    torch.cat([p.targets for p in parts]),
                    torch.cat([p.mask for p in parts]),
                    {k: torch.cat([p.meta[k] for p in parts]) for k in parts[0].meta},
                )
                return whole.select(idx[:n])
            m *= 2
        raise GrokscopeError(
            f"bad config: could not draw {n} distinct {self.config.kind} examples of lengths "
            f"{self.config.min_len}..{self.config.max_len}; lower task.n_train + task.n_test or widen the lengths"
        )

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        if self._train is None:  # infinite data: a fresh batch; the test set is not held out of it
            if batch_size <= 0:
                raise GrokscopeError(
                    "bad config: infinite data (task.n_train = 0) needs train.batch_size >= 1"
                )
            return self.generate(step_generator(seed, step), batch_size)
        return super().train_batch(step, batch_size, seed)

    # ------------------------------------------------------------------ text
    def token_names(self) -> list[str]:
        return self.symbol_names() + ["<sep>", "<eos>", "<pad>"]

    def decode(self, tokens: torch.Tensor, strip_pad: bool = True) -> list[str]:
        """Token ids [n, T] -> space-separated text, e.g. `3 1 2 <sep> 1 2 3 <eos>`."""
        names = self.token_names()
        texts = []
        for row in tokens.tolist():
            if strip_pad:
                while row and row[-1] == self.PAD:
                    row.pop()
            texts.append(" ".join(names[i] for i in row))
        return texts
