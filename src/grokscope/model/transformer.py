"""A small decoder-only transformer with TransformerLens names, shapes and hook points.

One forward with its fast paths side by side (as nanoGPT keeps fast and slow attention in one
forward), chosen in one place, `Transformer.fast_path_ok`, from flags the positional encoding
declares (`absolute_only`, `residual_only` in model/positional.py):

- the general path: embed, add positions, run the blocks; every hook point sees its activation.
- positions: `model(tokens, positions=[2])` computes logits only at the listed positions: the last
  block's attention queries, MLP and unembedding run there alone, which is all a loss there needs.
- the layer-0 table: without hooks, layer 0's residual input and query/key/value projections are
  read from a table computed once per (token, position) pair instead of once per example, since
  that is all they depend on when the encoding is `absolute_only`.
- the grid: `grid_outputs(p, equals_token)`, the final position over every [a, b, =] input of a
  one-layer model without layer norm whose encoding is `residual_only`, from per-token tables
  (for the mainline p = 113 model, about 1.5x less CPU time than the general forward over the
  p x p grid, which itself uses the layer-0 table; benchmarks/bench_analysis.py measures it).

Each fast path equals the general one to float32 rounding (tests/test_fast_paths.py).
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
        """x [..., d_model] -> [..., head_index, d_head] through W_Q, W_K or W_V (one plain matmul)."""
        W = getattr(self, f"W_{which}")
        H, d, dh = W.shape
        out = (x @ W.transpose(0, 1).reshape(d, H * dh)).unflatten(-1, (H, dh))
        return out + getattr(self, f"b_{which}") if self.has_bias else out

    def forward(
        self,
        q: torch.Tensor,  # [batch, query_pos, head_index, d_head]
        k: torch.Tensor,  # [batch, key_pos, head_index, d_head]
        v: torch.Tensor,  # [batch, key_pos, head_index, d_head]
        q_pos: torch.Tensor,  # [query_pos] the query positions' indices
        pe,
        ids: torch.Tensor | None = None,  # [batch, key_pos] digit ids, if the encoding attends by them
    ) -> torch.Tensor:  # [batch, query_pos, d_model]
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
        """resid_pre [batch, pos, d_model] -> resid_post [batch, query_pos, d_model] at the query
        positions `q_pos` [query_pos]; `qkv` are layer 0's q, k, v when read from the table."""
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


def _gather_rows(table: torch.Tensor, ids: torch.Tensor, vmapped: bool = False) -> torch.Tensor:
    """table[ids] through index_select: its backward (index_add) is ~3.5x faster on CPU than
    advanced indexing's accumulating index_put (measured: benchmarks/bench_train.py). Under
    `torch.func.vmap` over stacked weights, F.embedding instead (the same values): its batching rule
    is one lookup in the flattened stack, about 2x faster than index_select's gather."""
    if vmapped:
        return F.embedding(ids, table.flatten(1)).unflatten(-1, table.shape[1:])
    return table.index_select(0, ids.flatten()).unflatten(0, ids.shape)


