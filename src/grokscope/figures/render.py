"""The backend policy and the one saver of figures: build with `matplotlib.figure.Figure`, save atomically.

Figures are built with matplotlib's object-oriented API (`Figure()`, not `pyplot`), so nothing here
chooses, changes or needs a global backend: a script renders PNG bytes headless, and a notebook keeps
its inline backend (a returned `Figure` displays itself). Importing this module imports no matplotlib.
Every PNG or GIF grokscope writes goes through `save_png` / `save_gif` (write to a temporary name,
then rename), so a crash never leaves half an image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from grokscope.files import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


def new_figure(
    nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7, 4), layout="constrained", **kw
):
    """(Figure, axes [nrows, ncols]): a Figure not registered with pyplot (no global state, nothing to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def colormap(name: str):
    """A matplotlib colormap by name (what `pyplot.get_cmap` gives, without pyplot)."""
    import matplotlib

    return matplotlib.colormaps[name]


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write `fig` to `path` as PNG, atomically (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, figure_png(fig, dpi))
    return path


def save_gif(anim, path: Path, fps: int = 4) -> Path:
    """Write a matplotlib animation as an animated GIF (Pillow), via a temporary name and a rename."""
    from matplotlib.animation import PillowWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gif")
    try:
        anim.save(str(tmp), writer=PillowWriter(fps=fps))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
