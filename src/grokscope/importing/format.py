"""What a source layout gives the importer (`Converted`), and the registered `ImportFormat`.

A `.pth` of other code is usually one of: a bare state dict; or a dict with `model` (a state dict)
and optionally `config` (a plain dict), `train_losses` / `test_losses`, `epoch`, `checkpoints` with
`checkpoint_epochs` (the grokking demo's), `train_indices` / `test_indices` (its split). `unpack`
reads all of these the same way for every format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from grokscope.errors import GrokscopeError


@dataclass
class Converted:
    """One source file, in grokscope's names."""

    checkpoints: list[tuple[int | None, dict[str, torch.Tensor]]]  # (step if the file says, weights)
    settings: dict[str, Any] = field(default_factory=dict)  # dotted settings from the source's config
    train_losses: list[float] | None = None
    test_losses: list[float] | None = None
    split: tuple[list[int], list[int]] | None = None  # (train, test) indices into the p² pairs


@dataclass(frozen=True)
class ImportFormat:
    name: str
    summary: str
    convert: Callable[[dict[str, Any], dict[str, Any] | None], Converted]  # (file contents, source config)
    default_split: str = "config"  # "original" or "config", when the file saves no indices


@dataclass
class Unpacked:
    state_dicts: list[tuple[int | None, dict[str, torch.Tensor]]]
    config: dict[str, Any] | None
    train_losses: list[float] | None
    test_losses: list[float] | None
    split: tuple[list[int], list[int]] | None


def _floats(values: Any, what: str) -> list[float] | None:
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise GrokscopeError(f"the file's {what} is not a list of numbers") from None


def _ints(values: Any) -> list[int]:
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.flatten()]
    return [int(v) for v in values]


def _state_dict(sd: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(sd, dict) or not sd:
        raise GrokscopeError(f"the file's {what} is not a state dict (a dict of tensors)")
    out = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if len(out) < len(sd):
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        raise GrokscopeError(f"the file's {what} holds non-tensors ({', '.join(map(str, bad[:5]))})")
    return out


def unpack(raw: dict[str, Any]) -> Unpacked:
    """The state dicts, config, curves and split a file holds, whatever its wrapping."""
    if all(isinstance(v, torch.Tensor) for v in raw.values()):
        return Unpacked([(None, _state_dict(raw, "contents"))], None, None, None, None)
    if "model" not in raw:
        raise GrokscopeError(
            f"the file is a dict with {', '.join(map(str, list(raw)[:6]))}, but neither a state dict nor one "
            "with a 'model' entry; save model.state_dict() (alone, or as {'model': ...})"
        )
    epoch = raw.get("epoch")
    final = (int(epoch) if epoch is not None else None, _state_dict(raw["model"], "'model'"))
    sds = [final]
    if raw.get("checkpoints") is not None:
        epochs = raw.get("checkpoint_epochs")
        cks = list(raw["checkpoints"])
        if epochs is None or len(_ints(epochs)) != len(cks):
            raise GrokscopeError(
                "the file's 'checkpoints' come without a 'checkpoint_epochs' list of the same length"
            )
        sds = [
            (e, _state_dict(sd, f"checkpoint at epoch {e}")) for e, sd in zip(_ints(epochs), cks, strict=True)
        ]
        if final[0] is not None and final[0] not in {e for e, _ in sds}:
            sds.append(final)  # the final model, when it is not one of the checkpoints
    config = raw.get("config")
    if config is not None and not isinstance(config, dict):
        raise GrokscopeError(
            "the file's 'config' is not a plain dict; pass the source's config with --source-config"
        )
    split = None
    if raw.get("train_indices") is not None and raw.get("test_indices") is not None:
        split = (_ints(raw["train_indices"]), _ints(raw["test_indices"]))
    return Unpacked(
        sds,
        config,
        _floats(raw.get("train_losses"), "train_losses"),
        _floats(raw.get("test_losses"), "test_losses"),
        split,
    )


def take(sd: dict[str, torch.Tensor], drop: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """The state dict less the buffers `drop` names (causal masks, TransformerLens's IGNORE)."""
    return {k: v for k, v in sd.items() if not drop(k)}
