"""Shared plotting bits: the headless Agg backend, phase shading, figure creation. No file I/O here."""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # in Jupyter keep the inline backend so figures display
    matplotlib.use("Agg")  # figures are rendered to PNG bytes; never needs a display

from matplotlib.figure import Figure  # noqa: E402

PHASE_COLORS = {
    "memorization": "#f4cccc",
    "circuit formation": "#fff2cc",
    "circuit formation?": "#fff2cc",
    "cleanup": "#d9ead3",
}


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7, 4), **kw):
    """A Figure not registered with pyplot (no global state, nothing to close)."""
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def shade_phases(ax, phases, label: bool = True) -> None:
    """Shade each located phase as a background band; label them once at the top."""
    if phases is None:
        return
    for name, start, end in phases.spans():
        ax.axvspan(start, end, color=PHASE_COLORS.get(name, "#eeeeee"), alpha=0.6, lw=0, zorder=0)
        if label:
            ax.text(
                (start + end) / 2,
                0.985,
                name,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                rotation=90 if (end - start) < 0.08 * ax.get_xlim()[1] else 0,
                fontsize=7,
                color="#555555",
            )
