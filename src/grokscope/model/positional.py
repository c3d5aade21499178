"""Positional encodings, one small piece each behind one interface.

An encoding may add a vector to the residual stream (`residual`), rotate queries and keys
(`rotate`), or add a bias to attention scores (`score_bias`); each returns None when it does not.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grokscope.errors import GrokscopeError


class PositionalEncoding(nn.Module):
    #: True when the residual input at a position depends only on (token, position index), which
    #: lets the model precompute layer 0's projections per (token, position).
    absolute_only: bool = True

    def residual(self, n_pos: int) -> torch.Tensor | None:
        return None

    def rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x

    def score_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        return None


class NoPositionalEncoding(PositionalEncoding):
    """NoPE: causal attention alone carries order (Kazemnejad et al. 2023)."""


class LearnedPositionalEncoding(PositionalEncoding):
    """A learned vector per position, `pos_embed.W_pos [n_ctx, d_model]`."""

    def __init__(self, n_ctx: int, d_model: int, generator: torch.Generator):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model, generator=generator) / math.sqrt(d_model))

    def residual(self, n_pos: int) -> torch.Tensor:
        n_ctx = self.W_pos.shape[0]
        if n_pos > n_ctx:
            raise GrokscopeError(
                f"a learned positional encoding knows {n_ctx} positions, but the input has {n_pos}; "
                "learned positions cannot extrapolate (train with a larger model.n_ctx or another "
                "model.pos)"
            )
        return self.W_pos[:n_pos]


def build_positional(kind: str, n_ctx: int, d_model: int, generator: torch.Generator) -> PositionalEncoding:
    if kind == "learned":
        return LearnedPositionalEncoding(n_ctx, d_model, generator)
    if kind == "none":
        return NoPositionalEncoding()
    raise GrokscopeError(f"unknown positional encoding {kind!r}")
