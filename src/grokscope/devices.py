"""Where a model runs and in what precision: `train.device`, `train.precision` and `--device`.

A run folder never records a device in its tensors (checkpoints and state are saved from CPU
tensors), so a run trained on a GPU is analysed on a laptop and back. What *was* used is recorded
beside the weights (the state file and `[meta] trained_with`), because it decides whether a resume
is bit-exact.

`precision = "auto"` takes bf16 autocast only where the hardware runs bf16 natively (CUDA with bf16,
MPS, a CPU with AVX-512-BF16 or AMX) and fp32 otherwise: on an AVX2 CPU bf16 is emulated at about
15x the cost of fp32, a slow path that must never be the default. `tf32` is fp32 storage with
TF32 matmuls on CUDA (a CUDA-only setting; elsewhere it is fp32). Losses and logit measures stay
float64 whatever this says (scoring.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grokscope.errors import GrokscopeError

if TYPE_CHECKING:  # torch is imported where it is used, so config validation does not load it
    import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "tf32")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: object, key: str = "train.device") -> None:
    """Raise a clear error unless `name` is a device spelling grokscope accepts (no torch calls:
    config validation runs on machines without the device)."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise GrokscopeError(f"bad config: `{key}` must be one of {', '.join(DEVICES)}; got {name!r}")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a `train.device` / `--device` value; an absent device is one message."""
    import torch

    check_device_name(name, "--device")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GrokscopeError(
                f"device {name!r} was asked for, but this machine has no CUDA GPU that torch {torch.__version__} "
                "can use; use --device cpu (or train.device = 'auto', which takes the best device present)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise GrokscopeError(
                f"device {name!r} was asked for, but this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1}); choose one of those or --device auto"
            )
    if device.type == "mps" and not _mps_available():
        raise GrokscopeError(
            "device 'mps' was asked for, but Apple's Metal backend is not available here; "
            "use --device cpu (or auto)"
        )
    return device


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cpu_features() -> dict[str, bool | str]:
    """What this CPU runs natively, as PyTorch reports it (`capability` is the vector ISA torch's
    kernels were dispatched for; bf16 matmuls are native only with AVX-512-BF16 or AMX)."""
    import torch

    cpu = torch.cpu
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "amx": bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()),
    }


def native_bf16(device: torch.device, features: Callable[[], dict] = cpu_features) -> bool:
    """Whether `device` runs bf16 matmuls in hardware (and so bf16 autocast is faster, not 15x slower)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "mps":
        return True
    if device.type == "cpu":
        f = features()
        return bool(f.get("avx512_bf16") or f.get("amx"))
    return False


@dataclass(frozen=True)
class Precision:
    """What a run computes in: `used` is one of fp32 / bf16 / tf32; `asked` is the setting."""

    asked: str
    used: str
    why: str  # one line, for the note the trainer prints
    emulated: bool = False  # bf16 on hardware without it: correct, but about 15x the cost of fp32

    @property
    def worth_a_note(self) -> bool:
        """Whether the trainer should say what it chose: a choice it made, or a slow path asked for."""
        return self.used != self.asked or self.emulated

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context the model's forward runs in (bf16 autocast, TF32 matmuls, or nothing)."""
        import torch

        if self.used == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if self.used == "tf32":
            return _tf32()
        return contextlib.nullcontext()


def resolve_precision(
    asked: str, device: torch.device, features: Callable[[], dict] = cpu_features
) -> Precision:
    """The precision `asked` (`train.precision`) means on `device`: a pure function of the setting,
    the device and what its hardware reports (pass `features` to decide for another CPU)."""
    if asked not in PRECISIONS:
        raise GrokscopeError(
            f"bad config: `train.precision` must be one of {', '.join(PRECISIONS)}; got {asked!r}"
        )
    native = native_bf16(device, features)
    if asked == "auto":
        if native:
            return Precision(asked, "bf16", f"bf16 autocast: {device.type} runs bf16 natively")
        if device.type == "cuda":
            return Precision(asked, "tf32", "TF32 matmuls: this CUDA device has no bf16")
        return Precision(asked, "fp32", f"fp32: {_no_bf16(device, features)}")
    if asked == "bf16" and not native:
        return Precision(
            asked,
            "bf16",
            f"bf16 as asked, but emulated: {_no_bf16(device, features)}, so each step costs about 15x "
            "fp32 (train.precision = 'auto' takes fp32 here)",
            emulated=True,
        )
    if asked == "tf32" and device.type != "cuda":
        return Precision(asked, "fp32", f"fp32: TF32 is a CUDA setting and this run is on {device.type}")
    return Precision(asked, asked, f"{asked} as asked")


def _no_bf16(device: torch.device, features: Callable[[], dict]) -> str:
    if device.type == "cpu":
        return f"this CPU ({features().get('capability', '?')}) has neither AVX-512-BF16 nor AMX"
    return f"{device} has no native bf16"


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    import torch

    old_matmul, old_cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_matmul, old_cudnn


def to_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors as CPU tensors (what every file of a run folder holds, whatever trained it)."""
    return {k: v.detach().to("cpu") for k, v in tensors.items()}


def describe(device: torch.device) -> str:
    """A device in words, for notes and `[meta] trained_with` (the GPU's name where there is one)."""
    import torch

    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    return str(device)


__all__ = [
    "DEVICES",
    "PRECISIONS",
    "Precision",
    "check_device_name",
    "cpu_features",
    "describe",
    "native_bf16",
    "resolve_device",
    "resolve_precision",
    "to_cpu",
]
