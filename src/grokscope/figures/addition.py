"""Figures for addition runs: accuracy heatmap by operand lengths, its spread over seeds, and the
per-answer-position loss curves. Each plot function returns a matplotlib Figure and does no I/O; the
registered specs make them from what `grokscope eval` wrote (`analysis/accuracy_by_length.csv`,
`analysis/position_labels.json`, the across-runs `accuracy_by_length_runs.csv`) and `metrics.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path

from grokscope.evaluation.by_length import cell_grid
from grokscope.figures.render import colormap, new_figure
from grokscope.figures.spec import FigureSpec, register_figure


def accuracy_heatmap(rows: list[dict], title: str, metric: str = "gen_exact"):
    """Exact match per (len a, len b) cell, train and test side by side, with cell sizes."""
    splits = [s for s in ("train", "test") if any(r["split"] == s and r["group"] == "cell" for r in rows)]
    fig, axes = new_figure(1, max(1, len(splits)), size=(4.2 * max(1, len(splits)), 3.8), layout=None)
    for ax, split in zip(axes[0], splits, strict=False):
        la, lb, grid, counts = cell_grid(rows, split, metric)
        im = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(lb)), [str(v) for v in lb])
        ax.set_yticks(range(len(la)), [str(v) for v in la])
        ax.set_xlabel("digits in b")
        ax.set_ylabel("digits in a")
        ax.set_title(f"{split}: {metric}")
        for i in range(len(la)):
            for j in range(len(lb)):
                if counts[i, j] > 0:
                    v = grid[i, j].item()
                    ax.text(
                        j,
                        i,
                        f"{v:.3f}\nn={int(counts[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="black" if v > 0.6 else "white",
                    )
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def seeds_distribution(tables: dict[str, list[dict]], metric: str = "gen_exact"):
    """Per (len a, len b) cell, one dot per run (seed) and a box over runs; train and test panels."""
    fig, axes = new_figure(2, 1, size=(max(6, 0.9 * _n_cells(tables) + 2), 7), layout=None)
    names = list(tables)
    colors = colormap("tab10")
    for ax, split in zip(axes[:, 0], ("train", "test"), strict=True):
        cells: dict[tuple[int, int], dict[int, float]] = {}
        for r_i, name in enumerate(names):
            for r in tables[name]:
                if r["split"] == split and r["group"] == "cell":
                    cells.setdefault((r["len_a"], r["len_b"]), {})[r_i] = r[metric]
        keys = sorted(cells)
        if keys:
            ax.boxplot(
                [list(cells[k].values()) for k in keys],
                positions=range(len(keys)),
                widths=0.5,
                showfliers=False,
            )
            for r_i, name in enumerate(names):
                xs = [i for i, k in enumerate(keys) if r_i in cells[k]]
                ys = [cells[keys[i]][r_i] for i in xs]
                label = name.rstrip("/").split("/")[-1]
                ax.scatter(xs, ys, s=20, alpha=0.85, zorder=3, color=colors(r_i % 10), label=label)
            ax.set_xticks(range(len(keys)), [f"{a}+{b}" for a, b in keys])
            ax.legend(fontsize=7, loc="lower right")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(metric)
        ax.set_title(f"{split}: one dot per run ({len(tables)} runs), digits of a + digits of b")
    fig.tight_layout()
    return fig


def _n_cells(tables: dict[str, list[dict]]) -> int:
    return len({(r["len_a"], r["len_b"]) for rows in tables.values() for r in rows if r["group"] == "cell"})


def loss_by_position(metrics: list[dict], labels: list[str], split: str = "test"):
    """Loss at each answer position over training (log scale): one phase change per digit."""
    key = f"{split}_loss_by_pos"
    rows = [r for r in metrics if key in r]
    fig, axes2 = new_figure(1, 2, size=(11, 4), layout=None)
    axes = axes2[0]
    if not rows:
        return fig
    steps = [r["step"] for r in rows]
    K = len(rows[0][key])
    cmap = colormap("viridis")
    for k in range(K):
        color = cmap(k / max(1, K - 1))
        label = labels[k] if k < len(labels) else f"pos {k}"
        axes[0].plot(steps, [max(r[key][k], 1e-12) for r in rows], color=color, label=label)
        acc_key = f"{split}_acc_by_pos"
        if acc_key in rows[0]:
            axes[1].plot(steps, [r[acc_key][k] for r in rows], color=color, label=label)
    axes[0].set_yscale("log")
    axes[0].set_title(f"{split} loss per answer position")
    axes[1].set_title(f"{split} accuracy per answer position")
    for ax in axes:
        ax.set_xlabel("step")
    if f"{split}_exact" in rows[0]:
        axes[1].plot(steps, [r[f"{split}_exact"] for r in rows], "k--", label="exact match")
    axes[1].legend(fontsize=7, ncol=2 if K > 8 else 1)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- from the run folder
TABLE, LABELS = "analysis/accuracy_by_length.csv", "analysis/position_labels.json"


def _read(path: Path) -> list[dict]:
    from grokscope.interp.io import read_csv

    return read_csv(path)


def _heatmap(folder: Path, _key):
    from grokscope.run import Run

    config = Run.open(folder).config
    return accuracy_heatmap(_read(folder / TABLE), f"{config.name} (seed {config.seed})")


def _loss_by_position(folder: Path, _key):
    from grokscope.run import Run

    metrics = Run(folder).read_metrics()
    if not any("test_loss_by_pos" in r for r in metrics):
        return None
    return loss_by_position(metrics, json.loads((folder / LABELS).read_text()))


def _seeds(folder: Path, _key):
    tables: dict[str, list[dict]] = {}
    for r in _read(folder / "accuracy_by_length_runs.csv"):
        tables.setdefault(str(r.pop("run")), []).append(r)
    return seeds_distribution(tables)


register_figure(
    FigureSpec(
        "accuracy_by_length",
        "Exact match by operand lengths",
        "Exact match (teacher-forced and generated) per (digits of a, digits of b) cell on the train and "
        "test sets, with the number of problems in each cell.",
        "addition",
        (TABLE,),
        "analysis/accuracy_by_length.png",
        _heatmap,
    )
)
register_figure(
    FigureSpec(
        "loss_by_position",
        "Loss per answer position over training",
        "Test loss and accuracy of each answer digit over training (log scale): the digits are learned "
        "one phase change at a time.",
        "addition",
        ("metrics.jsonl", LABELS),
        "figures/loss_by_position.png",
        _loss_by_position,
    )
)
register_figure(
    FigureSpec(
        "accuracy_by_length_runs",
        "Exact match by operand lengths, over runs",
        "Per (digits of a, digits of b) cell, one dot per run (seed) and a box over runs.",
        "addition",
        ("accuracy_by_length_runs.csv",),
        "accuracy_by_length_runs.png",
        _seeds,
    )
)
