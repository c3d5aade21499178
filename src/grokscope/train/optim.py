"""Optimizers, the learning-rate warm-up and the Grokfast gradient filter."""

from __future__ import annotations

import math

import torch

from grokscope.config import GrokfastConfig, TrainConfig


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
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
