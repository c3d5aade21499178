"""A small decoder-only transformer with TransformerLens names, shapes and hook points.

`model(tokens, positions=[2])` computes logits only at the listed positions: the last block's
attention queries, MLP and unembedding run there alone, which is all a loss at those positions
needs. Without hooks, layer 0's query/key/value projections are read from a table computed once
per (token, position) pair instead of once per example, since that is all they depend on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.model.hooks import HookedRootModule, HookPoint
from grokscope.model.positional import build_positional

# Attention over at most this many (query, key) pairs is computed by broadcasting, not bmm.
_BROADCAST_ATTENTION_MAX = 64


def _randn(generator: torch.Generator, *shape: int, scale: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape, generator=generator) * scale)


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.eps = eps
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return self.hook_normalized(x) * self.w + self.b


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, g: torch.Generator):
        super().__init__()
        H, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        s = 1 / math.sqrt(d)
        self.W_Q = _randn(g, H, d, dh, scale=s)
        self.W_K = _randn(g, H, d, dh, scale=s)
        self.W_V = _randn(g, H, d, dh, scale=s)
        self.W_O = _randn(g, H, dh, d, scale=s)
        if cfg.attn_bias:
            self.b_Q = nn.Parameter(torch.zeros(H, dh))
            self.b_K = nn.Parameter(torch.zeros(H, dh))
            self.b_V = nn.Parameter(torch.zeros(H, dh))
            self.b_O = nn.Parameter(torch.zeros(d))
        self.has_bias = cfg.attn_bias
        self.d_head = dh
        for name in ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z"):
            setattr(self, name, HookPoint())

    def project(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """x [..., d_model] -> [..., n_heads, d_head] through W_Q, W_K or W_V (one plain matmul)."""
        W = getattr(self, f"W_{which}")
        H, d, dh = W.shape
        out = (x @ W.transpose(0, 1).reshape(d, H * dh)).unflatten(-1, (H, dh))
        return out + getattr(self, f"b_{which}") if self.has_bias else out

    def forward(
        self,
        q: torch.Tensor,  # [B, Tq, H, dh]
        k: torch.Tensor,  # [B, T, H, dh]
        v: torch.Tensor,  # [B, T, H, dh]
        q_pos: torch.Tensor,  # [Tq]
        pe,
        ids: torch.Tensor | None = None,  # [B, T] digit ids, for encodings that rotate or bias by them
    ) -> torch.Tensor:
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        k_pos = torch.arange(k.shape[1], device=k.device)
        q_ids = None if ids is None else ids.index_select(1, q_pos)
        q, k = pe.rotate(q, q_pos, q_ids), pe.rotate(k, k_pos, ids)
        small = q.shape[1] * k.shape[1] <= _BROADCAST_ATTENTION_MAX
        if small:  # tiny contexts: broadcast-multiply beats thousands of tiny batched matmuls
            scores = (q[:, :, None] * k[:, None]).sum(-1).permute(0, 3, 1, 2) / math.sqrt(self.d_head)
        else:
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.d_head)
        bias = pe.score_bias(q_pos, k_pos, q_ids, ids)
        if bias is not None:
            scores = scores + bias
        causal = k_pos[None, :] > q_pos[:, None]
        scores = self.hook_attn_scores(scores.masked_fill(causal, float("-inf")))
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        if small:
            z = (pattern.permute(0, 2, 3, 1)[..., None] * v[:, None]).sum(2)
        else:
            z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        z = self.hook_z(z)
        out = z.flatten(-2) @ self.W_O.flatten(0, 1)
        return out + self.b_O if self.has_bias else out


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, g: torch.Generator):
        super().__init__()
        s = 1 / math.sqrt(cfg.d_model)
        self.W_in = _randn(g, cfg.d_model, cfg.d_mlp, scale=s)
        self.W_out = _randn(g, cfg.d_mlp, cfg.d_model, scale=s)
        if cfg.mlp_bias:
            self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
            self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.has_bias = cfg.mlp_bias
        self.act = F.relu if cfg.act == "relu" else F.gelu
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.W_in
        if self.has_bias:
            pre = pre + self.b_in
        post = self.hook_post(self.act(self.hook_pre(pre)))
        out = post @ self.W_out
        return out + self.b_out if self.has_bias else out


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, g: torch.Generator):
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model) if cfg.layer_norm else nn.Identity()
        self.attn = Attention(cfg, g)
        self.attn_only = cfg.attn_only
        if not cfg.attn_only:
            self.ln2 = LayerNorm(cfg.d_model) if cfg.layer_norm else nn.Identity()
            self.mlp = MLP(cfg, g)
        for name in (
            "hook_resid_pre",
            "hook_attn_out",
            "hook_resid_mid",
            "hook_mlp_out",
            "hook_resid_post",
        ):
            setattr(self, name, HookPoint())

    def forward(self, resid_pre: torch.Tensor, q_pos: torch.Tensor, pe, qkv=None, ids=None) -> torch.Tensor:
        """resid_pre [B, T, d] -> resid_post [B, Tq, d] at the query positions `q_pos`."""
        resid_pre = self.hook_resid_pre(resid_pre)
        resid_q = resid_pre.index_select(1, q_pos)
        if qkv is None:
            x = self.ln1(resid_pre)
            qkv = (
                self.attn.project(x.index_select(1, q_pos), "Q"),
                self.attn.project(x, "K"),
                self.attn.project(x, "V"),
            )
        attn_out = self.hook_attn_out(self.attn(*qkv, q_pos=q_pos, pe=pe, ids=ids))
        resid_mid = self.hook_resid_mid(resid_q + attn_out)
        if self.attn_only:
            return self.hook_resid_post(resid_mid)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


def _gather_rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """table[ids] through index_select: its backward (index_add) is ~3.5x faster on CPU than
    advanced indexing's accumulating index_put (measured: benchmarks/bench_train.py)."""
    return table.index_select(0, ids.flatten()).unflatten(0, ids.shape)


