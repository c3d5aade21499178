"""Figures of a length-generalization study: a heatmap per encoding and accuracy against length
(a sequence task, with one length per problem, gets the accuracy-by-length curve only).

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


def by_length_1d(
    summary: dict[str, dict[str, np.ndarray]], lengths: list[int], train_lengths: tuple[int, int]
):
    """Exact match against the task's length, one line per encoding (mean over seeds, min..max band)."""
    fig, axes = new_figure(size=(6, 4), layout=None)
    ax = axes[0, 0]
    L = np.array(lengths)
    for pos, s in summary.items():
        (line,) = ax.plot(L, s["mean"], marker="o", label=pos)
        ax.fill_between(L, s["min"], s["max"], color=line.get_color(), alpha=0.2)
    ax.axvspan(train_lengths[0] - 0.5, train_lengths[1] + 0.5, color="grey", alpha=0.12, lw=0)
    ax.set_xlabel("length")
    ax.set_ylabel("exact match (greedy)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="grey: trained", title_fontsize=8)
    fig.tight_layout()
    return fig


def by_length(summary: dict[str, dict[str, np.ndarray]], lengths: list[int], train_digits: tuple[int, int]):
    """Left: the diagonal len a = len b; right: mean over cells whose longer operand has L digits.
    Lines are means over seeds, bands their min..max. (1-D summaries: `by_length_1d`.)"""
    if next(iter(summary.values()))["mean"].ndim == 1:
        return by_length_1d(summary, lengths, train_digits)
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
    """({pos: {mean, std, min, max: [len_a, len_b] or [length], seeds}}, lengths, train_digits) of
    a study folder."""
    study = json.loads((Path(folder) / STUDY).read_text())
    lengths = [int(n) for n in study["lengths"]]
    dims = int(study.get("dims", 2))
    index = {n: i for i, n in enumerate(lengths)}
    summary: dict[str, dict[str, np.ndarray]] = {}
    with open(Path(folder) / SUMMARY, newline="") as f:
        for r in csv.DictReader(f):
            s = summary.setdefault(
                r["pos"], {k: np.full((len(lengths),) * dims, np.nan) for k in ("mean", "std", "min", "max")}
            )
            if dims == 1:
                ix: tuple[int, ...] = (index[int(r["length"])],)
            else:
                ix = (index[int(r["len_a"])], index[int(r["len_b"])])
            for k in ("mean", "std", "min", "max"):
                s[k][ix] = float(r[k])
            s["seeds"] = np.array(int(r["seeds"]))
    return summary, lengths, tuple(study["train_digits"])


def _encodings(folder: Path) -> list[str]:
    """The encodings with a heatmap: every one of a 2-D (addition) study, none of a 1-D one."""
    if (folder / STUDY).is_file() and int(json.loads((folder / STUDY).read_text()).get("dims", 2)) == 1:
        return []
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


# ----------------------------------------------------------------------------- a suite of studies
SUITE = "suite.csv"
_SUITE_METRICS = (("in_dist_mean", "in distribution"), ("at_1.5x_mean", "at 1.5x"), ("at_2x_mean", "at 2x"))


def suite_heatmaps(rows: list[dict]):
    """Tasks x encodings, one panel per metric (in-dist, 1.5x, 2x the longest training length); a
    task's row label carries the paper's verdict (+ generalises, - does not)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    pes = list(dict.fromkeys(r["pos"] for r in rows))
    by = {(r["task"], r["pos"]): r for r in rows}
    fig, axes2 = new_figure(
        1, 3, size=(3 + 1.1 * len(pes) * 3, 1.2 + 0.45 * len(tasks)), layout=None, sharey=True
    )
    for ax, (key, title) in zip(axes2[0], _SUITE_METRICS, strict=True):
        grid = np.array([[float(by[(t, p)][key]) if (t, p) in by else np.nan for p in pes] for t in tasks])
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(tasks)):
            for j in range(len(pes)):
                if not np.isnan(grid[i, j]):
                    color = "black" if grid[i, j] > 0.6 else "white"
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(len(pes)), pes, fontsize=8)
        ax.set_title(title, fontsize=10)
    labels = []
    for t in tasks:
        r = next(r for r in rows if r["task"] == t)
        labels.append(f"{t} ({'+' if r['paper_generalises'] in ('True', True) else '-'})")
    axes2[0][0].set_yticks(range(len(tasks)), labels, fontsize=8)
    fig.suptitle("exact match by task and encoding (+/-: the paper's verdict)", fontsize=10)
    fig.tight_layout()
    return fig


def _suite(folder: Path, _key):
    with open(Path(folder) / SUITE, newline="") as f:
        return suite_heatmaps(list(csv.DictReader(f)))


register_figure(
    FigureSpec(
        "lengths_suite",
        "Which tasks length-generalise",
        "Exact match per task (rows) and positional encoding (columns): in distribution, and at 1.5x "
        "and 2x the longest training length (mean over seeds). + / - after a task: whether Zhou et al. "
        "2023 found it generalises.",
        "lengths",
        (SUITE,),
        "suite.png",
        _suite,
    )
)
