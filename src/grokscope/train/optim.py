"""Optimizers (with ⊥Grad), the learning-rate warm-up, the Grokfast gradient filter, and the
cosine between the gradient and the naive-loss-minimisation direction."""

from __future__ import annotations

import math

import torch

from grokscope.config import GrokfastConfig, TrainConfig

_TINY = 1e-30  # keeps 0 / 0 at 0 for an all-zero weight or gradient (as the paper's code does)


@torch.no_grad()
def orthogonalize_(params) -> None:
    """⊥Grad (Prieto et al. 2025, arXiv 2501.04697), in place on each parameter's `.grad`: remove
    the gradient's component along the parameter, g⊥ = g - (w·g / w·w) w, with w and g the whole
    parameter tensor flattened, then rescale g⊥ to the norm of g (the rescaling the paper's code
    uses, so the step size an optimizer sees is unchanged). A zero parameter keeps its gradient."""
    for p in params:
        if p.grad is None:
            continue
        w, g = p.detach().reshape(-1), p.grad.reshape(-1)
        g_orth = g - (w @ g) / (w @ w + _TINY) * w
        p.grad.copy_((g_orth * (g.norm() / (g_orth.norm() + _TINY))).view_as(p.grad))


class OrthoAdamW(torch.optim.AdamW):
    """AdamW on ⊥Grad gradients (`orthogonalize_` before each step); every AdamW setting honoured,
    and its state_dict is AdamW's, so saving and resuming work as for AdamW."""

    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("OrthoAdamW.step takes no closure")
        orthogonalize_(p for group in self.param_groups for p in group["params"])
        return super().step()


class OrthoSGD(torch.optim.SGD):
    """SGD (momentum, weight decay honoured) on ⊥Grad gradients; see `OrthoAdamW`."""

    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("OrthoSGD.step takes no closure")
        orthogonalize_(p for group in self.param_groups for p in group["params"])
        return super().step()


@torch.no_grad()
def nlm_cosine(params) -> float | None:
    """cos(-g, w): the cosine between the descent direction -g (the gradients of all parameters,
    concatenated) and the weights w themselves (concatenated), in float64; None without gradients.

    w is the naive-loss-minimisation (NLM) direction of Prieto et al. (2025): the derivative of the
    weights under a scaling w -> (1 + ε) w. For a model homogeneous in its weights (no biases or
    layer norm) that scaling multiplies every logit by a power of (1 + ε), so once the training
    set is fitted, following w only sharpens the softmax without changing any prediction. A value
    near 1 means the gradient mostly scales the logits up; ⊥Grad removes exactly this component
    (per parameter). With biases it is the same scaling, only not exactly a scaling of the logits."""
    dot = g_sq = w_sq = None
    for p in params:
        if p.grad is None:
            continue
        w, g = p.detach().cpu().double().reshape(-1), p.grad.cpu().double().reshape(-1)  # MPS has no float64
        parts = (-(w @ g), g @ g, w @ w)
        dot, g_sq, w_sq = parts if dot is None else (dot + parts[0], g_sq + parts[1], w_sq + parts[2])
    if dot is None:
        return None
    return (dot / (g_sq.sqrt() * w_sq.sqrt()).clamp(min=_TINY)).item()


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer in ("adamw", "orthoadamw"):
        kind = OrthoAdamW if cfg.optimizer == "orthoadamw" else torch.optim.AdamW
        return kind(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "orthosgd":
        return OrthoSGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0, as in the paper (`min(step / 10, 1)`), then `lr_schedule`:
    `constant`, or a `cosine` / `linear` decay from `lr` to `lr_min` at `steps`. A pure function
    of the step, so a resumed run sees the same rates as an uninterrupted one."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    done = min((step - cfg.warmup_steps) / span, 1.0)  # step >= warmup_steps here
    left = 0.5 * (1 + math.cos(math.pi * done)) if cfg.lr_schedule == "cosine" else 1 - done
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * left


class Grokfast:
    """EMA gradient filter: keep an EMA of each gradient and add `lamb` times it to the gradient."""

    def __init__(self, cfg: GrokfastConfig, params: dict[str, torch.nn.Parameter]):
        self.alpha, self.lamb = cfg.alpha, cfg.lamb
        self.params = params
        self.ema: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self) -> None:
        for name, p in self.params.items():
            if p.grad is None:
                continue
            if name not in self.ema:
                self.ema[name] = p.grad.clone()
            else:
                self.ema[name].mul_(self.alpha).add_(p.grad, alpha=1 - self.alpha)
            p.grad.add_(self.ema[name], alpha=self.lamb)
