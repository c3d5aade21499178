"""`tl`: a TransformerLens `HookedTransformer` state dict (`.pth` or `.safetensors`).

TransformerLens's names and shapes are grokscope's (`embed.W_E [d_vocab, d_model]`,
`blocks.{i}.attn.W_Q [head_index, d_model, d_head]`, `ln1.w`, ...). What differs:
- buffers: `blocks.{i}.attn.mask` (causal) and `blocks.{i}.attn.IGNORE` are dropped;
- biases: TransformerLens always stores b_Q, b_K, b_V, b_O and b_U; all-zero ones are dropped (the
  model is then built without them), nonzero ones switch `model.attn_bias` / `model.unembed_bias` on;
- LayerNorm: `normalization_type = "LN"` stores ln1/ln2/ln_final `w` and `b`; a folded model
  (`LNPre`) stores none, and gets w = 1, b = 0. A state dict without LayerNorm weights and without a
  config saying `LNPre` is taken as `normalization_type = None`: give the config for folded models.
The config (act_fn, normalization_type, ...) comes from `--source-config` (HookedTransformerConfig
fields as JSON), a plain `config` dict in the file, or `--set model.*`; sizes are read off the weights.
"""

from __future__ import annotations

from typing import Any

import torch

from grokscope.errors import GrokscopeError
from grokscope.importing.format import Converted, ImportFormat, take, unpack
from grokscope.registry import IMPORT_FORMATS

_ACT = {"relu": "relu", "gelu": "gelu", "gelu_new": None, "solu_ln": None, "silu": None}


def config_settings(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted settings from HookedTransformerConfig fields."""
    if not cfg:
        return {}
    out: dict[str, Any] = {}
    act = cfg.get("act_fn")
    if act is not None:
        if _ACT.get(act) is None:
            raise GrokscopeError(
                f"act_fn = {act!r} has no grokscope equivalent (grokscope has relu and gelu)"
            )
        out["model.act"] = _ACT[act]
    norm = cfg.get("normalization_type", "unset")
    if norm != "unset":
        if norm not in (None, "LN", "LNPre"):
            raise GrokscopeError(
                f"normalization_type = {norm!r} has no grokscope equivalent (None, LN, LNPre)"
            )
        out["model.layer_norm"] = norm is not None
    pos = cfg.get("positional_embedding_type", "standard")
    if pos != "standard":
        raise GrokscopeError(
            f"positional_embedding_type = {pos!r} is not imported (only 'standard', learned positions)"
        )
    if cfg.get("use_attn_scale") is False:
        raise GrokscopeError(
            "use_attn_scale = False has no grokscope equivalent (scores are scaled by 1/sqrt(d_head))"
        )
    if cfg.get("seed") is not None:
        out["seed"] = int(cfg["seed"])
    return out


def _is_buffer(name: str) -> bool:
    return name.endswith(("attn.mask", "attn.IGNORE")) or ".hook_" in name


def to_grokscope(sd: dict[str, torch.Tensor], layer_norm: bool | None) -> dict[str, torch.Tensor]:
    out = take(sd, _is_buffer)
    biases = [k for k in out if k.rsplit(".", 1)[-1] in ("b_Q", "b_K", "b_V", "b_O")]
    if biases and all(not out[k].any() for k in biases):
        out = {k: v for k, v in out.items() if k not in biases}
    if "unembed.b_U" in out and not out["unembed.b_U"].any():
        del out["unembed.b_U"]
    if layer_norm and "ln_final.w" not in out:  # LNPre: folded, no weights stored
        d_model = out["embed.W_E"].shape[1]
        layers = sorted({k.split(".")[1] for k in out if k.startswith("blocks.") and k.endswith("attn.W_Q")})
        attn_only = not any(k.endswith("mlp.W_in") for k in out)
        names = ["ln_final"] + [f"blocks.{i}.ln1" for i in layers]
        names += [] if attn_only else [f"blocks.{i}.ln2" for i in layers]
        for n in names:
            out[f"{n}.w"], out[f"{n}.b"] = torch.ones(d_model), torch.zeros(d_model)
    return out


def convert(raw: dict[str, Any], source_config: dict[str, Any] | None) -> Converted:
    u = unpack(raw)
    settings = config_settings({**(u.config or {}), **(source_config or {})})
    layer_norm = settings.get("model.layer_norm")
    checkpoints = [(step, to_grokscope(sd, layer_norm)) for step, sd in u.state_dicts]
    # biases are on when any checkpoint has nonzero ones (checkpoints with zeros keep theirs then)
    originals = [sd for _, sd in u.state_dicts]
    for flag, names in (("model.attn_bias", ("b_Q", "b_K", "b_V", "b_O")), ("model.unembed_bias", ("b_U",))):
        if any(k.rsplit(".", 1)[-1] in names for _, sd in checkpoints for k in sd):
            settings[flag] = True
            for (_, sd), original in zip(checkpoints, originals, strict=True):
                for k, v in original.items():
                    if k.rsplit(".", 1)[-1] in names:
                        sd.setdefault(k, v)
    return Converted(checkpoints, settings, u.train_losses, u.test_losses, u.split)


TL = IMPORT_FORMATS.register(
    "tl",
    ImportFormat("tl", "a TransformerLens HookedTransformer state dict (.pth or .safetensors)", convert),
)
