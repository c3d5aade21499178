"""What the one-checkpoint figures show: attention, neurons and logits of a model over the p x p grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.analysis.fourier import fourier_2d
from grokscope.analysis.modular_view import check_task, modular_outputs


@dataclass
class Snapshot:
    step: int | None
    p: int
    attn_to_a: torch.Tensor  # [H, p, p]: attention from '=' to the `a` token, over (a, b)
    neurons: torch.Tensor  # [p², d_mlp] post-activations at '='
    logit_fourier_norms: torch.Tensor  # [p, p]: ‖2D Fourier coefficient (a, b)‖ over the answer axis


@torch.no_grad()
def attention_to_a(model, task) -> torch.Tensor:
    """[H, p, p]: the last block's attention weight from '=' (final position) to position 0 (a)."""
    name = f"blocks.{len(model.blocks) - 1}.attn.hook_pattern"
    _, cache = model.run_with_cache(task.tokens, names_filter=name, positions=task.loss_positions[-1:])
    pattern = cache[name][:, :, -1, 0]  # [p², H]
    return pattern.T.reshape(-1, task.p, task.p)


@torch.no_grad()
def logit_fourier_norms(logits: torch.Tensor, p: int) -> torch.Tensor:
    """[p, p]: norm over answers c of the 2D Fourier transform (over a, b) of the logits."""
    x = logits.double().reshape(p, p, -1).permute(2, 0, 1)  # [c, a, b]
    x = x - x.mean(dim=0, keepdim=True)  # a shift shared by all answers changes no probability
    return fourier_2d(x, p).norm(dim=0)


def snapshot(model, task, step: int | None = None) -> Snapshot:
    check_task(task)
    out = modular_outputs(model, task)
    return Snapshot(
        step, task.p, attention_to_a(model, task), out.neurons, logit_fourier_norms(out.logits, task.p)
    )
