"""Edge attribution patching (EAP, Syed et al. 2023) over the component graph of `interp.graph`, and
exact edge patching to check it.

Patching edge (s -> r) swaps, in receiver r's input only, sender s's output on the base input for
its output on the source input. Its first-order effect on the metric is
weight[r, s] · (out_s(source) - out_s(base)) · ∂m/∂input_r, summed over examples and positions;
one forward and one backward give every edge's score. Exact edge patching runs the graph once per
edge with that edge swapped. Scores are estimates of m_patched - m_base (float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.interp.graph import Graph, build_graph, edge_scores, frozen, run_graph
from grokscope.interp.pairs import Pairs, logit_diff
from grokscope.interp.patching import _sides
from grokscope.model import Transformer
from grokscope.model.positional import position_ids


@torch.no_grad()
def source_outputs(model: Transformer, graph: Graph, pairs: Pairs, mode: str) -> torch.Tensor:
    """[n_senders, batch, pos, d_model]: every sender's output on the source side of `mode`."""
    _, source = _sides(pairs, mode)
    return run_graph(
        model, graph, source.tokens, position_ids(model, source), positions=pairs.loss_positions
    ).outputs


@dataclass
class EdgeScores:
    graph: Graph
    scores: torch.Tensor  # [n_receivers, n_senders] float64: estimated m_patched - m_base, 0 off the edges
    m_base: float
    m_source: float


def edge_attribution(
    model: Transformer, pairs: Pairs, mode: str = "noising", graph: Graph | None = None
) -> EdgeScores:
    """Every edge's attribution score from one forward and backward of the base run."""
    graph = build_graph(model) if graph is None else graph
    base, source = _sides(pairs, mode)
    with torch.no_grad():
        src = run_graph(
            model, graph, source.tokens, position_ids(model, source), positions=pairs.loss_positions
        )
    other, m_source = src.outputs, float(logit_diff(src.logits, pairs))
    with torch.enable_grad(), frozen(model):
        run = run_graph(
            model,
            graph,
            base.tokens,
            position_ids(model, base),
            grad_inputs=True,
            positions=pairs.loss_positions,
        )
        m = logit_diff(run.logits, pairs)
        m.backward()
    scores = edge_scores(run, other - run.outputs.detach(), graph.weight)
    return EdgeScores(graph, scores.cpu(), float(m.detach()), m_source)


@torch.no_grad()
def graph_metric(
    model: Transformer,
    graph: Graph,
    pairs: Pairs,
    mode: str,
    mask: torch.Tensor,
    other: torch.Tensor | None = None,
) -> float:
    """The metric of the base run with the edges where `mask` is 0 fed from the source run."""
    base, _ = _sides(pairs, mode)
    other = source_outputs(model, graph, pairs, mode) if other is None else other
    run = run_graph(
        model,
        graph,
        base.tokens,
        position_ids(model, base),
        other=other,
        mask=mask,
        positions=pairs.loss_positions,
    )
    return float(logit_diff(run.logits, pairs))


@torch.no_grad()
def exact_edge_patching(
    model: Transformer, pairs: Pairs, mode: str = "noising", graph: Graph | None = None
) -> tuple[Graph, torch.Tensor, float]:
    """(graph, m_patched - m_base [n_receivers, n_senders] float64, m_base), one graph run per edge."""
    graph = build_graph(model) if graph is None else graph
    other = source_outputs(model, graph, pairs, mode)
    full = graph.full_mask()
    m_base = graph_metric(model, graph, pairs, mode, full, other)
    out = torch.zeros(graph.weight.shape, dtype=torch.float64)
    for r, s in graph.edges:
        mask = full.clone()
        mask[r, s] = 0.0
        out[r, s] = graph_metric(model, graph, pairs, mode, mask, other) - m_base
    return graph, out, m_base


def edge_rows(graph: Graph, scores: torch.Tensor, exact: torch.Tensor | None = None) -> list[dict]:
    rows = []
    for r, s in graph.edges:
        row = {"edge": graph.edge_name(r, s), "sender": graph.senders[s], "receiver": graph.receivers[r]}
        row["attribution"] = float(scores[r, s])
        if exact is not None:
            row["exact"] = float(exact[r, s])
        rows.append(row)
    return rows


def node_scores_from_edges(graph: Graph, scores: torch.Tensor) -> dict[str, float]:
    """Each sender's attribution: the sum of its outgoing edges' (its output patched everywhere)."""
    return {name: float(scores[:, s].sum()) for s, name in enumerate(graph.senders)}
