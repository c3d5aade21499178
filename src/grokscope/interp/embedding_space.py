"""Weights read in token space (Dar et al. 2023, "Analyzing transformers in embedding space").

Each head's bilinear maps, sandwiched between the embedding and the unembedding, become token x token
tables: QK[i, j] = E_i W_Q W_Kᵀ E_jᵀ (how much a query token i attends to a key token j, before
positions) and OV[i, j] = E_i W_V W_O W_U[:, j] (how attending to token i raises the logit of output j).
MLP neurons get an input profile E W_in (which tokens excite them) and an output profile W_out W_U
(which outputs they promote). These are direct-path views: they ignore LayerNorm scales, positional
embeddings and composition across layers, which is exact for the first layer's token path only.
"""

from __future__ import annotations

import torch

from grokscope.model import Transformer

EMBSPACE_DATA = "analysis/embspace/{key}.safetensors"  # qk, ov, neuron_in, neuron_out of layer `key`


@torch.no_grad()
def head_tables(model: Transformer, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(QK [H, d_vocab, d_vocab], OV [H, d_vocab, d_vocab_out]) of one layer, float64."""
    E = model.embed.W_E.double()
    attn = model.blocks[layer].attn
    q = torch.einsum("vd,hde->hve", E, attn.W_Q.double())
    k = torch.einsum("vd,hde->hve", E, attn.W_K.double())
    qk = torch.einsum("hie,hje->hij", q, k) / attn.d_head**0.5
    ov = torch.einsum(
        "vd,hde,hem,mo->hvo", E, attn.W_V.double(), attn.W_O.double(), model.unembed.W_U.double()
    )
    return qk, ov


@torch.no_grad()
def neuron_profiles(model: Transformer, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input [d_vocab, d_mlp] = E W_in, output [d_mlp, d_vocab_out] = W_out W_U) of one layer's MLP."""
    mlp = model.blocks[layer].mlp
    return model.embed.W_E.double() @ mlp.W_in.double(), mlp.W_out.double() @ model.unembed.W_U.double()


def top_neurons(model: Transformer, layer: int, n: int = 32) -> torch.Tensor:
    """Indices of the `n` neurons with the largest output-weight norms (the ones that matter most)."""
    norms = model.blocks[layer].mlp.W_out.detach().norm(dim=1)
    return norms.argsort(descending=True)[:n]


def embspace_run(run, options) -> tuple[int, int]:
    """The `embspace` study: per-layer QK/OV token tables and neuron profiles of one checkpoint,
    written as `analysis/embspace/L<layer>.safetensors`; returns (step, number of layers)."""
    import json

    from grokscope.errors import GrokscopeError
    from grokscope.files import write_tensors
    from grokscope.interp.activations import parse_steps

    if options.neurons < 1:
        raise GrokscopeError(f"--neurons must be >= 1, got {options.neurons}")
    task = run.task
    steps = parse_steps(options.step, run.readable_steps())
    names = task.token_names()
    for step, model in run.models(steps[-1:]):
        meta = {
            "step": str(step),
            "names": json.dumps(names),
            "out_names": json.dumps(names[: task.d_vocab_out]),
        }
        for layer in range(len(model.blocks)):
            qk, ov = head_tables(model, layer)
            tables = {"qk": qk.float(), "ov": ov.float()}  # [head_index, d_vocab, d_vocab(_out)]
            if not model.cfg.attn_only:
                idx = top_neurons(model, layer, options.neurons)
                win, wout = neuron_profiles(model, layer)
                tables |= {
                    "neuron_in": win[:, idx].T.float(),
                    "neuron_out": wout[idx].float(),
                    "neuron_ids": idx,
                }
            write_tensors(run.path / EMBSPACE_DATA.format(key=f"L{layer}"), tables, meta)
        return step, len(model.blocks)
    raise AssertionError("parse_steps returns at least one step")
