"""Counterfactual pairs: a clean input and a corrupted one that differ in the one thing whose use we
test, with both answers, so patching can ask "which components carry that thing to the output".

Each task has its corruption (`make_pairs`):
- modular: change `a` (or `b`) to another residue; the answer changes with it.
- addition: change one operand digit (in a chosen column or a random one), optionally forcing the
  carry into a chosen column to flip (`carry_flip = "yes"`) or stay (`"no"`), read from the carry
  metadata of `tasks/carries.py`; pairs keep the clean example's token layout.
- induction: change the repeated token at one offset of the repeated stretch, in both copies, so the
  induction position's answer becomes the new token.
- skip trigram: change the skip (key) token A to one whose table entry differs.
Or read them from a JSONL file of token sequences (`read_pairs_jsonl`).

The metric (`logit_diff`) is the clean answer's logit minus the corrupted answer's at each answer
position where they differ, float64, averaged over those positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from grokscope.errors import GrokscopeError
from grokscope.files import read_bytes
from grokscope.tasks import Batch, Task


@dataclass
class Pairs:
    """Clean and corrupted inputs of equal layout, with both answers at each loss position."""

    clean: Batch
    corrupt: Batch
    clean_answer: torch.Tensor  # [batch, n_loss] int64
    corrupt_answer: torch.Tensor  # [batch, n_loss] int64
    mask: torch.Tensor  # [batch, n_loss] bool: positions scored (loss and logit difference)
    loss_positions: list[int]
    description: str = ""

    def __len__(self) -> int:
        return len(self.clean)

    @property
    def differs(self) -> torch.Tensor:  # [batch, n_loss] bool: where the logit difference is read
        return self.mask & (self.clean_answer != self.corrupt_answer)

    def select(self, index: torch.Tensor) -> Pairs:
        return Pairs(
            self.clean.select(index),
            self.corrupt.select(index),
            self.clean_answer[index],
            self.corrupt_answer[index],
            self.mask[index],
            self.loss_positions,
            self.description,
        )

    def to(self, device: torch.device) -> Pairs:
        def move(b: Batch) -> Batch:
            return Batch(
                b.tokens.to(device),
                b.targets.to(device),
                b.mask.to(device),
                {k: v.to(device) for k, v in b.meta.items()},
            )

        return Pairs(
            move(self.clean),
            move(self.corrupt),
            self.clean_answer.to(device),
            self.corrupt_answer.to(device),
            self.mask.to(device),
            self.loss_positions,
            self.description,
        )


def logit_diff(
    logits: torch.Tensor,  # [batch, n_loss, d_vocab_out] at the loss positions
    pairs: Pairs,
) -> torch.Tensor:  # [] float64
    """Mean over differing answer positions of logit[clean answer] - logit[corrupted answer]."""
    x = logits.double()
    d = (
        x.gather(-1, pairs.clean_answer[..., None])[..., 0]
        - x.gather(-1, pairs.corrupt_answer[..., None])[..., 0]
    )
    w = pairs.differs.double()
    return (d * w).sum() / w.sum().clamp(min=1)


def logit_diff_by_position(logits: torch.Tensor, pairs: Pairs) -> torch.Tensor:  # [n_loss] float64
    x = logits.double()
    d = (
        x.gather(-1, pairs.clean_answer[..., None])[..., 0]
        - x.gather(-1, pairs.corrupt_answer[..., None])[..., 0]
    )
    w = pairs.differs.double()
    return (d * w).sum(0) / w.sum(0).clamp(min=1)


# ----------------------------------------------------------------------------- per task


def make_pairs(
    task: Task,
    base: Batch,
    seed: int = 0,
    operand: str = "a",
    column: int = -1,
    carry_column: int = -1,
    carry_flip: str = "any",
) -> Pairs:
    """The task's counterfactual pairs built on the examples of `base` (see the module doc)."""
    kind = getattr(getattr(task, "config", None), "kind", "")
    g = torch.Generator().manual_seed(10_000 + seed)
    if kind == "modular":
        return _modular(task, base, g, operand)
    if kind == "addition":
        return _addition(task, base, g, operand, column, carry_column, carry_flip)
    if kind == "induction":
        return _induction(task, base, g)
    if kind == "skip_trigram":
        return _skip_trigram(task, base, g)
    raise GrokscopeError(f"no counterfactual pairs for task kind {kind!r}; pass --pairs FILE.jsonl")


def _pairs(task: Task, clean: Batch, corrupt: Batch, description: str) -> Pairs:
    if len(clean) == 0:
        raise GrokscopeError(f"no example admits the corruption ({description}); loosen the pair options")
    return Pairs(
        clean,
        corrupt,
        clean.targets,
        corrupt.targets,
        clean.mask & corrupt.mask,
        list(task.loss_positions),
        description,
    )


