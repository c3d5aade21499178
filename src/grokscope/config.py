"""Typed settings for a run: dataclasses, TOML load/save, dotted `--set` overrides, validation.

Every setting has one dotted name (`train.lr`, `model.d_model`, `task.p`) used alike in TOML files,
on the command line and in sweeps. Mistakes end in a `GrokscopeError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from grokscope.devices import PRECISIONS, check_device_name
from grokscope.errors import GrokscopeError, require
from grokscope.files import read_bytes
from grokscope.registry import POSITIONAL, TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelConfig:
    """The transformer's shape; sizes of 0 are filled in from the task."""

    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    act: str = field(default="relu", metadata={"choices": ("relu", "gelu")})
    layer_norm: bool = False
    attn_only: bool = False
    attn_bias: bool = False
    mlp_bias: bool = True
    unembed_bias: bool = False
    pos: str = "learned"  # one of registry.POSITIONAL (model/positional.py registers them)
    abacus_max_offset: int = 20  # Abacus: training shifts digit indices by a random 0..this
    # Abacus training indices: `offset` (one random shift per batch, McLeish et al.) or `random`
    # (each example's indices a sorted random subset of 1..K + abacus_max_offset, Ruoss et al. 2023)
    abacus_indices: str = field(default="offset", metadata={"choices": ("offset", "random")})
    # Input injection (McLeish et al. 2024): every block after the first also adds the embedding
    # (token + positional) to its residual input, so index information reaches every layer intact
    input_injection: bool = False
    d_vocab: int = 0
    d_vocab_out: int = 0
    n_ctx: int = 0

    def validate(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_head"):
            require(getattr(self, name) >= 1, f"model.{name} must be >= 1")
        require(self.attn_only or self.d_mlp >= 1, "model.d_mlp must be >= 1 (or attn_only)")
        for name in ("d_vocab", "d_vocab_out", "n_ctx"):
            require(getattr(self, name) >= 0, f"model.{name} must be >= 0 (0 = from the task)")
        require(self.abacus_max_offset >= 0, "model.abacus_max_offset must be >= 0")

    def n_params_estimate(self) -> int:
        """Parameters, roughly (vocabulary sizes left at 0 count as 0): for the memory check."""
        attn = 4 * self.n_heads * self.d_model * self.d_head
        mlp = 0 if self.attn_only else 2 * self.d_model * self.d_mlp
        vocab = (self.d_vocab + self.d_vocab_out + self.n_ctx) * self.d_model
        return self.n_layers * (attn + mlp) + vocab

    def memory_bytes(self) -> int:
        """Training memory of the weights: float32 weights, gradients and two Adam moments."""
        return 16 * self.n_params_estimate()
        POSITIONAL.get(self.pos)  # an unknown name ends in a did-you-mean error


@dataclass
class ScheduleConfig:
    """Steps at which something happens: every `dense_every` before `dense_until`, then every `every`."""

    every: int = 100
    dense_every: int = 10
    dense_until: int = 1000

    def validate(self, where: str) -> None:
        require(self.every >= 1, f"{where}.every must be >= 1")
        require(self.dense_every >= 1, f"{where}.dense_every must be >= 1")
        require(self.dense_until >= 0, f"{where}.dense_until must be >= 0")

    def due(self, step: int) -> bool:
        if step < self.dense_until:
            return step % self.dense_every == 0
        return step % self.every == 0


@dataclass
class GrokfastConfig:
    """Grokfast EMA gradient filter (Lee et al. 2024, arXiv 2405.20233): g += lamb * EMA_alpha(g)."""

    enabled: bool = False
    alpha: float = 0.98
    lamb: float = 2.0

    def validate(self) -> None:
        require(0.0 <= self.alpha < 1.0, "train.grokfast.alpha must be in [0, 1)")
        require(self.lamb >= 0.0, "train.grokfast.lamb must be >= 0")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpoint settings."""

    steps: int = 20000
    batch_size: int = 0
    # `orthoadamw` / `orthosgd`: ⊥Grad (Prieto et al. 2025) before AdamW / SGD (train/optim.py)
    optimizer: str = field(
        default="adamw", metadata={"choices": ("adamw", "adam", "sgd", "orthoadamw", "orthosgd")}
    )
    # the training loss: softmax `cross_entropy`, or `stablemax` (Prieto et al. 2025); every reported
    # metric stays the float64 softmax cross-entropy, with the StableMax loss logged beside it
    loss: str = field(default="cross_entropy", metadata={"choices": ("cross_entropy", "stablemax")})
    # the dtype of the training loss's log-softmax (log-StableMax); float32 / bfloat16 reproduce the
    # low-precision failure (loss quantisation, softmax collapse) on purpose
    loss_precision: str = field(default="float64", metadata={"choices": ("float64", "float32", "bfloat16")})
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    momentum: float = 0.9
    warmup_steps: int = 10
    lr_schedule: str = field(default="constant", metadata={"choices": ("constant", "cosine", "linear")})
    lr_min: float = 0.0
    grad_clip: float = 0.0
    grokfast: GrokfastConfig = field(default_factory=GrokfastConfig)
    # what the model computes in (grokscope/devices.py): `auto` takes bf16 autocast only where the
    # hardware runs it natively and fp32 elsewhere; `tf32` is TF32 matmuls on CUDA. Losses stay float64
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS})
    # where it trains: `auto` (CUDA if present, else MPS, else CPU), `cpu`, `cuda`, `cuda:N`, `mps`;
    # the run folder is device-free, so any device reads it
    device: str = "auto"
    # a non-finite loss or gradient: `stop` (keep the last finite state, exit with a message) or
    # `skip` (leave the weights as they are for that step and go on; counted in metrics)
    nonfinite: str = field(default="stop", metadata={"choices": ("stop", "skip")})
    eval: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(100, 100, 0))
    stop_at_test_acc: float | None = None
    stop_at_test_loss: float | None = None
    threads: int = 0
    state_every_s: float = 30.0

    def validate(self) -> None:
        require(self.steps >= 1, "train.steps must be >= 1")
        require(self.batch_size >= 0, "train.batch_size must be >= 0 (0 = full batch)")
        require(self.lr > 0, "train.lr must be > 0")
        require(self.weight_decay >= 0, "train.weight_decay must be >= 0")
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "train.betas must be two numbers in [0, 1)",
        )
        require(self.eps > 0, "train.eps must be > 0")
        require(
            self.loss in ("cross_entropy", "stablemax"),
            f"train.loss = {self.loss!r} must be 'cross_entropy' or 'stablemax'",
        )
        require(
            self.loss_precision in ("float64", "float32", "bfloat16"),
            f"train.loss_precision = {self.loss_precision!r} must be 'float64', 'float32' or 'bfloat16'",
        )
        require(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        require(0 <= self.lr_min <= self.lr, "train.lr_min must be in [0, train.lr]")
        require(self.grad_clip >= 0, "train.grad_clip must be >= 0 (0 = off)")
        check_device_name(self.device)
        require(self.threads >= 0, "train.threads must be >= 0 (0 = torch's default)")
        require(0 <= self.momentum < 1, "train.momentum must be in [0, 1)")
        require(
            self.state_every_s >= 0,
            "train.state_every_s must be >= 0 (seconds between state saves; 0 = every step)",
        )
        if self.stop_at_test_loss is not None:
            require(self.stop_at_test_loss >= 0, "train.stop_at_test_loss must be >= 0")
        self.grokfast.validate()
        self.eval.validate("train.eval")
        self.checkpoint.validate("train.checkpoint")
        if self.stop_at_test_acc is not None:
            require(0 < self.stop_at_test_acc <= 1, "train.stop_at_test_acc must be in (0, 1]")


@dataclass
class RunConfig:
    """Everything that defines a run. `task` is the task family's own config dataclass."""

    name: str = "run"
    seed: int = 0
    task: Any = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        require(
            bool(self.name)
            and self.name not in (".", "..")
            and not any(c in self.name for c in "/\\\0")
            and self.name.strip() == self.name,
            f"name = {self.name!r} must be a single folder name (no /, \\, .. or NUL): runs go to "
            "runs/<name>, and --out is the way to choose another place",
        )
        require(0 <= self.seed < 2**63, f"seed = {self.seed} must be in [0, 2**63)")
        self.task.validate()
        self.model.validate()
        self.train.validate()
        need = {"model": self.model.memory_bytes()}
        if hasattr(self.task, "memory_bytes"):
            need.update(self.task.memory_bytes(self.train.batch_size))
        budget = memory_budget()
        for what, n in need.items():
            require(
                n <= budget,
                f"the {what} needs about {n / 1e9:,.1f} GB, more than half of this machine's memory "
                f"({2 * budget / 1e9:,.1f} GB); make it smaller (or set train.batch_size for a batch)",
            )

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(dataclasses.asdict(self))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


# ----------------------------------------------------------------------------- parsing


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from nested plain data (as read from TOML)."""
    if not isinstance(data, dict):
        raise GrokscopeError("bad config: expected a table of settings")
    data = dict(data)
    data.pop("meta", None)
    task_data = data.pop("task", None)
    if not isinstance(task_data, dict) or "kind" not in task_data:
        raise GrokscopeError("bad config: missing [task] table with a `kind` (e.g. kind = 'modular')")
    task_cls = TASKS.get(task_data["kind"]).config_class
    config = _build(RunConfig, data, "")
    config.task = _build(task_cls, task_data, "task.")
    config.validate()
    return config


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise GrokscopeError(f"bad config: `{prefix.rstrip('.')}` must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean `{prefix}{close[0]}`?)" if close else ""
            raise GrokscopeError(f"bad config: unknown key `{prefix}{key}`{hint}")
        kwargs[key] = _coerce(value, hints[key], fields[key], f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, fld: dataclasses.Field, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, fld, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise GrokscopeError(f"bad config: `{key}` must be a list, got {value!r}")
        (item,) = args
        return [_coerce(v, item, fld, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise GrokscopeError(f"bad config: `{key}` must be a finite number, got {value!r}")
    if (
        hint is int
        and isinstance(value, int)
        and not isinstance(value, bool)
        and not -(2**63) <= value < 2**63
    ):
        raise GrokscopeError(f"bad config: `{key}` = {value} is out of range (it must fit in 64 bits)")
    if hint is Any:
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise GrokscopeError(
            f"bad config: `{key}` must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    choices = fld.metadata.get("choices")
    if choices and value not in choices:
        raise GrokscopeError(f"bad config: `{key}` must be one of {', '.join(choices)}; got {value!r}")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value`; the value is read as TOML (numbers, booleans, lists), else as a string."""
    if "=" not in text:
        raise GrokscopeError(f"bad --set {text!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise GrokscopeError(f"bad --set {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested `data` with each `key=value` override set."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise GrokscopeError(f"bad --set {text!r}: `{part}` is not a table")
            node = child
        node[path[-1]] = value
    return data


def read_toml(path: Path) -> dict[str, Any]:
    if Path(path).is_dir():
        raise GrokscopeError(f"{path} is a folder, not a config file (give a preset name or a .toml file)")
    try:
        return tomllib.loads(read_bytes(Path(path), max_bytes=16 * 2**20).decode())
    except FileNotFoundError:
        raise GrokscopeError(f"no such config file: {path}") from None
    except IsADirectoryError:
        raise GrokscopeError(f"{path} is a folder, not a config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GrokscopeError(f"{path} is not valid TOML: {e}") from None
    except OSError as e:
        raise GrokscopeError(f"cannot read {path}: {e.strerror}") from None


def dumps_toml(data: dict[str, Any]) -> str:
    return tomli_w.dumps(_drop_none(data))


def memory_budget() -> int:
    """Bytes a run may plan to use: half of this machine's physical memory (8 GB if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 10**9
