"""The sequence tasks of Zhou et al. 2023's RASP-L suite ("What Algorithms can Transformers Learn?
A Study in Length Generalization"): count, mode, copy (unique or repeated tokens), sort, parity.

Each is a `SequenceTask` (`prompt <sep> answer <eos>`), seeded, with a length range and finite or
infinite data; docs/lengths.md gives each format, its length and its RASP-L program. What
*length* means, per task:
- `count`: the number of integers written. Prompt `a b`, answer `a a+1 ... b` (b - a + 1 = length),
  over the integers 0..`n_values`-1, a uniform start.
- `mode`: the number of prompt tokens; answer the most frequent token (examples with a tie for
  the most frequent are redrawn).
- `copy`: the number of prompt tokens; answer the prompt. `unique = true`: distinct tokens;
  `false`: each token uniform over `vocab` symbols (repeats common when `vocab` is small).
- `sort`: the number of prompt tokens; answer them in ascending order (`unique` as for copy).
- `parity`: the number of bits; answer the parity, or with `scratchpad = true` the running
  parity after each bit (the last one is the answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.errors import GrokscopeError, require
from grokscope.registry import TASKS
from grokscope.tasks.sequence import Parts, SequenceConfig, SequenceTask


def _valid(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[batch, width] bool: the entries inside each example's length."""
    return torch.arange(width)[None, :] < lengths[:, None]


# ----------------------------------------------------------------------------- count
@dataclass
class CountConfig(SequenceConfig):
    """`kind = "count"`: write the integers from a to b; length = b - a + 1."""

    kind: str = "count"
    n_values: int = 32  # integers 0..n_values-1 are the symbols

    def validate(self) -> None:
        super().validate()
        require(
            self.n_values >= self.max_len,
            f"task.n_values = {self.n_values} cannot hold a count of {self.max_len}; raise task.n_values "
            f"to at least {self.max_len} (the longest length trained or tested)",
        )


@TASKS.register("count")
class CountTask(SequenceTask):
    config_class = CountConfig

    def __init__(self, config: CountConfig, seed: int):
        self.n_symbols = config.n_values
        super().__init__(config, seed)

    def prompt_width(self, length: int) -> int:
        return 2

    def answer_width(self, length: int) -> int:
        return length

    def draw(self, g: torch.Generator, lengths: torch.Tensor) -> Parts:
        n, W = len(lengths), int(lengths.max())
        room = self.config.n_values - lengths + 1
        start = (torch.rand(n, generator=g, dtype=torch.float64) * room).long().clamp(max=room - 1)
        end = start + lengths - 1
        answer = start[:, None] + torch.arange(W)[None, :]
        return Parts(
            torch.stack([start, end], 1),
            torch.full((n,), 2),
            torch.where(_valid(lengths, W), answer, 0),
            lengths.clone(),
            {"length": lengths.clone(), "start": start, "end": end},
        )


# ----------------------------------------------------------------------------- mode
@dataclass
class ModeConfig(SequenceConfig):
    """`kind = "mode"`: the most frequent of `length` tokens over `vocab` symbols (no ties)."""

    kind: str = "mode"
    vocab: int = 8

    def validate(self) -> None:
        super().validate()
        require(self.vocab >= 2, f"task.vocab must be >= 2, got {self.vocab}")


@TASKS.register("mode")
class ModeTask(SequenceTask):
    config_class = ModeConfig

    def __init__(self, config: ModeConfig, seed: int):
        self.n_symbols = config.vocab
        super().__init__(config, seed)

    def prompt_width(self, length: int) -> int:
        return length

    def answer_width(self, length: int) -> int:
        return 1

    def draw(self, g: torch.Generator, lengths: torch.Tensor) -> Parts:
        n, W, V = len(lengths), int(lengths.max()), self.config.vocab
        valid = _valid(lengths, W)
        tokens = torch.zeros((n, W), dtype=torch.long)
        todo = torch.ones(n, dtype=torch.bool)
        for _ in range(400):  # redraw the rows with a tie (length 2: 1 - 1/vocab of them)
            idx = todo.nonzero()[:, 0]
            if not len(idx):
                break
            tokens[idx] = torch.randint(0, V, (len(idx), W), generator=g)
            counts = _counts(tokens[idx], valid[idx], V)
            top = counts.topk(2, dim=1).values
            todo[idx] = top[:, 0] == top[:, 1]
        if todo.any():
            raise GrokscopeError(
                "bad config: could not draw mode examples without a tie; raise task.vocab or task.min_len"
            )
        counts = _counts(tokens, valid, V)
        top = counts.topk(2, dim=1)
        mode = top.indices[:, 0]
        meta = {
            "length": lengths.clone(),
            "mode": mode,
            "mode_count": top.values[:, 0],
            "second_count": top.values[:, 1],
        }
        return Parts(tokens, lengths.clone(), mode[:, None], torch.ones(n, dtype=torch.long), meta)


