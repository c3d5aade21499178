"""`progress-measures`: a `.pth` of the original progress-measures code (Nanda et al. 2023).

Its layout (einsum weights, no LayerNorm, no attention or unembedding biases, scores scaled by
1/sqrt(d_head), causal):
```
embed.W_E [d_model, d_vocab]            -> embed.W_E [d_vocab, d_model]          (transposed)
pos_embed.W_pos [n_ctx, d_model]        -> the same
blocks.{i}.attn.W_Q/W_K/W_V [head_index, d_head, d_model] -> [head_index, d_model, d_head]
blocks.{i}.attn.W_O [d_model, head_index*d_head] (z head-major) -> [head_index, d_head, d_model]
blocks.{i}.attn.mask                    -> dropped (the causal mask, a buffer)
blocks.{i}.mlp.W_in [d_mlp, d_model], b_in -> W_in [d_model, d_mlp], b_in
blocks.{i}.mlp.W_out [d_model, d_mlp], b_out -> W_out [d_mlp, d_model], b_out
unembed.W_U [d_model, d_vocab_out]      -> the same
```
Attention-only models name their blocks `attn_blocks.{i}`. Modular models have d_vocab = p + 1
('=' is p) and p + 1 output classes. The split: `random.seed(seed)`, then `random.shuffle` of the
row-major list of all p² pairs; the first `int(frac_train * p²)` train (`original_split`).
"""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.importing.format import Converted, ImportFormat, unpack
from grokscope.registry import IMPORT_FORMATS

#: the original Config's fields -> grokscope's dotted settings (values mapped by _VALUES)
_FIELDS = {
    "p": "task.p",
    "fn_name": "task.op",
    "frac_train": "task.frac_train",
    "seed": "seed",
    "act_type": "model.act",
    "use_ln": "model.layer_norm",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "num_epochs": "train.steps",
}
_VALUES = {
    "task.op": {"add": "add", "subtract": "subtract", "x2xyy2": "quad", "rand": "random"},
    "model.act": {"ReLU": "relu", "GeLU": "gelu", "relu": "relu", "gelu": "gelu"},
}


def original_split(p: int, frac_train: float, seed: int) -> tuple[list[int], list[int]]:
    """The original code's split of the p² pairs (a, b), as indices a * p + b (train, test)."""
    pairs = [(i, j) for i in range(p) for j in range(p)]
    random.seed(seed)
    random.shuffle(pairs)
    div = int(frac_train * len(pairs))
    index = [i * p + j for i, j in pairs]
    return index[:div], index[div:]


def config_settings(config: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted grokscope settings from the original Config's fields (unknown fields are ignored)."""
    out: dict[str, Any] = {}
    for key, dotted in _FIELDS.items():
        if config and config.get(key) is not None:
            value = config[key]
            if dotted in _VALUES:
                if value not in _VALUES[dotted]:
                    raise GrokscopeError(
                        f"the source config's {key} = {value!r} has no grokscope equivalent "
                        f"(known: {', '.join(_VALUES[dotted])})"
                    )
                value = _VALUES[dotted][value]
            out[dotted] = value
    return out


def to_grokscope(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One state dict of the original layout in grokscope's names and shapes."""
    renamed = {
        re.sub(r"^attn_blocks\.", "blocks.", k): v for k, v in sd.items() if not k.endswith("attn.mask")
    }
    out: dict[str, torch.Tensor] = {}
    for name, t in renamed.items():
        if name == "embed.W_E" or name.endswith(("mlp.W_in", "mlp.W_out")):
            t = t.T
        elif name.endswith(("attn.W_Q", "attn.W_K", "attn.W_V")):
            t = t.transpose(1, 2)
        elif name.endswith("attn.W_O"):
            W_Q = renamed.get(name[: -len("W_O")] + "W_Q")
            if W_Q is None or t.ndim != 2 or t.shape[1] % W_Q.shape[0]:
                raise GrokscopeError(
                    f"{name} has shape {tuple(t.shape)}, not [d_model, n_heads * d_head] beside a W_Q"
                )
            H = W_Q.shape[0]
            t = t.T.reshape(H, t.shape[1] // H, t.shape[0])  # z flattened head-major
        out[name] = t.contiguous()
    return out


def convert(raw: dict[str, Any], source_config: dict[str, Any] | None) -> Converted:
    u = unpack(raw)
    config = {**(u.config or {}), **(source_config or {})}
    return Converted(
        [(step, to_grokscope(sd)) for step, sd in u.state_dicts],
        config_settings(config),
        u.train_losses,
        u.test_losses,
        u.split,
    )


def split_arrays(train: list[int], test: list[int]) -> dict[str, np.ndarray]:
    """A modular task's split file from index lists (sorted, as grokscope saves them)."""
    return {
        "train": np.sort(np.asarray(train, dtype=np.int64)),
        "test": np.sort(np.asarray(test, dtype=np.int64)),
    }


PROGRESS_MEASURES = IMPORT_FORMATS.register(
    "progress-measures",
    ImportFormat(
        "progress-measures",
        "a .pth of the original progress-measures code (einsum layout, attn_blocks, its split rule)",
        convert,
        default_split="original",
    ),
)
