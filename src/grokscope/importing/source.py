"""Reading another code's files safely, finding its checkpoints, and fitting its tensors to the
grokscope model (recognising matrices stored as transposes).

Loading never runs code from a file: `.safetensors` through safetensors, anything else through
`torch.load(weights_only=True)`, which reads tensors and plain values only; a file that needs
arbitrary Python objects unpickled is refused with one message that says how to re-save it.
"""

from __future__ import annotations

import glob
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grokscope.errors import GrokscopeError
from grokscope.files import check_regular_file, read_tensors

SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


@dataclass
class SourceFile:
    path: Path
    step: int | None  # from the file name's last number, or --step; None when unknown


def read_source_file(path: str | Path) -> dict[str, Any]:
    """The file's contents: a dict of tensors (safetensors), or whatever plain data torch saved."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_tensors(path)
    check_regular_file(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        what = next(
            (line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else ""
        )
        raise GrokscopeError(
            f"{path} holds pickled Python objects, which loading would have to run as code ({what.strip()[:160]}); "
            "grokscope reads only tensors and plain values. Re-save it as plain data where it was made, e.g. "
            "torch.save({'model': model.state_dict(), 'config': dataclasses.asdict(config), ...}, path) "
            "or safetensors.torch.save_file(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise GrokscopeError(
            f"{path} is not a readable torch file ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__}); "
            "check the file (a copy cut short?) or name its format"
        ) from None
    if not isinstance(data, dict):
        raise GrokscopeError(f"{path} holds a {type(data).__name__}, not a dict of tensors (a state dict)")
    return data


_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def step_from_name(path: Path) -> int | None:
    """The last number in a file name (`step_0001000.safetensors`, `model_4000.pth` -> 4000)."""
    m = _NUMBER.search(path.stem)
    return int(m.group(1)) if m else None


def source_files(src: str | Path, step: int | None = None) -> list[SourceFile]:
    """The checkpoint files of a source: one file, a folder of them, or a glob pattern."""
    text = str(src)
    if any(c in text for c in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
        if not paths:
            raise GrokscopeError(f"the pattern {text!r} matches no file; check it (quote it in the shell)")
    elif Path(src).is_dir():
        paths = sorted(p for p in Path(src).iterdir() if p.is_file() and p.suffix in SUFFIXES)
        if not paths:
            raise GrokscopeError(f"{src} holds no checkpoint files ({', '.join(SUFFIXES)})")
    elif Path(src).is_file():
        return [SourceFile(Path(src), step)]
    else:
        raise GrokscopeError(f"no such file or folder: {src}")
    if len(paths) == 1:
        return [SourceFile(paths[0], step if step is not None else step_from_name(paths[0]))]
    if step is not None:
        raise GrokscopeError(
            f"--step names the step of one file, and {src} has {len(paths)}; their steps come from their "
            "names (model_1000.pth), or import one file at a time with --step"
        )
    files = [SourceFile(p, step_from_name(p)) for p in paths]
    unnamed = [f.path.name for f in files if f.step is None]
    if unnamed:
        raise GrokscopeError(
            f"cannot tell the step of {', '.join(unnamed[:3])}: with several files each name must hold its "
            "step (e.g. model_1000.pth); rename them, or import one file with --step"
        )
    steps = [f.step for f in files]
    if len(set(steps)) < len(steps):
        dup = sorted({s for s in steps if steps.count(s) > 1})
        raise GrokscopeError(f"several files of {src} have step {dup[0]}; keep one file per step")
    return sorted(files, key=lambda f: f.step)


# ------------------------------------------------------------------ shapes: which axis is d_model
#: name suffix -> axis that holds d_model in grokscope's layout (2-D weights)
_D_MODEL_AXIS = {"embed.W_E": 1, "pos_embed.W_pos": 1, "unembed.W_U": 0, "mlp.W_in": 0, "mlp.W_out": 1}


def _kind(name: str) -> str | None:
    for suffix in _D_MODEL_AXIS:
        if name == suffix or name.endswith("." + suffix):
            return suffix
    return None


def d_model_of(weights: dict[str, torch.Tensor]) -> int:
    """The residual width: the size most common among the 2-D weights' axes."""
    sizes: dict[int, int] = {}
    for name, t in weights.items():
        if _kind(name) is not None and t.ndim == 2:
            for n in t.shape:
                sizes[n] = sizes.get(n, 0) + 1
    if not sizes:
        raise GrokscopeError("no embedding or unembedding matrix found (embed.W_E, unembed.W_U)")
    return max(sizes, key=lambda n: (sizes[n], n))


def _turn(name: str, t: torch.Tensor, d: int) -> torch.Tensor | None:
    """`t` turned round when it is stored as the transpose of grokscope's layout, else None."""
    kind = _kind(name)
    if kind is not None and t.ndim == 2 and t.shape[0] != t.shape[1]:
        axis = _D_MODEL_AXIS[kind]
        return t.T if t.shape[axis] != d and t.shape[1 - axis] == d else None
    if t.ndim == 3 and name.endswith(("attn.W_Q", "attn.W_K", "attn.W_V")):  # [head_index, d_head, d_model]?
        return t.transpose(1, 2) if t.shape[1] != d and t.shape[2] == d else None
    if t.ndim == 3 and name.endswith("attn.W_O"):  # [head_index, d_model, d_head]?
        return t.transpose(1, 2) if t.shape[2] != d and t.shape[1] == d else None
    return None


def orient(
    weights: dict[str, torch.Tensor], d_model: int | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights with matrices stored as transposes turned round, and the names turned. Square
    matrices cannot tell and are taken as they are."""
    d = d_model or d_model_of(weights)
    out, turned = {}, []
    for name, t in weights.items():
        flipped = _turn(name, t, d)
        if flipped is not None:
            turned.append(name)
        out[name] = (t if flipped is None else flipped).contiguous()
    return out, sorted(turned)


def model_settings(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Dotted settings (`model.d_model`, ...) the grokscope-named weights of a model imply."""
    W_E = weights["embed.W_E"]
    s: dict[str, Any] = {"model.d_vocab": W_E.shape[0], "model.d_model": W_E.shape[1]}
    if "unembed.W_U" in weights:
        s["model.d_vocab_out"] = weights["unembed.W_U"].shape[1]
    if "pos_embed.W_pos" in weights:
        s["model.n_ctx"] = weights["pos_embed.W_pos"].shape[0]
        s["model.pos"] = "learned"
    layers = sorted({int(m.group(1)) for n in weights if (m := re.match(r"blocks\.(\d+)\.attn\.W_Q$", n))})
    if not layers:
        raise GrokscopeError(
            "no attention weights found (blocks.0.attn.W_Q); is this a transformer's state dict?"
        )
    s["model.n_layers"] = len(layers)
    H, _, dh = weights["blocks.0.attn.W_Q"].shape
    s["model.n_heads"], s["model.d_head"] = H, dh
    s["model.attn_only"] = "blocks.0.mlp.W_in" not in weights
    if not s["model.attn_only"]:
        s["model.d_mlp"] = weights["blocks.0.mlp.W_in"].shape[1]
        s["model.mlp_bias"] = "blocks.0.mlp.b_in" in weights
    s["model.attn_bias"] = "blocks.0.attn.b_Q" in weights
    s["model.unembed_bias"] = "unembed.b_U" in weights
    s["model.layer_norm"] = "ln_final.w" in weights or "blocks.0.ln1.w" in weights
    return s


def note(message: str) -> None:
    from grokscope.run import RunNote

    warnings.warn(message, RunNote, stacklevel=3)
