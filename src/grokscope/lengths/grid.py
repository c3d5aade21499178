"""Exact match on a grid of operand lengths (len a, len b), past the lengths a model trained on.

A cell holds `n` random problems whose operands have exactly those lengths, written in the trained
run's own format (same `format` and reversal flags) but with room for `max(lengths)` digits.
Exact match is read teacher-forced in one forward pass: with argmax decoding an example is exactly
right under greedy generation if and only if every answer token (and the EOS) is the argmax given
the true earlier tokens -- the first wrong token is the first place the two would differ -- so the
two counts agree (checked against step-by-step greedy decoding in the tests).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.scoring import score
from grokscope.tasks import sampling as smp
from grokscope.tasks.addition import AdditionConfig, AdditionTask, Operands


def eval_task(train_task: AdditionConfig, max_digits: int) -> AdditionTask:
    """The trained run's format with room for `max_digits`-digit operands (fixed formats pad to it)."""
    if not isinstance(train_task, AdditionConfig):
        raise GrokscopeError(
            f"length generalization needs task.kind = 'addition', not {getattr(train_task, 'kind', train_task)!r}"
        )
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


@torch.no_grad()
def exact_per_example(model, task: AdditionTask, ops: Operands, chunk: int = 1024) -> torch.Tensor:
    """[n] bool: the model's answer (digits and EOS) is exactly right, greedy/teacher-forced alike."""
    need = task.n_ctx
    if "learned" in model.cfg.pos.split("+") and model.cfg.n_ctx < need:
        raise GrokscopeError(
            f"problems of {task.M} digits need {need} positions, but the model's learned positional "
            f"encoding has {model.cfg.n_ctx} (model.n_ctx); train with model.n_ctx >= {need} "
            "(`grokscope lengths` does this) or evaluate shorter lengths"
        )
    if task.d_vocab > model.cfg.d_vocab or task.d_vocab_out > model.cfg.d_vocab_out:
        raise GrokscopeError(
            f"problems of {task.M} digits with task.index_hints need hint tokens <h0>..<h{task.M}>, but the "
            f"model knows {model.cfg.d_vocab} tokens (model.d_vocab); a model trained with index hints "
            "cannot read operands longer than it was trained on (evaluate shorter lengths)"
        )
    return score(model, task.encode(ops), task.loss_positions, chunk=chunk).exact


def length_grid(
    model, train_task: AdditionConfig, lengths: list[int], n: int = 100, seed: int = 0
) -> np.ndarray:
    """Exact-match rate [len(lengths), len(lengths)]: row = len a, column = len b (float64)."""
    if n < 1:
        raise GrokscopeError(f"need at least 1 problem per cell, got {n}")
    if not lengths or min(lengths) < 1:
        raise GrokscopeError(f"operand lengths must be >= 1, got {lengths}")
    task = eval_task(train_task, max(lengths))
    model.eval()
    ops = grid_operands(list(lengths), n, task.M, seed)
    exact = exact_per_example(model, task, ops).double()
    return exact.reshape(len(lengths), len(lengths), n).mean(dim=-1).numpy()
