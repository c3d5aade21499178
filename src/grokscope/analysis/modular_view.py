"""What the measures read from a modular-arithmetic model: logits and neurons over all p² inputs.

Everything downstream works on two tensors in the task's row-major order (example i = (i//p, i%p)):
the final-position logits of the p answer classes (float64) and the last MLP's post-activations
at the final position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.analysis.fourier import check_odd_prime
from grokscope.errors import GrokscopeError
from grokscope.scoring import device_of

# op -> sign s such that the answer is a + s*b: the circuit's frequencies live in cos(k(a + s b)).
SIGNS = {"add": 1, "subtract": -1}


def check_task(task) -> int:
    """The task's sign (see SIGNS); a clear error for anything the Fourier measures do not cover."""
    kind = getattr(getattr(task, "config", None), "kind", None)
    if kind != "modular":
        raise GrokscopeError(
            f"the progress measures analyse modular-arithmetic runs (task.kind = 'modular'); "
            f"this run's task is {kind!r}"
        )
    check_odd_prime(task.p)
    op = task.config.op
    if op not in SIGNS:
        raise GrokscopeError(
            f"the Fourier progress measures are defined for op = add or subtract (cos k(a±b)); "
            f"this run has op = {op!r}"
        )
    return SIGNS[op]


@dataclass
class ModularOutputs:
    logits: torch.Tensor  # [batch=p², p] float64, final position, the p answer classes
    neurons: torch.Tensor | None  # [batch=p², d_mlp] post-activations of the last MLP; None if attn_only


@torch.no_grad()
def modular_outputs(model, task, want_neurons: bool = True, fast: bool = True) -> ModularOutputs:
    """One forward pass over all p² inputs: the model's grid fast path where it allows one
    (`Transformer.grid_outputs`, chosen by `model.fast_path_ok("grid")`); otherwise, or with
    `fast=False`, the model's own forward pass.

    On the general path the neurons are read with a plain torch hook on the last block's `mlp.hook_post`, which keeps
    the model's fast path (layer-0 q/k/v from a per-token table) that named hooks switch off.
    """
    p = task.p
    if fast and model.fast_path_ok("grid"):
        logits, post = model.grid_outputs(p, task.equals_token)
        # the measures run on the CPU in float64, whatever device ran the forward
        return ModularOutputs(logits[:, :p].cpu().double(), post.cpu() if want_neurons else None)
    position = task.loss_positions[-1]
    captured: list[torch.Tensor] = []
    handle = None
    block = model.blocks[-1] if len(model.blocks) else None
    if want_neurons and block is not None and hasattr(block, "mlp"):
        handle = block.mlp.hook_post.register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        logits = model(task.tokens.to(device_of(model)), positions=[position])[:, -1, :p].cpu()
    finally:
        if handle is not None:
            handle.remove()
    neurons = captured[-1][:, -1].cpu() if captured else None
    return ModularOutputs(logits.double(), neurons)


def last_mlp_name(weights: dict[str, torch.Tensor]) -> str:
    """Prefix of the last block's MLP in a state dict, e.g. 'blocks.0.mlp'."""
    layers = sorted({int(k.split(".")[1]) for k in weights if k.startswith("blocks.") and ".mlp.W_out" in k})
    if not layers:
        raise GrokscopeError("the neuron-based measures need an MLP; this model has none (attn_only)")
    return f"blocks.{layers[-1]}.mlp"
