"""Multi-digit addition `a+b=c` as a character-level sequence task (Nanda et al. 2023, appendix;
Quirke & Barez 2024), in fixed-width or variable-length form, optionally reversed.

Vocabulary: digits 0-9 are tokens 0-9, then `+` (10), `=` (11), EOS (12), PAD (13); with index
hints, then the hint tokens `<h0>`..`<hM>` (14..14+M, M = `max_digits`).

Formats (`task.format`):
- `fixed`: operands zero-padded to `max_digits`, answer `max_digits + 1` digits, no EOS:
  `00123+04567=004690`. Every example has the same layout.
- `varlen`: no padding inside numbers, EOS after the answer, PAD up to the context:
  `12+31=43<eos><pad>...`.
`reverse_operands` / `reverse_answer` write those numbers least-significant digit first.
`index_hints` (Zhou et al. 2023, "What Algorithms can Transformers Learn?") writes a hint token
before every digit of a, b and the answer naming its column (`<hc>` for the digit of 10**c), so
digits of one column carry the same hint in all three numbers, in written order:
`<h2>1<h1>2<h0>3+<h1>4<h0>5=<h2>1<h1>6<h0>8<eos>` (varlen; reversed numbers run `<h0>`, `<h1>`, ...).
The answer's hints are targets: the model writes them itself, so greedy generation needs nothing
more. Each number then takes twice its digits in tokens (n_ctx 6M+4 fixed, 6M+5 varlen).
(Further format options belong in `encode()` below: it is the one place that turns digits into
token positions.)

Loss: logits at position t predict token t+1 (`loss_positions[k]` = t, `targets[:, k]` = token t+1).
Fixed format: the positions of `=` and the first `max_digits` answer digits (mask all true).
Varlen: every position from the earliest possible `=` to the second-last; `mask` selects those
whose next token is an answer digit or the EOS. With index hints the answer's hint tokens are
targets too (fixed: 2(M+1) loss positions, alternately predicting a hint and its digit).

`Batch.meta` (leading dimension = examples; column c = digit of 10**c, units first; see
`grokscope.tasks.carries` for the carry definitions):
- `a_digits`, `b_digits` [B, M] and `sum_digits`, `carry_in`, `carry_out`, `sum_is_9`, `ripple`,
  `cascade_len` [B, M+1] (M = max_digits, M+1 = `task.n_columns` answer columns);
- `len_a`, `len_b`, `len_sum` [B] (digits without leading zeros), `max_cascade`, `carry_class` [B]
  (0..5 for S0..S5), `eq_pos` [B] (position of `=`); `a`, `b`, `sum` [B] int64 when M <= 18;
- `digit_index` [B, T]: for each digit token, its 1-based index within its own number *in written
  order* -- from the most significant digit in MSD-first numbers, from the least significant digit
  in reversed numbers (padding zeros of the fixed format count as digits); 0 for non-digit tokens
  (hint tokens included: Abacus reads digits only);
- `column` [B, T]: the power of ten of each digit token, -1 for non-digit tokens (hints too);
- `answer_column` [B, K]: the column of the answer digit each loss position predicts, -1 for EOS,
  hint targets and masked positions. `per_position(batch, "carry_in")` gathers column metadata to [B, K].

Data: infinite (`n_train = 0`, a fresh seeded batch per step that skips held-out test examples) or
finite (`n_train` distinct examples drawn with the test set and saved in the run folder). Eval sets:
`train` (finite: the first max(n_test, 1000) training examples; infinite: a fixed sample of the
stream), `test`, stress sets `S0`..`S5` (carry classes; those the digit range allows) and `edge`
(99999+1, 99999+99999, 11111+88889, 50000+50000, ... at every width).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from grokscope.errors import GrokscopeError, require
from grokscope.registry import TASKS
from grokscope.tasks import sampling as smp
from grokscope.tasks.base import Batch, Task, drop_examples, minibatch_indices, step_generator
from grokscope.tasks.carries import N_CLASSES, column_sums, int_to_digits, number_lengths
from grokscope.tasks.split import InvalidSplit, same_split, saved_array

PLUS, EQUALS, EOS, PAD = 10, 11, 12, 13
TOKEN_NAMES = [str(d) for d in range(10)] + ["+", "=", "<eos>", "<pad>"]
HINT0 = len(TOKEN_NAMES)  # index hint of column c is token HINT0 + c (only with task.index_hints)
MAX_DIGITS = 60


def hint_names(n_columns: int) -> list[str]:
    """Names of the index-hint tokens `<h0>`..`<h{n_columns - 1}>`."""
    return [f"<h{c}>" for c in range(n_columns)]


@dataclass
class AdditionConfig:
    """`kind = "addition"`: a + b with operands of min_digits..max_digits digits, base 10."""

    kind: str = "addition"
    min_digits: int = 1
    max_digits: int = 5
    format: str = field(default="fixed", metadata={"choices": ("fixed", "varlen")})
    reverse_operands: bool = False
    reverse_answer: bool = False
    index_hints: bool = False  # a hint token naming its column before every digit (Zhou et al. 2023)
    sampling: str = field(default="uniform", metadata={"choices": ("uniform", "balanced")})
    short_weight: float = 1.0  # multiplies the probability of operand lengths below max_digits
    carry_heavy: float = 0.0  # fraction of examples rewritten to have many sum-9 columns and carries
    n_train: int = 0  # 0 = infinite data
    n_test: int = 1000
    n_stress: int = 200  # examples per stress set S0..S5; 0 = none
    split_seed: int | None = None

    def validate(self) -> None:
        require(self.min_digits >= 1, f"task.min_digits must be >= 1, got {self.min_digits}")
        require(
            self.min_digits <= self.max_digits <= MAX_DIGITS,
            f"task.max_digits must be in [task.min_digits, {MAX_DIGITS}], got {self.max_digits}",
        )
        require(self.short_weight > 0, "task.short_weight must be > 0")
        require(0 <= self.carry_heavy <= 1, "task.carry_heavy must be in [0, 1]")
        require(self.n_train >= 0, "task.n_train must be >= 0 (0 = infinite data)")
        require(self.n_test >= 1, "task.n_test must be >= 1")
        require(self.n_stress >= 0, "task.n_stress must be >= 0")
        space = self.n_examples()
        require(
            self.n_test <= space,
            f"task.n_test = {self.n_test} is larger than the {space} distinct examples with "
            f"{self.min_digits}..{self.max_digits}-digit operands",
        )
        if self.n_train:
            require(
                self.n_train + self.n_test <= space,
                f"task.n_train + task.n_test = {self.n_train + self.n_test} exceeds the {space} distinct "
                "examples, so the finite train and test sets would overlap; lower them or widen the digits",
            )
        else:
            require(
                2 * self.n_test <= space,
                f"task.n_test = {self.n_test} would hold out more than half of the {space} distinct "
                "examples from the infinite training stream; lower it or widen the digits",
            )

    def n_examples(self) -> int:
        """Distinct (a, b) pairs with operand lengths in [min_digits, max_digits]."""
        per_operand = sum(smp.count_numbers(L) for L in range(self.min_digits, self.max_digits + 1))
        return per_operand**2


@dataclass
class Operands:
    """Column-indexed operand digits and lengths of a set of examples."""

    A: torch.Tensor  # [n, M]
    B: torch.Tensor  # [n, M]
    la: torch.Tensor  # [n]
    lb: torch.Tensor  # [n]

    def select(self, idx: torch.Tensor) -> Operands:
        return Operands(self.A[idx], self.B[idx], self.la[idx], self.lb[idx])

    @staticmethod
    def cat(parts: list[Operands]) -> Operands:
        return Operands(*(torch.cat(t) for t in zip(*[(p.A, p.B, p.la, p.lb) for p in parts], strict=True)))


@TASKS.register("addition")
class AdditionTask(Task):
    config_class = AdditionConfig

    def __init__(self, config: AdditionConfig, seed: int):
        self.config = config
        cfg = config
        self.M = cfg.max_digits
        self.n_columns = self.M + 1
        self.fixed = cfg.format == "fixed"
        self.index_hints = bool(cfg.index_hints)
        self._names = TOKEN_NAMES + (hint_names(self.n_columns) if self.index_hints else [])
        self.d_vocab = len(self._names)
        self.d_vocab_out = len(self._names)
        s = 2 if self.index_hints else 1  # tokens per digit: the digit, after its hint
        self.n_ctx = s * (3 * self.M + 1) + (2 if self.fixed else 3)
        if self.fixed:
            eq = 2 * s * self.M + 1
            self.loss_positions = list(range(eq, eq + s * self.n_columns))
        else:
            self.loss_positions = list(range(2 * s * cfg.min_digits + 1, self.n_ctx - 1))
        self.max_answer_tokens = s * self.n_columns + (0 if self.fixed else 1)
        self.length_probs = smp.length_probs(cfg.min_digits, self.M, cfg.sampling, cfg.short_weight)
        self.split_seed = seed if cfg.split_seed is None else cfg.split_seed

        g = torch.Generator().manual_seed((self.split_seed * 7919 + 17) % 2**63)
        if cfg.n_train:
            both = self._draw_distinct(cfg.n_train + cfg.n_test, g)
            # draw order favours small (len a, len b) cells early (they run out of fresh pairs
            # first), so split a seeded shuffle: every cell then lends the same share to the test set
            both = both.select(torch.randperm(len(both.la), generator=g))
            self.test_ops = both.select(torch.arange(cfg.n_test))
            self.train_ops = both.select(torch.arange(cfg.n_test, cfg.n_test + cfg.n_train))
        else:
            self.test_ops = self._draw_distinct(cfg.n_test, g)
            self.train_ops = None
        self.test_keys = smp.example_keys(self.test_ops.A, self.test_ops.B).sort().values
        self._evals: dict[str, Batch] | None = None
        self._train_full: Batch | None = None

    @property
    def d_vocab_read(self) -> int:
        """The fixed format without hints reads digits, '+' and '=' only (12 tokens: the original
        progress-measures layout); the others also read EOS, PAD or hint tokens."""
        return EQUALS + 1 if self.fixed and not self.index_hints else self.d_vocab

    @property
    def d_vocab_emitted(self) -> int:
        """The fixed format without hints predicts answer digits only (10 classes)."""
        return 10 if self.fixed and not self.index_hints else self.d_vocab_out

    # ------------------------------------------------------------------ sampling
    def draw(self, g: torch.Generator, n: int) -> Operands:
        """`n` examples from the training distribution (lengths, digits, carry-heavy rewriting)."""
        lo = self.config.min_digits
        la = smp.sample_lengths(g, n, lo, self.length_probs)
        lb = smp.sample_lengths(g, n, lo, self.length_probs)
        A = smp.random_digits(g, la, self.M)
        B = smp.random_digits(g, lb, self.M)
        if self.config.carry_heavy > 0:
            A, B = smp.carry_heavy(g, A, B, la, lb, self.config.carry_heavy)
        return Operands(A, B, la, lb)

    def _draw_distinct(self, n: int, g: torch.Generator, exclude: torch.Tensor | None = None) -> Operands:
        def draw(gen, m):
            o = self.draw(gen, m)
            return o.A, o.B, o.la, o.lb

        return Operands(*smp.draw_distinct(draw, n, g, exclude))

    def sample(self, n: int, seed: int, exclude_test: bool = True) -> Batch:
        """A fresh batch of `n` examples from the training distribution (skipping test examples)."""
        return self.encode(self._stream(step_generator(seed, 0), n, exclude_test)[0])

    def _stream(self, g: torch.Generator, n: int, exclude_test: bool) -> tuple[Operands, torch.Tensor]:
        """`n` examples; rows equal to a held-out test example are redrawn (then masked out)."""
        ops = self.draw(g, n)
        bad = torch.zeros(n, dtype=torch.bool)
        if exclude_test:
            for _ in range(16):
                bad = torch.isin(smp.example_keys(ops.A, ops.B), self.test_keys)
                if not bad.any():
                    break
                idx = bad.nonzero()[:, 0]
                fresh = self.draw(g, len(idx))
                ops.A[idx], ops.B[idx], ops.la[idx], ops.lb[idx] = fresh.A, fresh.B, fresh.la, fresh.lb
            bad = torch.isin(smp.example_keys(ops.A, ops.B), self.test_keys)
        return ops, bad

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        if self.train_ops is not None:
            n = len(self.train_ops.la)
            if batch_size <= 0 or batch_size >= n:
                if self._train_full is None:
                    self._train_full = self.encode(self.train_ops)
                return self._train_full
            return self.encode(self.train_ops.select(minibatch_indices(n, step, batch_size, seed)))
        if batch_size <= 0:
            raise GrokscopeError("bad config: infinite addition data needs train.batch_size >= 1")
        ops, leaked = self._stream(step_generator(seed, step), batch_size, exclude_test=True)
        return drop_examples(self.encode(ops), leaked)  # still a test example after 16 redraws

    # ------------------------------------------------------------------ encoding
    def encode(self, ops: Operands) -> Batch:
        """Tokens, targets, mask and metadata of a set of operands (vectorized over examples)."""
        cfg, M, T = self.config, self.M, self.n_ctx
        A, B = ops.A.long(), ops.B.long()
        n = len(A)
        info = column_sums(A, B)
        la, lb = number_lengths(A), number_lengths(B)
        ls = number_lengths(info["sum_digits"])
        if self.fixed:
            wa = wb = torch.full((n,), M)
            ws = torch.full((n,), M + 1)
        else:
            wa, wb, ws = la, lb, ls
        s = 2 if self.index_hints else 1  # tokens per digit (hint, digit)
        # segment starts: a at 0, '+' after a, b after it, '=' after b, then the answer and EOS
        plus = s * wa
        b0 = plus + 1
        eq = b0 + s * wb
        s0 = eq + 1
        eos = s0 + s * ws
        t = torch.arange(T)[None, :]
        tokens = torch.full((n, T), PAD, dtype=torch.long)
        column = torch.full((n, T), -1, dtype=torch.long)
        index = torch.zeros((n, T), dtype=torch.long)
        for start, width, digits, rev in (
            (torch.zeros(n, dtype=torch.long), wa, A, cfg.reverse_operands),
            (b0, wb, B, cfg.reverse_operands),
            (s0, ws, info["sum_digits"], cfg.reverse_answer),
        ):
            off = t - start[:, None]
            inside = (off >= 0) & (off < s * width[:, None])
            k = off // s  # the digit's 0-based place in written order
            col = k if rev else width[:, None] - 1 - k
            col = torch.where(inside, col, 0).clamp(0, digits.shape[1] - 1)
            if self.index_hints:
                hint = inside & (off % 2 == 0)
                digit = inside & ~hint
                tokens = torch.where(hint, HINT0 + col, tokens)
            else:
                digit = inside
            tokens = torch.where(digit, digits.gather(1, col), tokens)
            column = torch.where(digit, col, column)
            index = torch.where(digit, k + 1, index)
        tokens = torch.where(t == plus[:, None], PLUS, tokens)
        tokens = torch.where(t == eq[:, None], EQUALS, tokens)
        if not self.fixed:
            tokens = torch.where(t == eos[:, None], EOS, tokens)
        pos = torch.tensor(self.loss_positions)
        targets = tokens[:, pos + 1]
        last = eos - 1 if self.fixed else eos  # the last target is the final digit / the EOS
        mask = (pos[None] >= eq[:, None]) & (pos[None] < last[:, None] + 0)
        answer_column = torch.where(mask & (column[:, pos + 1] >= 0), column[:, pos + 1], -1)
        meta = {
            "a_digits": A,
            "b_digits": B,
            **info,
            "len_a": la,
            "len_b": lb,
            "len_sum": ls,
            "eq_pos": eq,
            "digit_index": index,
            "column": column,
            "answer_column": answer_column,
        }
        if M <= 18:
            powers = 10 ** torch.arange(M + 1, dtype=torch.long)
            meta["a"] = (A * powers[:M]).sum(1)
            meta["b"] = (B * powers[:M]).sum(1)
            meta["sum"] = (info["sum_digits"] * powers).sum(1)
        return Batch(tokens, targets, mask, meta)

    # ------------------------------------------------------------------ evaluation sets
    def eval_sets(self) -> dict[str, Batch]:
        if self._evals is None:
            cfg = self.config
            if self.train_ops is not None:  # a fixed subset: evaluating 20k examples often is slow
                n = min(len(self.train_ops.la), max(cfg.n_test, 1000))
                train = self.encode(self.train_ops.select(torch.arange(n)))
            else:
                train = self.sample(cfg.n_test, seed=self.split_seed * 7919 + 29)
            evals = {"train": train, "test": self.encode(self.test_ops)}
            g = torch.Generator().manual_seed((self.split_seed * 7919 + 31) % 2**63)
            if cfg.n_stress:
                for k in range(N_CLASSES):
                    ops = self.stress_operands(k, cfg.n_stress, g)
                    if ops is not None:
                        evals[f"S{k}"] = self.encode(ops)
            evals["edge"] = self.encode(self.edge_operands())
            self._evals = evals
        return self._evals

    def stress_operands(self, k: int, n: int, g: torch.Generator) -> Operands | None:
        """`n` examples of carry class S`k`, drawn by planting the class's columns and keeping those
        that land in it; None when the digit range cannot hold that class."""
        kept: list[Operands] = []
        have = 0
        for _ in range(20):
            ops = self.draw(g, 4 * n)
            ops = self._plant_class(k, ops, g)
            cls = column_sums(ops.A, ops.B)["carry_class"]
            ok = (cls == k).nonzero()[:, 0]
            kept.append(ops.select(ok))
            have += len(ok)
            if have >= n:
                return Operands.cat(kept).select(torch.arange(n))
        return Operands.cat(kept) if have >= 1 else None

    def _plant_class(self, k: int, ops: Operands, g: torch.Generator) -> Operands:
        n, M = ops.A.shape
        cols = torch.arange(M)[None, :]
        A, B = ops.A.clone(), ops.B.clone()
        if k == 0:  # every column sums to at most 9
            target = torch.randint(0, 10, (n, M), generator=g)
            A, B = smp.plant(g, A, B, ops.la, ops.lb, torch.ones(n, M, dtype=torch.bool), target)
            return Operands(A, B, ops.la, ops.lb)
        L = k - 1
        if k == N_CLASSES - 1:  # S5: a cascade through 4 or more columns
            L = 4 + (torch.rand(n, generator=g) * max(1, M - 5)).long()
        else:
            L = torch.full((n,), L)
        short = torch.minimum(ops.la, ops.lb)
        long_ = torch.maximum(ops.la, ops.lb)
        room = (torch.minimum(short, long_ - L)).clamp(min=0)  # generator column g < room
        gcol = (torch.rand(n, generator=g) * room).long()
        gen_sum = torch.randint(10, 19, (n, M), generator=g)
        A, B = smp.plant(g, A, B, ops.la, ops.lb, (cols == gcol[:, None]) & (room[:, None] > 0), gen_sum)
        nines = (cols > gcol[:, None]) & (cols <= (gcol + L)[:, None]) & (room[:, None] > 0)
        A, B = smp.plant(g, A, B, ops.la, ops.lb, nines, torch.full((n, M), 9))
        return Operands(A, B, ops.la, ops.lb)

    def edge_operands(self) -> Operands:
        """99..9+1, 99..9+99..9, 11..1+88..89, 50..0+50..0 (and swapped) at every allowed width."""
        cfg = self.config
        pairs = []
        for w in range(cfg.min_digits, cfg.max_digits + 1):
            nines, ones, five = 10**w - 1, (10**w - 1) // 9, 5 * 10 ** (w - 1)
            eights = 10**w - ones  # 88..89
            for a, b in ((nines, 1), (nines, nines), (ones, eights), (five, five), (0, 0)):
                pairs += [(a, b), (b, a)]
        lo, hi = 10 ** (cfg.min_digits - 1) if cfg.min_digits > 1 else 0, 10**cfg.max_digits
        pairs = list(dict.fromkeys((a, b) for a, b in pairs if lo <= a < hi and lo <= b < hi))
        A = torch.tensor([int_to_digits(a, self.M) for a, _ in pairs], dtype=torch.long)
        B = torch.tensor([int_to_digits(b, self.M) for _, b in pairs], dtype=torch.long)
        return Operands(A, B, number_lengths(A), number_lengths(B))

    # ------------------------------------------------------------------ split file
    def split_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "test_a": self.test_ops.A.numpy().astype(np.uint8),
            "test_b": self.test_ops.B.numpy().astype(np.uint8),
        }
        if self.train_ops is not None:
            arrays["train_a"] = self.train_ops.A.numpy().astype(np.uint8)
            arrays["train_b"] = self.train_ops.B.numpy().astype(np.uint8)
        return arrays

    def use_split(self, arrays: dict[str, np.ndarray]) -> bool:
        if same_split(arrays, self.split_arrays()):
            return False
        finite = "train_a" in arrays
        if finite != (self.train_ops is not None):
            raise InvalidSplit(
                f"it holds {'a finite' if finite else 'no'} training set, but the config has "
                f"task.n_train = {self.config.n_train}"
            )

        def ops(prefix: str) -> Operands:
            A, B = (
                torch.from_numpy(saved_array(arrays, f"{prefix}_{k}", 2, 0, 10).astype(np.int64))
                for k in "ab"
            )
            if A.shape != B.shape or A.shape[1] != self.M:
                raise InvalidSplit(f"{prefix} operands have shape {tuple(A.shape)}; expected [n, {self.M}]")
            return Operands(A, B, number_lengths(A), number_lengths(B))

        self.test_ops = ops("test")
        self.train_ops = ops("train") if finite else None
        self.test_keys = smp.example_keys(self.test_ops.A, self.test_ops.B).sort().values
        if (
            self.train_ops is not None
            and torch.isin(smp.example_keys(self.train_ops.A, self.train_ops.B), self.test_keys).any()
        ):
            raise InvalidSplit("its finite train and test sets share examples")
        self._evals = self._train_full = None
        return True

    def token_names(self) -> list[str]:
        return list(self._names)

    def decode(self, tokens: torch.Tensor, strip_pad: bool = True) -> list[str]:
        """Token ids [n, T] -> text, e.g. `12+31=43<eos>` (`<h1>1<h0>2+...` with index hints)."""
        names = self._names
        texts = []
        for row in tokens.tolist():
            if strip_pad:
                while row and row[-1] == PAD:
                    row.pop()
            texts.append("".join(names[i] for i in row))
        return texts


def per_position(batch: Batch, name: str, fill: int = -1) -> torch.Tensor:
    """Column metadata (e.g. `carry_in` [B, M+1]) gathered at each loss position -> [B, K]."""
    col = batch.meta["answer_column"]
    values = batch.meta[name].long().gather(1, col.clamp(min=0))
    return torch.where(col >= 0, values, fill)
