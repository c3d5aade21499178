"""Export a grokscope checkpoint to TransformerLens 4.x (optional extra `grokscope[tl]`).

TransformerLens 4 removed `HookedTransformer`; small TL-format models (such as Nanda's grokking
checkpoints) now load into `TransformerBridge.boot_native(config)` from a state dict in the old
HookedTransformer property format via `convert_tl_checkpoint`. Our parameters already have those
names and shapes, so the export is: the config, zero tensors for the biases we do not have, zero
positional embeddings for `pos = "none"`, and a check that the logits agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from grokscope.errors import GrokscopeError
from grokscope.model import Transformer

TOLERANCE = 1e-5
# Encodings that only add a vector per position to the residual stream: TL's W_pos holds them exactly.
ADDITIVE_POS = ("learned", "sinusoidal", "none")


def require_transformer_lens():
    try:
        import transformer_lens  # noqa: F401
        from transformer_lens.model_bridge.sources.native import boot
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
    except ImportError as e:
        raise GrokscopeError(
            "TransformerLens export needs TransformerLens >= 4 (its native bridge): "
            f"pip install 'grokscope[tl]' ({e})"
        ) from None
    return boot, convert_tl_checkpoint


def check_expressible(model: Transformer) -> None:
    """A clear error for architectures TransformerLens's native model cannot reproduce exactly."""
    cfg = model.cfg
    if cfg.pos not in ADDITIVE_POS:
        raise GrokscopeError(
            f"model.pos = {cfg.pos!r} has no exact TransformerLens equivalent here (only additive absolute "
            f"positions export: {', '.join(ADDITIVE_POS)}); the checkpoint cannot be loaded into TransformerLens"
        )
    if cfg.input_injection:
        raise GrokscopeError(
            "model.input_injection has no TransformerLens equivalent (its blocks do not re-add the "
            "embedding); the checkpoint cannot be loaded into TransformerLens"
        )


def tl_config_dict(model: Transformer) -> dict:
    """The TransformerBridgeConfig fields of a grokscope model."""
    cfg = model.cfg
    return {
        "architecture": "TransformerLensNative",
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "d_vocab": cfg.d_vocab,
        "d_vocab_out": cfg.d_vocab_out,
        "n_ctx": cfg.n_ctx,
        "act_fn": cfg.act,  # both use torch's exact (erf) GELU for "gelu"
        "normalization_type": "LN" if cfg.layer_norm else None,
        "eps": 1e-5,
        "attn_only": cfg.attn_only,
        "positional_embedding_type": "standard",
        "use_attn_scale": True,
        "default_prepend_bos": False,
    }


def tl_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights in HookedTransformer property format, with zeros where we have no parameter."""
    cfg = model.cfg
    sd = {n: p.detach().clone() for n, p in model.named_parameters()}
    table = model.pos_embed.residual(cfg.n_ctx)  # learned or sinusoidal table; None for "none"
    sd["pos_embed.W_pos"] = torch.zeros(cfg.n_ctx, cfg.d_model) if table is None else table.detach().clone()
    for i in range(cfg.n_layers):
        zeros = {
            f"blocks.{i}.attn.b_Q": (cfg.n_heads, cfg.d_head),
            f"blocks.{i}.attn.b_K": (cfg.n_heads, cfg.d_head),
            f"blocks.{i}.attn.b_V": (cfg.n_heads, cfg.d_head),
            f"blocks.{i}.attn.b_O": (cfg.d_model,),
        }
        if not cfg.attn_only:
            zeros |= {f"blocks.{i}.mlp.b_in": (cfg.d_mlp,), f"blocks.{i}.mlp.b_out": (cfg.d_model,)}
        for name, shape in zeros.items():
            sd.setdefault(name, torch.zeros(shape))
    sd.setdefault("unembed.b_U", torch.zeros(cfg.d_vocab_out))
    return sd


def to_transformer_lens(model: Transformer, dtype: torch.dtype = torch.float32):
    """A TransformerLens 4.x `TransformerBridge` with this model's weights (strictly loaded)."""
    check_expressible(model)
    boot, convert = require_transformer_lens()
    from transformer_lens.config import TransformerBridgeConfig

    tl_cfg = TransformerBridgeConfig.from_dict(tl_config_dict(model))
    bridge = boot(tl_cfg, dtype=dtype)
    weights = {k: v.to(dtype) for k, v in tl_state_dict(model).items()}
    result = bridge.load_state_dict(convert(weights, tl_cfg), strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise GrokscopeError(
            f"TransformerLens rejected the export (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    bridge.eval()
    return bridge


@torch.no_grad()
def max_logit_diff(model: Transformer, bridge, tokens: torch.Tensor, chunk: int = 1024) -> float:
    """Largest |grokscope logit - TransformerLens logit| over all positions of `tokens`."""
    worst = 0.0
    for start in range(0, len(tokens), chunk):
        t = tokens[start : start + chunk]
        ours = model(t).double()
        theirs = bridge(t, return_type="logits").double()
        worst = max(worst, (ours - theirs).abs().max().item())
    return worst


@dataclass
class Export:
    path: Path
    max_diff: float  # float64 copies of both models: the architectures agree
    max_diff_fp32: float  # as exported: float32 rounding of two different op orders
    n_examples: int


def check_logits(model: Transformer, tokens: torch.Tensor) -> tuple[float, float]:
    """(float64, float32) max |logit difference| between the model and its TransformerLens export."""
    import copy

    model64 = copy.deepcopy(model).double()
    diff64 = max_logit_diff(model64, to_transformer_lens(model64, torch.float64), tokens)
    diff32 = max_logit_diff(model, to_transformer_lens(model), tokens)
    return diff64, diff32


def export_run(run_dir, step: int | None = None, out: Path | None = None, max_examples: int = 2048) -> Export:
    """Build the TL model of a checkpoint, check its logits on the task's test set, and save it."""
    from safetensors.torch import save

    from grokscope.files import atomic_write_bytes, atomic_write_text
    from grokscope.run import Run

    run = Run.open(run_dir)
    task = run.task
    model = run.model(step)
    tokens = task.eval_sets()["test"].tokens[:max_examples]
    diff, diff32 = check_logits(model, tokens)
    if not diff <= TOLERANCE:
        raise GrokscopeError(
            f"TransformerLens logits differ from grokscope's by {diff:.2e} in float64 (> {TOLERANCE}); "
            "not exported"
        )
    out = out or run.subdir("analysis") / "tl"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(tl_config_dict(model), indent=2) + "\n")
    sd = {k: v.contiguous() for k, v in tl_state_dict(model).items()}
    atomic_write_bytes(out / "weights.safetensors", save(sd))
    return Export(out, diff, diff32, len(tokens))
