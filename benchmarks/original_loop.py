"""A faithful re-creation of the original progress-measures training loop (Nanda et al. 2023).

Same model maths as the paper's `transformers.py`: every position computed, unembedding to all
p+1 tokens, the loss read at the last position in float64, and test loss computed every epoch.
Einops rearranges are spelled with reshape; HookPoints are omitted (identity modules). Used only
as the baseline of `bench_train.py`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class OriginalTransformer(nn.Module):
    def __init__(self, d_vocab=114, d_model=128, n_ctx=3, n_heads=4, d_head=32, d_mlp=512):
        super().__init__()
        s = 1 / math.sqrt(d_model)
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab) * s)
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) * s)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model) * s)
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model) * s)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model) * s)
        self.W_O = nn.Parameter(torch.randn(d_model, d_head * n_heads) * s)
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) * s)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) * s)
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) / math.sqrt(d_vocab))
        self.register_buffer("mask", torch.tril(torch.ones((n_ctx, n_ctx))))
        self.d_head = d_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("dbp -> bpd", self.W_E[:, x]) + self.W_pos[: x.shape[-1]]
        k = torch.einsum("ihd,bpd->biph", self.W_K, x)
        q = torch.einsum("ihd,bpd->biph", self.W_Q, x)
        v = torch.einsum("ihd,bpd->biph", self.W_V, x)
        scores = torch.einsum("biph,biqh->biqp", k, q)
        n = x.shape[-2]
        masked = torch.tril(scores) - 1e10 * (1 - self.mask[:n, :n])
        attn = torch.softmax(masked / math.sqrt(self.d_head), dim=-1)
        z = torch.einsum("biph,biqp->biqh", v, attn)
        b, i, q_, h = z.shape
        z_flat = z.permute(0, 2, 1, 3).reshape(b, q_, i * h)
        x = x + torch.einsum("df,bqf->bqd", self.W_O, z_flat)
        hidden = torch.relu(torch.einsum("md,bpd->bpm", self.W_in, x) + self.b_in)
        x = x + torch.einsum("dm,bpm->bpd", self.W_out, hidden) + self.b_out
        return x @ self.W_U


def cross_entropy_high_precision(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logprobs = torch.nn.functional.log_softmax(logits.to(torch.float64), dim=-1)
    return -torch.gather(logprobs, index=labels[:, None], dim=-1).mean()


def full_loss(model: OriginalTransformer, data: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return cross_entropy_high_precision(model(data)[:, -1], labels)


def original_epoch(model, optimizer, scheduler, train, train_labels, test, test_labels) -> None:
    """One epoch exactly as the original loop: train and test loss every epoch, then a step."""
    train_loss = full_loss(model, train, train_labels)
    test_loss = full_loss(model, test, test_labels)
    _ = (train_loss.item(), test_loss.item())
    train_loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