class Transformer(HookedRootModule):
    """Parameters `embed.W_E`, `pos_embed.W_pos`, `blocks.{i}.attn.W_Q`, ..., `unembed.W_U`.

    With `input_injection`, `blocks.{i}.hook_resid_pre` (i > 0) is the previous block's
    resid_post plus the embedding (hook_embed + hook_pos_embed)."""

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        if min(cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx) < 1:
            raise ValueError("resolve d_vocab, d_vocab_out and n_ctx (from the task) before building")
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Module()
        self.embed.W_E = _randn(g, cfg.d_vocab, cfg.d_model, scale=1 / math.sqrt(cfg.d_model))
        self.pos_embed = build_positional(cfg, g)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, g) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model) if cfg.layer_norm else nn.Identity()
        self.unembed = nn.Module()
        self.unembed.W_U = _randn(g, cfg.d_model, cfg.d_vocab_out, scale=1 / math.sqrt(cfg.d_vocab))
        if cfg.unembed_bias:
            self.unembed.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.use_layer0_table = True
        self.setup_hooks()

    def forward(
        self,
        tokens: torch.Tensor,
        positions: list[int] | torch.Tensor | None = None,
        pos_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [batch, len(positions), d_vocab_out]; all positions when `positions` is None.

        `pos_ids` [batch, n_ctx]: per-token ids for encodings that read token structure (Abacus digit
        indices; see `positional.position_ids`); ignored by the others."""
        B, T = tokens.shape
        all_pos = torch.arange(T, device=tokens.device)
        out_pos = all_pos if positions is None else torch.as_tensor(positions, device=tokens.device)
        n_blocks = len(self.blocks)
        pos_table = self.pos_embed.residual(T)
        pos_tok = self._per_token_positions(pos_ids) if self.pos_embed.needs_ids else None
        use_table = (
            self.use_layer0_table
            and not self._hooks_active
            and n_blocks > 0
            and self.pos_embed.absolute_only
            and self.cfg.d_vocab * T < B * T
        )
        if use_table:
            resid, qkv = self._layer0_from_table(tokens, pos_table, out_pos if n_blocks == 1 else all_pos)
        else:
            resid = self.hook_embed(F.embedding(tokens, self.embed.W_E))
            pos = pos_table.expand(B, -1, -1) if pos_table is not None else None
            if pos_tok is not None:
                pos = pos_tok if pos is None else pos + pos_tok
            if pos is not None:
                resid = resid + self.hook_pos_embed(pos)
            qkv = None
        attn_ids = pos_ids if self.pos_embed.attends_ids else None
        injected = resid if self.cfg.input_injection else None
        for i, block in enumerate(self.blocks):
            q_pos = out_pos if i == n_blocks - 1 else all_pos
            if injected is not None and i > 0:
                resid = resid + injected
            resid = block(resid, q_pos, self.pos_embed, qkv=qkv if i == 0 else None, ids=attn_ids)
        if n_blocks == 0:
            resid = resid.index_select(1, out_pos)
        logits = self.ln_final(resid) @ self.unembed.W_U
        return logits + self.unembed.b_U if self.cfg.unembed_bias else logits

    def _per_token_positions(self, pos_ids: torch.Tensor | None) -> torch.Tensor | None:
        if pos_ids is None:
            raise GrokscopeError(
                f"model.pos = {self.cfg.pos!r} needs per-token ids: call model(tokens, pos_ids=...) "
                "with grokscope.model.positional.position_ids(model, batch)"
            )
        return self.pos_embed.residual_ids(pos_ids)

    def _layer0_from_table(self, tokens: torch.Tensor, pos_table: torch.Tensor | None, q_pos: torch.Tensor):
        """Layer 0's residual input and q/k/v, gathered from per-(token, position) tables."""
        T = tokens.shape[1]
        table = self.embed.W_E[:, None, :].expand(-1, T, -1)
        if pos_table is not None:
            table = table + pos_table[None]
        table = table.reshape(-1, self.cfg.d_model)  # row = token * T + position
        ids = tokens * T + torch.arange(T, device=tokens.device)
        block = self.blocks[0]
        x = block.ln1(table)
        attn = block.attn
        q = _gather_rows(attn.project(x, "Q"), ids[:, q_pos])
        k = _gather_rows(attn.project(x, "K"), ids)
        v = _gather_rows(attn.project(x, "V"), ids)
        return _gather_rows(table, ids), (q, k, v)

    def param_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters()]
