"""Loss and accuracy in float64, the same function for training and evaluation."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from grokscope.model import Transformer
from grokscope.model.positional import position_ids
from grokscope.tasks import Batch


def autocast(precision: str):
    """bf16 autocast for the model's matmuls when asked; the loss stays float64 regardless."""
    if precision == "bf16":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return nullcontext()


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in float64 (float32 log_softmax underflows near 1e-7)."""
    logp = logits.double().log_softmax(dim=-1)
    return -logp.gather(-1, targets[..., None])[..., 0]


def loss_and_stats(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float | list]]:
    """Mean masked loss (with grad) plus detached statistics: loss, acc, exact match, per position."""
    nll = token_losses(logits, batch.targets)
    correct = logits.argmax(dim=-1) == batch.targets
    if batch.mask is None:
        loss = nll.mean()
        mask = torch.ones_like(correct)
    else:
        mask = batch.mask
        loss = nll[mask].mean()
    stats: dict[str, float | list] = {
        "loss": loss.item(),
        "acc": correct[mask].double().mean().item(),
    }
    if nll.shape[1] > 1:
        m = mask.double()
        stats["exact"] = (correct | ~mask).all(dim=1).double().mean().item()
        counts = m.sum(0).clamp(min=1)
        stats["loss_by_pos"] = ((nll.detach() * m).sum(0) / counts).tolist()
        stats["acc_by_pos"] = ((correct.double() * m).sum(0) / counts).tolist()
    return loss, stats


@torch.no_grad()
def evaluate(
    model: Transformer,
    batch: Batch,
    positions: list[int],
    precision: str = "fp32",
    chunk: int = 16384,
) -> dict[str, float | list]:
    """Statistics over a whole evaluation set, in chunks so memory stays bounded."""
    nll_sum = correct_sum = count = None
    exact = 0.0
    for start in range(0, len(batch), chunk):
        part = batch.select(torch.arange(start, min(start + chunk, len(batch))))
        with autocast(precision):
            logits = model(part.tokens, positions=positions, pos_ids=position_ids(model, part))
        nll = token_losses(logits, part.targets)
        correct = logits.argmax(dim=-1) == part.targets
        mask = torch.ones_like(correct) if part.mask is None else part.mask
        m = mask.double()
        sums = ((nll * m).sum(0), (correct.double() * m).sum(0), m.sum(0))
        if nll_sum is None:
            nll_sum, correct_sum, count = sums
        else:
            nll_sum, correct_sum, count = nll_sum + sums[0], correct_sum + sums[1], count + sums[2]
        exact += (correct | ~mask).all(dim=1).double().sum().item()
    stats: dict[str, float | list] = {
        "loss": (nll_sum.sum() / count.sum()).item(),
        "acc": (correct_sum.sum() / count.sum()).item(),
    }
    if len(positions) > 1:
        stats["exact"] = exact / len(batch)
        stats["loss_by_pos"] = (nll_sum / count.clamp(min=1)).tolist()
        stats["acc_by_pos"] = (correct_sum / count.clamp(min=1)).tolist()
    return stats
