"""Exact match by length, past the lengths a model trained on: a grid of operand lengths
(len a, len b) for addition, one accuracy per length for a sequence task (`tasks.sequence`).

An addition cell holds `n` random problems whose operands have exactly those lengths, written in the trained
run's own format (same `format` and reversal flags) but with room for `max(lengths)` digits.
Exact match is read teacher-forced in one forward pass: with argmax decoding an example is exactly
right under greedy generation if and only if every answer token (and the EOS) is the argmax given
the true earlier tokens -- the first wrong token is the first place the two would differ -- so the
two counts agree (checked against step-by-step greedy decoding in the tests). A sequence task's
length holds `n` random problems of exactly that length, read the same way (every answer token
and the EOS).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.scoring import score
from grokscope.tasks import sampling as smp
from grokscope.tasks.addition import AdditionConfig, AdditionTask, Operands
from grokscope.tasks.sequence import SequenceConfig, SequenceTask

SEQUENCE_KINDS = "count, mode, copy, sort, parity"


def check_length_task(train_task) -> None:
    """Raise unless the task has a length a study can vary (addition or a sequence task)."""
    if not isinstance(train_task, AdditionConfig | SequenceConfig):
        raise GrokscopeError(
            f"length generalization needs task.kind = 'addition' or a sequence task ({SEQUENCE_KINDS}), "
            f"not {getattr(train_task, 'kind', train_task)!r}"
        )


def length_fields(train_task) -> tuple[str, str]:
    """The dotted settings of the task's shortest and longest training length."""
    check_length_task(train_task)
    if isinstance(train_task, AdditionConfig):
        return "task.min_digits", "task.max_digits"
    return "task.min_len", "task.max_len"


def grid_dims(train_task) -> int:
    """2 for addition's (len a, len b) grid, 1 for a sequence task's single length."""
    check_length_task(train_task)
    return 2 if isinstance(train_task, AdditionConfig) else 1


def eval_task(train_task, max_digits: int) -> AdditionTask | SequenceTask:
    """The trained run's format with room for `max_digits`-digit operands (fixed formats pad to it),
    or for a sequence task, with room for lengths up to `max_digits`."""
    check_length_task(train_task)
    if isinstance(train_task, SequenceConfig):
        from grokscope.registry import TASKS

        cfg = dataclasses.replace(train_task, min_len=1, max_len=max_digits, n_train=0, n_test=1)
        cfg.validate()
        return TASKS.get(cfg.kind)(cfg, seed=0)
    cfg = dataclasses.replace(
        train_task, min_digits=1, max_digits=max_digits, n_train=0, n_test=1, n_stress=0, carry_heavy=0.0
    )
    cfg.validate()
    return AdditionTask(cfg, seed=0)


def grid_operands(lengths: list[int], n: int, n_cols: int, seed: int) -> Operands:
    """`n` random problems per (len a, len b) cell, cells in row-major order of `lengths` x `lengths`."""
    g = torch.Generator().manual_seed(seed)
    L = torch.tensor(lengths, dtype=torch.long)
    la = L.repeat_interleave(len(L) * n)
    lb = L.repeat_interleave(n).repeat(len(L))
    return Operands(smp.random_digits(g, la, n_cols), smp.random_digits(g, lb, n_cols), la, lb)


def _check_fits(model, task: AdditionTask | SequenceTask, longest: str) -> None:
    need = task.n_ctx
    if "learned" in model.cfg.pos.split("+") and model.cfg.n_ctx < need:
        raise GrokscopeError(
            f"problems of {longest} need {need} positions, but the model's learned positional "
            f"encoding has {model.cfg.n_ctx} (model.n_ctx); train with model.n_ctx >= {need} "
            "(`grokscope lengths` does this) or evaluate shorter lengths"
        )


@torch.no_grad()
def exact_per_example(model, task: AdditionTask, ops: Operands, chunk: int = 1024) -> torch.Tensor:
    """[n] bool: the model's answer (digits and EOS) is exactly right, greedy/teacher-forced alike."""
    _check_fits(model, task, f"{task.M} digits")
    if task.d_vocab > model.cfg.d_vocab or task.d_vocab_out > model.cfg.d_vocab_out:
        raise GrokscopeError(
            f"problems of {task.M} digits with task.index_hints need hint tokens <h0>..<h{task.M}>, but the "
            f"model knows {model.cfg.d_vocab} tokens (model.d_vocab); a model trained with index hints "
            "cannot read operands longer than it was trained on (evaluate shorter lengths)"
        )
    return score(model, task.encode(ops), task.loss_positions, chunk=chunk).exact


@torch.no_grad()
def sequence_accuracy(
    model, train_task: SequenceConfig, lengths: list[int], n: int = 100, seed: int = 0, chunk: int = 1024
) -> np.ndarray:
    """Exact-match rate per length [len(lengths)] (float64) of a sequence task: `n` fresh problems
    of each length, the answer and its EOS all right."""
    task = eval_task(train_task, max(lengths))
    _check_fits(model, task, f"length {max(lengths)}")
    if task.d_vocab > model.cfg.d_vocab or task.d_vocab_out > model.cfg.d_vocab_out:
        raise GrokscopeError(
            f"the task has {task.d_vocab} tokens but the model knows {model.cfg.d_vocab} (model.d_vocab); "
            "evaluate it with the task settings it was trained with"
        )
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = []
    for L in lengths:
        batch = task.generate_at(g, n, L)
        out.append(score(model, batch, task.loss_positions, chunk=chunk).exact.double().mean().item())
    return np.asarray(out, dtype=np.float64)


def length_grid(model, train_task, lengths: list[int], n: int = 100, seed: int = 0) -> np.ndarray:
    """Exact-match rate, float64: addition [len(lengths), len(lengths)] (row = len a, column =
    len b); a sequence task [len(lengths)], one entry per length."""
    if n < 1:
        raise GrokscopeError(f"need at least 1 problem per cell, got {n}")
    if not lengths or min(lengths) < 1:
        raise GrokscopeError(f"operand lengths must be >= 1, got {lengths}")
    if isinstance(train_task, SequenceConfig):
        return sequence_accuracy(model, train_task, lengths, n=n, seed=seed)
    task = eval_task(train_task, max(lengths))
    model.eval()
    ops = grid_operands(list(lengths), n, task.M, seed)
    exact = exact_per_example(model, task, ops).double()
    return exact.reshape(len(lengths), len(lengths), n).mean(dim=-1).numpy()
