"""The model as a graph of components, run with every edge's input kept apart.

Senders write into the residual stream: `embed` (token + positional embedding), each head `L{l}H{h}`
(its output z_h W_O[h], with b_O / n_heads) and each MLP `MLP{l}` (with b_out). Receivers read it:
each head's query, key and value input (`L{l}H{h}.q|k|v`), each MLP's input (`MLP{l}`) and the
unembedding (`logits`). An edge is (sender, receiver) with the sender upstream of the receiver.

Because the residual stream is a sum, a receiver's input is `sum_s weight[r, s] * out_s`, with
`weight` 1 for each upstream sender (more than 1 for the embedding with `input_injection`, which
adds it again before every later block). `run_graph` computes exactly that, so a mask over edges can
swap any one edge's sender output for its output on other inputs (edge patching, circuits) and the
receiver inputs can hold gradients (edge attribution). With every edge kept it equals the model's
own forward (tests/test_interventions.py checks this for every positional encoding).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from grokscope.model import Transformer


@dataclass(frozen=True)
class Graph:
    senders: list[str]
    receivers: list[str]
    weight: torch.Tensor  # [n_receivers, n_senders] float: 0 where not upstream, else its multiplicity
    n_layers: int
    n_heads: int
    has_mlp: bool

    @property
    def edges(self) -> list[tuple[int, int]]:
        """(receiver index, sender index) of every edge, receivers in forward order."""
        return [(int(r), int(s)) for r, s in (self.weight != 0).nonzero().tolist()]

    def edge_name(self, r: int, s: int) -> str:
        return f"{self.senders[s]}->{self.receivers[r]}"

    def full_mask(self) -> torch.Tensor:  # [n_receivers, n_senders]
        return (self.weight != 0).float()


def build_graph(model: Transformer) -> Graph:
    cfg = model.cfg
    L, H, has_mlp = cfg.n_layers, cfg.n_heads, not cfg.attn_only
    senders = ["embed"]
    for layer in range(L):
        senders += [f"L{layer}H{h}" for h in range(H)]
        if has_mlp:
            senders.append(f"MLP{layer}")
    receivers: list[str] = []
    rows: list[list[float]] = []
    index = {s: i for i, s in enumerate(senders)}

    def upstream(layer: int, include_heads: bool) -> list[float]:
        w = [0.0] * len(senders)
        w[0] = 1.0 + (layer if cfg.input_injection else 0)
        for lower in range(layer + (1 if include_heads else 0)):
            for h in range(H):
                w[index[f"L{lower}H{h}"]] = 1.0
            if has_mlp and lower < layer:
                w[index[f"MLP{lower}"]] = 1.0
        return w

    for layer in range(L):
        for h in range(H):
            for which in "qkv":
                receivers.append(f"L{layer}H{h}.{which}")
                rows.append(upstream(layer, include_heads=False))
        if has_mlp:
            receivers.append(f"MLP{layer}")
            rows.append(upstream(layer, include_heads=True))
    final = upstream(L, include_heads=False) if L else [1.0] + [0.0] * (len(senders) - 1)
    if L and cfg.input_injection:
        final[0] = float(L)  # block l > 0 added the embedding again: L copies reach the end
    receivers.append("logits")
    rows.append(final)
    return Graph(senders, receivers, torch.tensor(rows), L, H, has_mlp)


@dataclass
class GraphRun:
    logits: torch.Tensor  # [batch, pos (or len(positions)), d_vocab_out]
    outputs: torch.Tensor  # [n_senders, batch, pos, d_model]
    inputs: dict[
        tuple[int, ...], torch.Tensor
    ]  # receivers -> their inputs [n, batch, pos, d_model] (grad_inputs)


def run_graph(
    model: Transformer,
    graph: Graph,
    tokens: torch.Tensor,  # [batch, pos]
    pos_ids: torch.Tensor | None = None,
    other: torch.Tensor | None = None,  # [n_senders, batch, pos, d_model]: sender outputs on other inputs
    mask: torch.Tensor | None = None,  # [n_receivers, n_senders] in [0, 1]: 1 keeps the edge, 0 takes `other`
    grad_inputs: bool = False,
    positions: list[int] | None = None,
) -> GraphRun:
    """The forward pass with each receiver's input summed from its senders (see the module doc).

    With `positions` the logits are computed there alone, and so are the last block's queries and
    MLP (all a loss there reads); the last block's outputs are zero at the other positions."""
    cfg = model.cfg
    B, T = tokens.shape
    H = cfg.n_heads
    W = graph.weight.to(tokens.device)
    if mask is not None:
        mask = mask.to(tokens.device)
        keep, swap = W * mask, W * (1 - mask)
    else:
        keep, swap = W, None
    pe = model.pos_embed
    embed = model.embed.W_E[tokens]
    pos = pe.residual(T)
    if pos is not None:
        embed = embed + pos
    by_id = model._per_token_positions(pos_ids) if pe.needs_ids else None
    if by_id is not None:
        embed = embed + by_id
    S = len(graph.senders)
    outs = embed.new_zeros(
        (S, B, T, cfg.d_model)
    )  # written in forward order; row n is ready at receiver time
    outs[0] = embed
    n_out = 1
    inputs: dict[tuple[int, ...], torch.Tensor] = {}
    ids = pos_ids if pe.attends_ids else None
    all_pos = torch.arange(T, device=tokens.device)
    out_pos = all_pos if positions is None else torch.as_tensor(positions, device=tokens.device)
    r = 0

    def place(
        rows: torch.Tensor, q_pos: torch.Tensor
    ) -> torch.Tensor:  # [n, batch, q_pos, d] -> [n, batch, T, d]
        if len(q_pos) == T:
            return rows
        return rows.new_zeros(rows.shape[0], B, T, rows.shape[-1]).index_copy(2, q_pos, rows)

    def gather(rows) -> torch.Tensor:  # [n_rows, batch, pos, d_model]
        ready = outs[:n_out].flatten(1)
        x = keep[rows, :n_out] @ ready
        if swap is not None and other is not None:
            x = x + swap[rows, :n_out] @ other[:n_out].flatten(1)
        return x.view(-1, B, T, cfg.d_model)

    def same_rows(rows: list[int]) -> bool:
        """Whether receivers `rows` read the same mix of senders (then they share one input)."""
        k = keep[rows, :n_out]
        if not bool((k == k[:1]).all()):
            return False
        if swap is None or other is None:
            return True
        w = swap[rows, :n_out]
        return bool((w == w[:1]).all())

    def held(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """x [len(rows), batch, pos, d_model] as the inputs of receivers `rows`, gradients kept."""
        if grad_inputs:
            x = _with_grad(x)
            inputs[tuple(rows)] = x
        return x

    n_blocks = len(model.blocks)
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        q_pos = out_pos if layer == n_blocks - 1 else all_pos
        qkv = []
        for which, W in enumerate((attn.W_Q, attn.W_K, attn.W_V)):
            rows = [r + 3 * h + which for h in range(H)]  # each head's q, k or v input
            if not grad_inputs and same_rows(rows):  # one input for every head: one projection
                x = block.ln1(gather(rows[:1])[0])  # [batch, pos, d_model]
                x = x.index_select(1, q_pos) if which == 0 else x
                qkv.append(torch.einsum("bpd,hde->bphe", x, W))
            else:
                x = block.ln1(held(gather(rows), rows))  # [head, batch, pos, d_model]
                x = x.index_select(2, q_pos) if which == 0 else x
                qkv.append(torch.einsum("hbpd,hde->bphe", x, W))
        q, k, v = qkv
        if attn.has_bias:
            q, k, v = q + attn.b_Q, k + attn.b_K, v + attn.b_V
        q_ids = None if ids is None else ids.index_select(1, q_pos)
        q, k = pe.rotate(q, q_pos, q_ids), pe.rotate(k, all_pos, ids)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(attn.d_head)
        bias = pe.score_bias(q_pos, all_pos, q_ids, ids)
        if bias is not None:
            scores = scores + bias
        causal = all_pos[None, :] > q_pos[:, None]
        pattern = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        head_out = torch.einsum("bqhe,hed->hbqd", z, attn.W_O)  # [head, batch, q_pos, d_model]
        if attn.has_bias:
            head_out = head_out + attn.b_O / H
        head_out = place(head_out, q_pos)
        if grad_inputs:  # autograd needs the outputs as values, not writes into one buffer
            outs = torch.cat([outs[:n_out], head_out, outs[n_out + H :]])
        else:
            outs[n_out : n_out + H] = head_out
        n_out += H
        r += 3 * H
        if graph.has_mlp:
            x = held(gather([r]), [r])[0]
            mlp_out = place(block.mlp(block.ln2(x.index_select(1, q_pos)))[None], q_pos)[0]
            if grad_inputs:
                outs = torch.cat([outs[:n_out], mlp_out[None], outs[n_out + 1 :]])
            else:
                outs[n_out] = mlp_out
            n_out += 1
            r += 1
    x = held(gather([r]), [r])[0]
    logits = model.ln_final(x.index_select(1, out_pos)) @ model.unembed.W_U
    if cfg.unembed_bias:
        logits = logits + model.unembed.b_U
    return GraphRun(logits, outs, inputs)


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Parameters without gradients for the duration: attribution needs gradients of activations
    only, and skipping the weights' saves the backward most of its work."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def _with_grad(x: torch.Tensor) -> torch.Tensor:
    """x, kept connected to what it came from (later receivers' gradients must flow back through
    it), with its own gradient retained."""
    if not x.requires_grad:
        return x.detach().requires_grad_(True)
    x.retain_grad()
    return x


def edge_scores(run: GraphRun, delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """[n_receivers, n_senders] float64: weight[r, s] * sum over examples and positions of
    delta_s · ∂m/∂input_r, after `.backward()` on a metric of a `grad_inputs` run. `delta`
    [n_senders, batch, pos, d_model]. Each example's dot products are float32 (over pos x d_model),
    their sum over examples float64."""
    R, S = weight.shape
    B = delta.shape[1]
    d = delta.permute(1, 2, 3, 0).reshape(B, -1, S)  # [batch, pos*d_model, senders]
    out = torch.zeros(R, S, dtype=torch.float64, device=delta.device)
    for rows, x in run.inputs.items():
        if x.grad is None:
            continue
        g = x.grad.permute(1, 0, 2, 3).reshape(B, len(rows), -1)  # [batch, rows, pos*d_model]
        out[list(rows)] = torch.bmm(g, d).double().sum(0)
    return out * weight.double().to(out.device)
