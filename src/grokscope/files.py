"""Atomic writes and safe reads: the only way grokscope puts bytes on disk or reads weights back.

A write goes to a temporary name and is renamed into place, so a crash or a full disk leaves the old
file or the new one, never half of one. Weights are read with safetensors only (never unpickled).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


from grokscope.errors import GrokscopeError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename; a full disk loses nothing."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise GrokscopeError(
                f"disk full while writing {path}; everything written before is intact. "
                "Free some space and resume."
            ) from None
        raise GrokscopeError(f"cannot write {path}: {e.strerror}") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


#: weights files past this size are refused unread (grokscope's models are small; a crafted link to
#: a device or a huge file must not exhaust memory)
MAX_TENSOR_FILE_BYTES = 16 * 2**30


def check_regular_file(path: Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> None:
    """Refuse, unread, anything but a regular file of a sane size (raises FileNotFoundError if absent)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise GrokscopeError(
            f"{path} is not a regular file (a link to a device or a folder?); refusing to read it"
        )
    if info.st_size > max_bytes:
        raise GrokscopeError(
            f"{path} is {info.st_size / 2**30:.1f} GiB, larger than any grokscope file; refusing to read it"
        )


def read_bytes(path: Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> bytes:
    """A file's bytes, after `check_regular_file` (so a link to /dev/zero cannot exhaust memory)."""
    check_regular_file(path, max_bytes)
    return path.read_bytes()


def write_if_changed(path: Path, data: bytes | str) -> bool:
    """`atomic_write_bytes` unless `path` already holds exactly `data` (its mtime then stays, so
    whatever was made from it is still up to date); returns whether it wrote."""
    data = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never unpickles); any damage becomes a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_torch_bytes

    try:
        check_regular_file(path)
        return load_torch_bytes(path.read_bytes())
    except FileNotFoundError:
        raise GrokscopeError(f"missing file: {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise GrokscopeError(f"{path} is corrupt or not a safetensors file ({e})") from None


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write tensors (made contiguous, on CPU) as one safetensors file, atomically, unless unchanged."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_if_changed(path, data)


def read_tensors_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """`read_tensors` plus the file's string metadata."""
    from safetensors import safe_open

    tensors = read_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        return tensors, dict(f.metadata() or {})
