"""Reading a saved split back: the run folder's `split.safetensors` is the truth about which
examples a run trained on, so every task can install a saved split in place of the one its config
draws, after checking the arrays make sense for it."""

from __future__ import annotations

import numpy as np

from grokscope.errors import GrokscopeError


class InvalidSplit(GrokscopeError):
    """The saved split's arrays cannot be the split of this task (wrong names, shapes or values)."""


def same_split(saved: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> bool:
    """Whether two split files hold the same arrays (names, shapes and values)."""
    return set(saved) == set(ours) and all(
        saved[k].shape == ours[k].shape and np.array_equal(saved[k], ours[k]) for k in ours
    )


def saved_array(
    arrays: dict[str, np.ndarray], name: str, ndim: int, lo: int | None = None, hi: int | None = None
) -> np.ndarray:
    """`arrays[name]` checked: present, `ndim`-dimensional, integer or bool, values in [lo, hi)."""
    if name not in arrays:
        raise InvalidSplit(f"it has no array {name!r} (it has {', '.join(sorted(arrays)) or 'none'})")
    a = arrays[name]
    if a.ndim != ndim or not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise InvalidSplit(f"{name!r} is a {a.ndim}-d {a.dtype} array; expected {ndim}-d integers")
    if a.size and lo is not None and int(a.min()) < lo:
        raise InvalidSplit(f"{name!r} holds {int(a.min())}, below {lo}")
    if a.size and hi is not None and int(a.max()) >= hi:
        raise InvalidSplit(f"{name!r} holds {int(a.max())}, past the largest allowed value {hi - 1}")
    return a
