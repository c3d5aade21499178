"""Figures of a length-generalization study: a heatmap per encoding and accuracy against length.

The plot functions return matplotlib figures (no I/O); the registered specs make them from the study
folder's `lengths_summary.csv` and `lengths_study.json` (written by `grokscope lengths`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from grokscope.figures.render import new_figure
from grokscope.figures.spec import FigureSpec, register_figure


def heatmap(pos: str, stats: dict[str, np.ndarray], lengths: list[int], train_digits: tuple[int, int]):
    """Mean exact match per (len a, len b) over seeds, each cell annotated `mean` and `±std`; the
    training range is outlined."""
    from matplotlib.patches import Rectangle

    mean, std = stats["mean"], stats["std"]
    n = len(lengths)
    fig, axes = new_figure(size=(0.55 * n + 2.2, 0.5 * n + 1.6), layout=None)
    ax = axes[0, 0]
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
    fig, axes2 = new_figure(1, 2, size=(10, 4), layout=None, sharey=True)
    axes = axes2[0]
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


# ----------------------------------------------------------------------------- from the study folder
SUMMARY, STUDY = "lengths_summary.csv", "lengths_study.json"


def read_summary(folder: Path) -> tuple[dict[str, dict[str, np.ndarray]], list[int], tuple[int, int]]:
    """({pos: {mean, std, min, max: [len_a, len_b], seeds}}, lengths, train_digits) of a study folder."""
    study = json.loads((Path(folder) / STUDY).read_text())
    lengths = [int(n) for n in study["lengths"]]
    index = {n: i for i, n in enumerate(lengths)}
    summary: dict[str, dict[str, np.ndarray]] = {}
    with open(Path(folder) / SUMMARY, newline="") as f:
        for r in csv.DictReader(f):
            s = summary.setdefault(
                r["pos"], {k: np.full((len(lengths),) * 2, np.nan) for k in ("mean", "std", "min", "max")}
            )
            i, j = index[int(r["len_a"])], index[int(r["len_b"])]
            for k in ("mean", "std", "min", "max"):
                s[k][i, j] = float(r[k])
            s["seeds"] = np.array(int(r["seeds"]))
    return summary, lengths, tuple(study["train_digits"])


def _encodings(folder: Path) -> list[str]:
    with open(folder / SUMMARY, newline="") as f:
        return list(dict.fromkeys(r["pos"] for r in csv.DictReader(f)))


def _heatmap(folder: Path, pos: str):
    summary, lengths, train = read_summary(folder)
    return heatmap(pos, summary[pos], lengths, train)


def _by_length(folder: Path, _key):
    summary, lengths, train = read_summary(folder)
    return by_length(summary, lengths, train)


register_figure(
    FigureSpec(
        "lengths_heatmap",
        "Exact match by operand lengths",
        "Mean exact match (greedy decoding) over seeds per (digits of a, digits of b) cell, the spread "
        "written in each cell; the red square is the training range.",
        "lengths",
        (SUMMARY, STUDY),
        "heatmap_{key}.png",
        _heatmap,
        keys=lambda folder: _encodings(folder) if (folder / SUMMARY).is_file() else [],
    )
)
register_figure(
    FigureSpec(
        "lengths_by_length",
        "Exact match against length",
        "Left: the diagonal len a = len b; right: the mean over cells whose longer operand has L digits. "
        "Lines are means over seeds, bands their min..max; grey: the trained lengths.",
        "lengths",
        (SUMMARY, STUDY),
        "lengths_by_length.png",
        _by_length,
    )
)