class Transformer(HookedRootModule):
    """Parameters `embed.W_E`, `pos_embed.W_pos`, `blocks.{i}.attn.W_Q`, ..., `unembed.W_U`.

    With `input_injection`, `blocks.{i}.hook_resid_pre` (i > 0) is the previous block's
    resid_post plus the embedding (hook_embed + hook_pos_embed)."""

    #: False switches every fast path off (the general forward runs), e.g. to check them against it.
    use_fast_paths: bool = True
    #: True on the copy train/stacked.py calls under `torch.func.vmap` (picks vmap-friendly ops).
    vmapped: bool = False

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
        self.setup_hooks()

    def fast_path_ok(self, path: str) -> bool:
        """Whether fast path `path` computes what the general forward does (to float32 rounding).

        The one place the fast paths are chosen, from the flags the positional encoding declares:
        `"layer0_table"` (layer 0 from per-(token, position) tables) needs `absolute_only`;
        `"grid"` (`grid_outputs`) needs `residual_only` and one block with an MLP and no layer norm.
        Both are off while hooks run (hook points must see every activation) and with
        `use_fast_paths = False`.
        """
        if path not in ("layer0_table", "grid"):
            raise ValueError(f"unknown fast path {path!r}; known: layer0_table, grid")
        if not self.use_fast_paths or self._hooks_active or len(self.blocks) == 0:
            return False
        pe, cfg = self.pos_embed, self.cfg
        if path == "layer0_table":
            return pe.absolute_only
        return pe.residual_only and cfg.n_layers == 1 and not cfg.layer_norm and not cfg.attn_only

    def forward(
        self,
        tokens: torch.Tensor,  # [batch, pos]
        positions: list[int] | torch.Tensor | None = None,
        pos_ids: torch.Tensor | None = None,  # [batch, pos]
    ) -> torch.Tensor:  # [batch, len(positions), d_vocab_out]
        """Logits at `positions` (all positions when None).

        `pos_ids` [batch, pos]: per-token ids for encodings that read token structure (Abacus digit
        indices; see `positional.position_ids`); ignored by the others."""
        B, T = tokens.shape
        all_pos = torch.arange(T, device=tokens.device)
        out_pos = all_pos if positions is None else torch.as_tensor(positions, device=tokens.device)
        n_blocks = len(self.blocks)
        pos_table = self.pos_embed.residual(T)
        pos_tok = self._per_token_positions(pos_ids) if self.pos_embed.needs_ids else None
        # the table pays when it has fewer rows (d_vocab x pos) than the batch has tokens (batch x pos)
        if self.fast_path_ok("layer0_table") and self.cfg.d_vocab < B:
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

    # ------------------------------------------------------------------------ fast path: layer-0 table
    def _layer0_from_table(
        self,
        tokens: torch.Tensor,  # [batch, pos]
        pos_table: torch.Tensor | None,  # [pos, d_model]
        q_pos: torch.Tensor,  # [query_pos]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Layer 0's residual input [batch, pos, d_model] and q [batch, query_pos, head_index,
        d_head], k, v [batch, pos, head_index, d_head], gathered from per-(token, position) tables."""
        T = tokens.shape[1]
        table = self.embed.W_E[:, None, :].expand(-1, T, -1)
        if pos_table is not None:
            table = table + pos_table[None]
        table = table.reshape(-1, self.cfg.d_model)  # row = token * T + position
        ids = tokens * T + torch.arange(T, device=tokens.device)
        block = self.blocks[0]
        x = block.ln1(table)
        attn = block.attn
        vm = self.vmapped
        q = _gather_rows(attn.project(x, "Q"), ids[:, q_pos], vm)
        k = _gather_rows(attn.project(x, "K"), ids, vm)
        v = _gather_rows(attn.project(x, "V"), ids, vm)
        return _gather_rows(table, ids, vm), (q, k, v)

    # ------------------------------------------------------------------------ fast path: the [a, b, =] grid
    @torch.no_grad()
    def grid_outputs(self, p: int, equals_token: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-position (logits [batch, d_vocab_out], MLP neurons [batch, d_mlp]) for every
        input [a, b, equals_token] with a, b in 0..p-1, batch = p * p in row-major (a, b) order.

        Only where `fast_path_ok("grid")`: with one layer, no layer norm and positions in the
        residual stream alone, the query at '=' is the same for every input and the keys and values
        at position 0 depend on `a` alone, at position 1 on `b` alone. So attention costs O(p·d)
        table work plus an O(p²·H) softmax instead of projecting 3·p² token vectors, and the MLP's
        output goes straight to the logits through W_out·W_U.
        """
        if not self.fast_path_ok("grid"):
            raise GrokscopeError(
                f"grid_outputs needs a one-layer model with an MLP, no layer norm, and positions in the "
                f"residual stream only (model.pos = learned, sinusoidal or none; this one has "
                f"{self.cfg.pos!r}), and no hooks running; check model.fast_path_ok('grid') first, or "
                "run model(tokens) instead"
            )
        return self._grid_from_tables(p, equals_token)

    def _grid_from_tables(self, p: int, equals_token: int) -> tuple[torch.Tensor, torch.Tensor]:
        attn, mlp = self.blocks[0].attn, self.blocks[0].mlp
        W_E = self.embed.W_E
        pos = self.pos_embed.residual(3)  # [pos=3, d_model] or None
        x0, x1, x2 = W_E[:p].clone(), W_E[:p].clone(), W_E[equals_token].clone()  # [p, d_model] x2, [d_model]
        if pos is not None:
            x0, x1, x2 = x0 + pos[0], x1 + pos[1], x2 + pos[2]

        def proj(x: torch.Tensor, which: str) -> torch.Tensor:  # [..., d_model] -> [..., head_index, d_head]
            out = torch.einsum("...d,hde->...he", x, getattr(attn, f"W_{which}"))
            return out + getattr(attn, f"b_{which}") if attn.has_bias else out

        q = proj(x2, "Q")  # [head_index, d_head]: the same query for every input
        scale = math.sqrt(attn.d_head)
        s0 = (proj(x0, "K") * q).sum(-1) / scale  # [a, head_index]
        s1 = (proj(x1, "K") * q).sum(-1) / scale  # [b, head_index]
        s2 = (proj(x2, "K") * q).sum(-1) / scale  # [head_index]
        H = s2.shape[0]
        scores = torch.stack(
            [s0[:, None, :].expand(p, p, H), s1[None, :, :].expand(p, p, H), s2.expand(p, p, H)], dim=-1
        )
        pattern = scores.softmax(dim=-1)  # [a, b, head_index, key_pos=3]
        vo0 = torch.einsum("ahe,hed->ahd", proj(x0, "V"), attn.W_O)  # [a, head_index, d_model]
        vo1 = torch.einsum("bhe,hed->bhd", proj(x1, "V"), attn.W_O)  # [b, head_index, d_model]
        vo2 = torch.einsum("he,hed->hd", proj(x2, "V"), attn.W_O)  # [head_index, d_model]
        attn_out = (
            torch.bmm(pattern[..., 0], vo0.reshape(p, H, -1)).reshape(p, p, -1)  # batched over a
            + torch.einsum("abh,bhd->abd", pattern[..., 1], vo1)
            + pattern[..., 2].reshape(p * p, H).matmul(vo2).reshape(p, p, -1)
        )
        if attn.has_bias:
            attn_out = attn_out + attn.b_O
        resid_mid = (x2 + attn_out).reshape(p * p, -1)  # [batch, d_model]
        pre = resid_mid @ mlp.W_in
        if mlp.has_bias:
            pre = pre + mlp.b_in
        post = mlp.act(pre)  # [batch, d_mlp]
        W_U = self.unembed.W_U
        logits = resid_mid @ W_U + post @ (mlp.W_out @ W_U)
        if mlp.has_bias:
            logits = logits + mlp.b_out @ W_U
        if self.cfg.unembed_bias:
            logits = logits + self.unembed.b_U
        return logits, post
