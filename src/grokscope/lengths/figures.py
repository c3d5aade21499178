"""Figures of a length-generalization study: a heatmap per encoding and accuracy against length.

Functions return matplotlib figures (no I/O) except `save_figures`, which writes the PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(pos: str, stats: dict[str, np.ndarray], lengths: list[int], train_digits: tuple[int, int]):
    """Mean exact match per (len a, len b) over seeds, each cell annotated `mean` and `±std`; the
    training range is outlined."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    mean, std = stats["mean"], stats["std"]
    n = len(lengths)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.2, 0.5 * n + 1.6))
    im = ax.imshow(mean, vmin=0, vmax=1, cmap="viridis", origin="lower")
    size = 7 if n <= 10 else 5.5
    for i in range(n):
        for j in range(n):
            color = "black" if mean[i, j] > 0.6 else "white"
            text = f"{mean[i, j]:.2f}" + (f"\n±{std[i, j]:.2f}" if int(stats["seeds"]) > 1 else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)
    lo, hi = train_digits
    inside = [k for k, L in enumerate(lengths) if lo <= L <= hi]
    if inside:
        a, b = inside[0] - 0.5, inside[-1] + 0.5
        ax.add_patch(Rectangle((a, a), b - a, b - a, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_xticks(range(n), [str(L) for L in lengths])
    ax.set_yticks(range(n), [str(L) for L in lengths])
    ax.set_xlabel("digits of b")
    ax.set_ylabel("digits of a")
    ax.set_title(
        f"{pos}: exact match, mean ± std of {int(stats['seeds'])} seed(s)\n(red: training lengths)",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def by_length(summary: dict[str, dict[str, np.ndarray]], lengths: list[int], train_digits: tuple[int, int]):
    """Left: the diagonal len a = len b; right: mean over cells whose longer operand has L digits.
    Lines are means over seeds, bands their min..max."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    L = np.array(lengths)
    longer = np.maximum(L[:, None], L[None, :])
    for pos, s in summary.items():
        diag = [np.diag(s[k]) for k in ("mean", "min", "max")]
        (line,) = axes[0].plot(L, diag[0], marker="o", label=pos)
        axes[0].fill_between(L, diag[1], diag[2], color=line.get_color(), alpha=0.2)
        by = [np.array([s[k][longer == n].mean() for n in L]) for k in ("mean", "min", "max")]
        axes[1].plot(L, by[0], marker="o", color=line.get_color(), label=pos)
        axes[1].fill_between(L, by[1], by[2], color=line.get_color(), alpha=0.2)
    for ax, title in zip(
        axes, ("len a = len b", "longer operand has L digits (mean over cells)"), strict=True
    ):
        ax.axvspan(train_digits[0] - 0.5, train_digits[1] + 0.5, color="grey", alpha=0.12, lw=0)
        ax.set_xticks(L)
        ax.set_xlabel("digits L")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exact match (greedy)")
    axes[1].legend(fontsize=8, title="grey: trained", title_fontsize=8)
    fig.tight_layout()
    return fig


def save_figures(out: Path, spec, summary: dict[str, dict[str, np.ndarray]]) -> list[Path]:
    plt = _plt()
    paths = []
    for pos, stats in summary.items():
        fig = heatmap(pos, stats, spec.lengths, spec.train_digits)
        path = out / f"heatmap_{pos}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    fig = by_length(summary, spec.lengths, spec.train_digits)
    path = out / "lengths_by_length.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths
