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
    logits: torch.Tensor  # [batch, pos, d_vocab_out]
    outputs: torch.Tensor  # [n_senders, batch, pos, d_model]
    inputs: dict[int, torch.Tensor]  # receiver index -> its input [batch, pos, d_model] (with grad if asked)


def run_graph(
    model: Transformer,
    graph: Graph,
    tokens: torch.Tensor,  # [batch, pos]
    pos_ids: torch.Tensor | None = None,
    other: torch.Tensor | None = None,  # [n_senders, batch, pos, d_model]: sender outputs on other inputs
    mask: torch.Tensor | None = None,  # [n_receivers, n_senders] in [0, 1]: 1 keeps the edge, 0 takes `other`
    grad_inputs: bool = False,
) -> GraphRun:
    """The forward pass with each receiver's input summed from its senders (see the module doc)."""
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
    outs: list[torch.Tensor] = [embed]
    inputs: dict[int, torch.Tensor] = {}
    ids = pos_ids if pe.attends_ids else None
    all_pos = torch.arange(T, device=tokens.device)
    r = 0

    def gather(rows: slice) -> torch.Tensor:  # [n_rows, batch, pos, d_model]
        n = len(outs)
        stack = torch.stack(outs)
        x = torch.einsum("rs,sbpd->rbpd", keep[rows, :n], stack)
        if swap is not None and other is not None:
            x = x + torch.einsum("rs,sbpd->rbpd", swap[rows, :n], other[:n])
        return x

    for block in model.blocks:
        attn = block.attn
        x = gather(slice(r, r + 3 * H))  # [3H, batch, pos, d_model], rows q k v per head
        if grad_inputs:
            x = _with_grad(x)
            for i in range(3 * H):
                inputs[r + i] = x
        x = block.ln1(x).unflatten(0, (H, 3))  # [head, 3, batch, pos, d_model]
        q = torch.einsum("hbpd,hde->bphe", x[:, 0], attn.W_Q)
        k = torch.einsum("hbpd,hde->bphe", x[:, 1], attn.W_K)
        v = torch.einsum("hbpd,hde->bphe", x[:, 2], attn.W_V)
        if attn.has_bias:
            q, k, v = q + attn.b_Q, k + attn.b_K, v + attn.b_V
        q, k = pe.rotate(q, all_pos, ids), pe.rotate(k, all_pos, ids)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(attn.d_head)
        bias = pe.score_bias(all_pos, all_pos, ids, ids)
        if bias is not None:
            scores = scores + bias
        causal = all_pos[None, :] > all_pos[:, None]
        pattern = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        head_out = torch.einsum("bqhe,hed->hbqd", z, attn.W_O)  # [head, batch, pos, d_model]
        if attn.has_bias:
            head_out = head_out + attn.b_O / H
        outs.extend(head_out.unbind(0))
        r += 3 * H
        if graph.has_mlp:
            x = gather(slice(r, r + 1))[0]
            if grad_inputs:
                x = _with_grad(x)
                inputs[r] = x
            outs.append(block.mlp(block.ln2(x)))
            r += 1
    x = gather(slice(r, r + 1))[0]
    if grad_inputs:
        x = _with_grad(x)
        inputs[r] = x
    logits = model.ln_final(x) @ model.unembed.W_U
    if cfg.unembed_bias:
        logits = logits + model.unembed.b_U
    return GraphRun(logits, torch.stack(outs), inputs)


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


def receiver_grads(graph: Graph, run: GraphRun) -> torch.Tensor:  # [n_receivers, batch, pos, d_model]
    """Each receiver's input gradient, after `.backward()` on a metric of a `grad_inputs` run.

    The q, k, v inputs of one layer's heads are one tensor; row i of it is receiver r0 + i."""
    out = []
    for r in range(len(graph.receivers)):
        x = run.inputs[r]
        g = x.grad if x.grad is not None else torch.zeros_like(x)
        if x.dim() == 4:  # the layer's stacked [3H, batch, pos, d_model]
            first = min(k for k, v in run.inputs.items() if v is x)
            out.append(g[r - first])
        else:
            out.append(g)
    return torch.stack(out)