def _other(g: torch.Generator, x: torch.Tensor, n: int) -> torch.Tensor:
    """A uniformly random value in 0..n-1 different from each of x."""
    return (x + torch.randint(1, n, x.shape, generator=g)) % n


def _modular(task, base: Batch, g: torch.Generator, operand: str) -> Pairs:
    if operand not in ("a", "b"):
        raise GrokscopeError(f"--operand must be a or b for a modular task, got {operand!r}")
    p = task.p
    col = 0 if operand == "a" else 1
    tokens = base.tokens.clone()
    tokens[:, col] = _other(g, tokens[:, col], p)
    labels = task.labels[tokens[:, 0] * p + tokens[:, 1]]
    corrupt = Batch(tokens, labels[:, None], base.mask.clone(), {})
    keep = labels != base.targets[:, 0]  # ops other than add/subtract may keep the answer
    return _pairs(task, base.select(keep), corrupt.select(keep), f"modular: change {operand}")


def _addition(task, base: Batch, g: torch.Generator, operand, column, carry_column, carry_flip) -> Pairs:
    from grokscope.tasks.addition import Operands
    from grokscope.tasks.carries import column_sums, number_lengths

    M = task.M
    if operand not in ("a", "b"):
        raise GrokscopeError(f"--operand must be a or b, got {operand!r}")
    if not -1 <= column < M:
        raise GrokscopeError(f"--column must be -1 (random) or an operand column 0..{M - 1}, got {column}")
    if not -1 <= carry_column <= M:
        raise GrokscopeError(f"--carry-column must be -1 (the column above) or 0..{M}, got {carry_column}")
    if carry_flip not in ("any", "yes", "no"):
        raise GrokscopeError(f"--carry-flip must be any, yes or no, got {carry_flip!r}")
    A, B = base.meta["a_digits"].long(), base.meta["b_digits"].long()
    n = len(A)
    rows = torch.arange(n)
    col = torch.randint(0, M, (n,), generator=g) if column < 0 else torch.full((n,), column)
    ccol = (col + 1).clamp(max=M) if carry_column < 0 else torch.full((n,), carry_column)
    X = A if operand == "a" else B
    old_carry = base.meta["carry_in"][rows, ccol]
    ok = torch.zeros(n, 10, dtype=torch.bool)
    for d in range(10):  # each replacement digit, checked for every example at once
        X2 = X.clone()
        X2[rows, col] = d
        info = column_sums(X2, B) if operand == "a" else column_sums(A, X2)
        good = X[rows, col] != d
        flipped = info["carry_in"][rows, ccol] != old_carry
        if carry_flip == "yes":
            good &= flipped
        elif carry_flip == "no":
            good &= ~flipped
        if not task.fixed:  # varlen: keep the token layout (lengths of a, b and the sum)
            good &= number_lengths(X2) == number_lengths(X)
            good &= number_lengths(info["sum_digits"]) == base.meta["len_sum"]
        ok[:, d] = good
    choice = torch.where(ok, torch.rand(n, 10, generator=g), -1.0).argmax(1)
    keep = ok.any(1)
    X2 = X.clone()
    X2[rows, col] = choice
    A2, B2 = (X2, B) if operand == "a" else (A, X2)
    corrupt = task.encode(Operands(A2, B2, number_lengths(A2), number_lengths(B2)))
    keep &= (corrupt.meta["eq_pos"] == base.meta["eq_pos"]) & (corrupt.mask == base.mask).all(1)
    where = "a random column" if column < 0 else f"column {column}"
    flip = {"any": "", "yes": ", carry flips", "no": ", carry kept"}[carry_flip]
    return _pairs(
        task, base.select(keep), corrupt.select(keep), f"addition: change {operand} digit in {where}{flip}"
    )


def _induction(task, base: Batch, g: torch.Generator) -> Pairs:
    L, V = task.config.sub_len, task.config.vocab
    n = len(base)
    rows = torch.arange(n)
    j = torch.randint(1, L, (n,), generator=g)
    src, dst = base.meta["src_start"] + j, base.meta["copy_start"] + j
    tokens = base.tokens.clone()
    new = _other(g, tokens[rows, src], V)
    tokens[rows, src] = new
    tokens[rows, dst] = new
    corrupt = Batch(tokens, tokens[:, 1:].clone(), base.mask.clone(), dict(base.meta))
    return _pairs(task, base, corrupt, "induction: change one repeated token (both copies)")


def _skip_trigram(task, base: Batch, g: torch.Generator) -> Pairs:
    key, query, key_pos = base.meta["key"], base.meta["query"], base.meta["key_pos"]
    n, K = len(key), task.config.n_keys
    table = task.table
    ok = table[key, query][:, None] != table[:, query].T  # [batch, n_keys]
    choice = torch.where(ok, torch.rand(n, K, generator=g), -1.0).argmax(1)
    keep = ok.any(1)
    tokens = base.tokens.clone()
    tokens[torch.arange(n), key_pos] = choice
    answer = table[choice, query]
    corrupt = Batch(tokens, answer[:, None], base.mask.clone(), {**base.meta, "key": choice})
    return _pairs(task, base.select(keep), corrupt.select(keep), "skip trigram: change the skip token")


