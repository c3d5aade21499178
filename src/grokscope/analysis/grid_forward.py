"""The final-position forward pass over the whole p x p input grid, from per-token tables.

For a one-layer model without layer norm whose positions enter only the residual stream, the query
at '=' is the same for every input, keys and values at position 0 depend on `a` alone and at
position 1 on `b` alone. So attention costs O(p·d) table work plus an O(p²·H) softmax, instead of
projecting 3·p² token vectors; and the MLP's output goes straight to the logits through
W_L = W_out·W_U. About twice as fast as the general forward pass on a CPU, identical up to float32
rounding (checked against it by `modular_outputs` once per run and in the tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from grokscope.model.positional import PositionalEncoding


def grid_fast_path_ok(model) -> bool:
    """Whether `grid_outputs` computes exactly what `model` does on the [a, b, =] grid."""
    cfg = model.cfg
    pe = model.pos_embed
    return (
        cfg.n_layers == 1
        and not cfg.layer_norm
        and not cfg.attn_only
        and getattr(pe, "absolute_only", False)
        and not getattr(pe, "needs_ids", False)
        and all(
            getattr(type(pe), name, None) is getattr(PositionalEncoding, name, None)
            for name in ("rotate", "score_bias", "residual_ids")
        )
    )


@torch.no_grad()
def grid_outputs(model, p: int, equals_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [p², d_vocab_out], neurons [p², d_mlp]) at the final position, row-major (a, b)."""
    cfg = model.cfg
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    W_E = model.embed.W_E
    pos = model.pos_embed.residual(3)
    x0, x1, x2 = W_E[:p].clone(), W_E[:p].clone(), W_E[equals_token].clone()  # [p, d], [p, d], [d]
    if pos is not None:
        x0, x1, x2 = x0 + pos[0], x1 + pos[1], x2 + pos[2]

    def proj(x, which):
        out = torch.einsum("...d,hde->...he", x, getattr(attn, f"W_{which}"))
        return out + getattr(attn, f"b_{which}") if attn.has_bias else out

    q = proj(x2, "Q")  # [H, dh]: the same query for every input
    scale = math.sqrt(attn.d_head)
    s0 = (proj(x0, "K") * q).sum(-1) / scale  # [p, H]
    s1 = (proj(x1, "K") * q).sum(-1) / scale
    s2 = (proj(x2, "K") * q).sum(-1) / scale  # [H]
    H = s2.shape[0]
    scores = torch.stack(
        [s0[:, None, :].expand(p, p, H), s1[None, :, :].expand(p, p, H), s2.expand(p, p, H)], dim=-1
    )
    pattern = scores.softmax(dim=-1)  # [a, b, H, 3]
    vo0 = torch.einsum("ahe,hed->ahd", proj(x0, "V"), attn.W_O)  # [p, H, d]
    vo1 = torch.einsum("bhe,hed->bhd", proj(x1, "V"), attn.W_O)
    vo2 = torch.einsum("he,hed->hd", proj(x2, "V"), attn.W_O)  # [H, d]
    attn_out = (
        torch.bmm(pattern[..., 0], vo0.reshape(p, H, -1)).reshape(p, p, -1)  # batched over a
        + torch.einsum("abh,bhd->abd", pattern[..., 1], vo1)
        + pattern[..., 2].reshape(p * p, H).matmul(vo2).reshape(p, p, -1)
    )
    if attn.has_bias:
        attn_out = attn_out + attn.b_O
    resid_mid = (x2 + attn_out).reshape(p * p, -1)
    pre = resid_mid @ mlp.W_in
    if mlp.has_bias:
        pre = pre + mlp.b_in
    post = F.relu(pre) if cfg.act == "relu" else F.gelu(pre)
    W_U = model.unembed.W_U
    logits = resid_mid @ W_U + post @ (mlp.W_out @ W_U)
    if mlp.has_bias:
        logits = logits + mlp.b_out @ W_U
    if cfg.unembed_bias:
        logits = logits + model.unembed.b_U
    return logits, post
