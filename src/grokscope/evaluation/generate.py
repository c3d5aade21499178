"""Greedy autoregressive generation for addition: the model writes its own answer after `=`.

Teacher-forced exact match reads every answer position given the true earlier digits; generation
feeds the model its own digits and stops at EOS (varlen) or after the fixed answer width. With
argmax decoding both agree on whether an example is exactly right, but generation also yields what
the model actually writes (wrong lengths, early EOS) and is what length-generalization reads.
With `task.index_hints` the model writes the answer's hint tokens too (they are targets), and a
generated digit's Abacus index counts the digits written before it, not the hints.
"""

from __future__ import annotations

import torch

from grokscope.model.positional import position_ids
from grokscope.scoring import exact_match
from grokscope.tasks.addition import EOS, PAD, AdditionTask
from grokscope.tasks.base import Batch


def _ids_for(batch: Batch, buf: torch.Tensor, index_hints: bool = False) -> Batch:
    """A batch view of the generation buffer whose answer `digit_index` follows the written digits
    (with index hints: the count of digits written so far, hint tokens getting 0)."""
    eq = batch.meta["eq_pos"][:, None]
    t = torch.arange(buf.shape[1])[None, :]
    answer_digit = (buf < 10) & (t > eq)
    written = torch.where(answer_digit, answer_digit.cumsum(1) if index_hints else t - eq, 0)
    index = torch.where(t <= eq, batch.meta["digit_index"], written)
    return Batch(buf, batch.targets, batch.mask, {"digit_index": index})


@torch.no_grad()
def greedy_generate(
    model, task: AdditionTask, batch: Batch, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """(generated tokens [B, T], exact [B] bool): the prompt up to `=`, then the model's answer."""
    outs, exact = [], []
    for start in range(0, len(batch), chunk):
        part = batch.select(torch.arange(start, min(start + chunk, len(batch))))
        gen = _generate_part(model, task, part)
        outs.append(gen)
        pos = torch.tensor(task.loss_positions)
        exact.append(exact_match(gen[:, pos + 1] == part.targets, part.mask))
    return torch.cat(outs), torch.cat(exact)


def _generate_part(model, task: AdditionTask, batch: Batch) -> torch.Tensor:
    B, T = batch.tokens.shape
    eq = batch.meta["eq_pos"]
    t = torch.arange(T)[None, :]
    buf = torch.where(t <= eq[:, None], batch.tokens, PAD)
    done = torch.zeros(B, dtype=torch.bool)
    rows = torch.arange(B)
    for j in range(task.max_answer_tokens):
        read = eq + j  # logits here predict the token at eq + j + 1
        live = ~done & (read + 1 < T)
        if not live.any():
            break
        # the last block runs only where some example reads (one position in fixed formats)
        reads, which = torch.unique(read.clamp(max=T - 1), return_inverse=True)
        ids = position_ids(model, _ids_for(batch, buf, task.index_hints))
        logits = model(buf, positions=reads, pos_ids=ids)  # [batch, len(reads), d_vocab_out]
        pred = logits[rows, which].argmax(dim=-1)
        write = (read + 1).clamp(max=T - 1)
        buf[rows[live], write[live]] = pred[live]
        if not task.fixed:
            done |= live & (pred == EOS)
    return buf