def _counts(tokens: torch.Tensor, valid: torch.Tensor, vocab: int) -> torch.Tensor:
    """[batch, vocab]: how often each symbol occurs within each example's length."""
    onehot = torch.nn.functional.one_hot(tokens, vocab) * valid[..., None]
    return onehot.sum(1)


# ----------------------------------------------------------------------------- copy and sort
@dataclass
class ListConfig(SequenceConfig):
    """A list of `length` tokens over `vocab` symbols, distinct when `unique`."""

    vocab: int = 32
    unique: bool = True

    def validate(self) -> None:
        super().validate()
        require(self.vocab >= 2, f"task.vocab must be >= 2, got {self.vocab}")
        if self.unique:
            require(
                self.vocab >= self.max_len,
                f"task.unique: {self.max_len} distinct tokens need task.vocab >= {self.max_len} "
                f"(got {self.vocab}); raise task.vocab to the longest length trained or tested",
            )


@dataclass
class CopyConfig(ListConfig):
    """`kind = "copy"`: repeat the prompt."""

    kind: str = "copy"


@dataclass
class SortConfig(ListConfig):
    """`kind = "sort"`: the prompt in ascending order."""

    kind: str = "sort"


class ListTask(SequenceTask):
    """Prompt = a list of tokens; the answer is a function of it, as long as it."""

    config: ListConfig

    def __init__(self, config: ListConfig, seed: int):
        self.n_symbols = config.vocab
        super().__init__(config, seed)

    def prompt_width(self, length: int) -> int:
        return length

    def answer_width(self, length: int) -> int:
        return length

    def draw_list(self, g: torch.Generator, lengths: torch.Tensor) -> torch.Tensor:
        n, W, V = len(lengths), int(lengths.max()), self.config.vocab
        if self.config.unique:
            return torch.rand((n, V), generator=g).argsort(dim=1)[:, :W]
        return torch.randint(0, V, (n, W), generator=g)

    def answer_of(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def draw(self, g: torch.Generator, lengths: torch.Tensor) -> Parts:
        tokens = self.draw_list(g, lengths)
        valid = _valid(lengths, tokens.shape[1])
        tokens = torch.where(valid, tokens, 0)
        n_distinct = (_counts(tokens, valid, self.config.vocab) > 0).sum(1)
        meta = {"length": lengths.clone(), "n_distinct": n_distinct}
        return Parts(tokens, lengths.clone(), self.answer_of(tokens, lengths), lengths.clone(), meta)


@TASKS.register("copy")
class CopyTask(ListTask):
    config_class = CopyConfig

    def answer_of(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return tokens.clone()


@TASKS.register("sort")
class SortTask(ListTask):
    config_class = SortConfig

    def answer_of(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = _valid(lengths, tokens.shape[1])
        return (
            torch.where(valid, tokens, self.config.vocab).sort(dim=1).values.clamp(max=self.config.vocab - 1)
        )


# ----------------------------------------------------------------------------- parity
@dataclass
class ParityConfig(SequenceConfig):
    """`kind = "parity"`: the parity of `length` bits, or the running parities (`scratchpad`)."""

    kind: str = "parity"
    scratchpad: bool = False


@TASKS.register("parity")
class ParityTask(SequenceTask):
    config_class = ParityConfig
    n_symbols = 2

    def prompt_width(self, length: int) -> int:
        return length

    def answer_width(self, length: int) -> int:
        return length if self.config.scratchpad else 1

    def draw(self, g: torch.Generator, lengths: torch.Tensor) -> Parts:
        n, W = len(lengths), int(lengths.max())
        bits = torch.where(_valid(lengths, W), torch.randint(0, 2, (n, W), generator=g), 0)
        running = bits.cumsum(1) % 2
        parity = running.gather(1, (lengths - 1)[:, None])[:, 0]
        if self.config.scratchpad:
            answer, answer_len = running, lengths.clone()
        else:
            answer, answer_len = parity[:, None], torch.ones(n, dtype=torch.long)
        meta = {"length": lengths.clone(), "parity": parity, "ones": bits.sum(1)}
        return Parts(bits, lengths.clone(), answer, answer_len, meta)