# ----------------------------------------------------------------------------- user pairs


def read_pairs_jsonl(path: str | Path, task: Task) -> Pairs:
    """Pairs from a JSONL file, one object a line:
    `{"clean": [tokens], "corrupt": [tokens]}`, optionally with `"clean_answer"`, `"corrupt_answer"`
    (one answer per loss position) and `"mask"` (0/1 per loss position). Without answers they are
    the task's: the next token at each loss position for sequence tasks (addition, induction), the
    computed answer for modular and skip-trigram inputs. Every line is checked; the first bad one is
    named with what to fix."""
    path = Path(path)
    if not path.is_file():
        raise GrokscopeError(f"--pairs {path}: no such file")
    text = read_bytes(path).decode("utf-8", errors="replace")
    K = len(task.loss_positions)
    T = task.n_ctx
    cleans, corrupts, ca, xa, masks = [], [], [], [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise GrokscopeError(f"{where}: not JSON ({e.msg}); write one object per line") from None
        if not isinstance(obj, dict) or "clean" not in obj or "corrupt" not in obj:
            raise GrokscopeError(f'{where}: write an object with "clean" and "corrupt" token lists')
        seqs = []
        for name in ("clean", "corrupt"):
            seq = obj[name]
            if not isinstance(seq, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in seq
            ):
                raise GrokscopeError(f"{where}: {name!r} must be a list of integer token ids")
            if len(seq) != T:
                raise GrokscopeError(f"{where}: {name!r} has {len(seq)} tokens; this task's inputs have {T}")
            bad = [t for t in seq if not 0 <= t < task.d_vocab]
            if bad:
                raise GrokscopeError(f"{where}: token {bad[0]} in {name!r} is outside 0..{task.d_vocab - 1}")
            seqs.append(seq)
        answers = []
        for name, seq in (("clean_answer", seqs[0]), ("corrupt_answer", seqs[1])):
            ans = obj.get(name)
            if ans is None:
                ans = _task_answers(task, torch.tensor([seq]))[0].tolist()
            if not isinstance(ans, list) or len(ans) != K or not all(isinstance(t, int) for t in ans):
                raise GrokscopeError(
                    f"{where}: {name!r} must list {K} integer answers (one per loss position)"
                )
            if any(not 0 <= t < task.d_vocab_out for t in ans):
                raise GrokscopeError(f"{where}: {name!r} has an answer outside 0..{task.d_vocab_out - 1}")
            answers.append(ans)
        mask = obj.get("mask", [1] * K)
        if not isinstance(mask, list) or len(mask) != K or any(m not in (0, 1, True, False) for m in mask):
            raise GrokscopeError(f"{where}: 'mask' must list {K} values 0 or 1")
        cleans.append(seqs[0])
        corrupts.append(seqs[1])
        ca.append(answers[0])
        xa.append(answers[1])
        masks.append([bool(m) for m in mask])
    if not cleans:
        raise GrokscopeError(f"{path}: no pairs in the file")
    clean_t, corrupt_t = torch.tensor(cleans), torch.tensor(corrupts)
    ca_t, xa_t, m_t = torch.tensor(ca), torch.tensor(xa), torch.tensor(masks)
    if not (m_t & (ca_t != xa_t)).any():
        raise GrokscopeError(f"{path}: the clean and corrupted answers never differ; nothing to measure")
    return Pairs(
        Batch(clean_t, ca_t, m_t.clone(), {}),
        Batch(corrupt_t, xa_t, m_t.clone(), {}),
        ca_t,
        xa_t,
        m_t,
        list(task.loss_positions),
        f"pairs from {path.name}",
    )


def _task_answers(task: Task, tokens: torch.Tensor) -> torch.Tensor:  # [batch, n_loss]
    kind = getattr(getattr(task, "config", None), "kind", "")
    if kind == "modular":
        return task.labels[tokens[:, 0].clamp(max=task.p - 1) * task.p + tokens[:, 1].clamp(max=task.p - 1)][
            :, None
        ]
    if kind == "skip_trigram":
        K = task.config.n_keys
        body = tokens[:, :-1]
        is_key = body < K
        key = torch.where(is_key, body, 0).max(1).values
        query = (tokens[:, -1] - K).clamp(0, task.config.n_queries - 1)
        return task.table[key, query][:, None]
    pos = torch.tensor(task.loss_positions)
    return tokens[:, pos + 1].clamp(max=task.d_vocab_out - 1)
