"""Numerical-stability figures (Prieto et al. 2025) from `metrics.jsonl`: softmax collapse, the
cosine between the gradient and the naive-loss-minimisation direction, and the logit norm.

Two registered figures:
- `stability` (study "progress", one run): accuracy, softmax collapse, NLM cosine and logit norm
  against step; shown beside the loss curves.
- `stability_sweep` (study "sweeps", a sweep folder): test accuracy and softmax collapse against
  step for every trial, one colour per setting (its seeds share it).

The plot functions take metrics rows (the dicts of metrics.jsonl) and return a `Figure`.
"""

from __future__ import annotations

import json
from pathlib import Path

from grokscope.figures.render import new_figure
from grokscope.figures.spec import FigureSpec, register_figure

#: the metrics these figures read (logged at each evaluation since train.loss / ⊥Grad landed)
COLLAPSE, NLM, LOGIT_NORM = "train_softmax_collapse", "nlm_cosine", "train_logit_norm"


def _column(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    got = [(r["step"], r[key]) for r in rows if key in r]
    return [s for s, _ in got], [v for _, v in got]


def stability_curves(rows: list[dict], title: str = ""):
    """One run: accuracy, softmax-collapse fraction, NLM cosine and logit norm against step."""
    fig, axes = new_figure(1, 4, size=(15, 3.4))
    ax = axes[0, 0]
    for key, color in (("train_acc", "C0"), ("test_acc", "C1")):
        ax.plot(*_column(rows, key), color=color, label=key.replace("_", " "), lw=1.2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="center right")
    panels = (
        (COLLAPSE, "softmax collapse (fraction of train,\nfloat32 p(right) == 1)", False),
        (NLM, "cos(-grad, weights)\n(NLM direction)", False),
        (LOGIT_NORM, "mean logit norm (train)", True),
    )
    for ax, (key, label, log) in zip(axes[0, 1:], panels, strict=True):
        ax.plot(*_column(rows, key), color="C2", lw=1.2)
        ax.set_ylabel(label, fontsize=9)
        if log:
            ax.set_yscale("log")
    axes[0, 1].set_ylim(-0.02, 1.02)
    for ax in axes[0]:
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def stability_comparison(runs: dict[str, list[list[dict]]], title: str = ""):
    """Several settings, each with the metrics rows of its seeds: test accuracy and softmax collapse
    (and the NLM cosine) against step; one colour per setting, one line per seed."""
    fig, axes = new_figure(1, 3, size=(15, 4.2))
    for i, (label, seeds) in enumerate(runs.items()):
        for j, rows in enumerate(seeds):
            name = label if j == 0 else None
            axes[0, 0].plot(*_column(rows, "test_acc"), color=f"C{i}", lw=1.1, label=name, alpha=0.85)
            axes[0, 1].plot(*_column(rows, COLLAPSE), color=f"C{i}", lw=1.1, alpha=0.85)
            axes[0, 2].plot(*_column(rows, NLM), color=f"C{i}", lw=1.1, alpha=0.85)
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, 1].set_ylabel("softmax collapse (train, float32)")
    axes[0, 2].set_ylabel("cos(-grad, weights)")
    for ax in axes[0, :2]:
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[0]:
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------- from the folders
def _run_figure(folder: Path, _key):
    from grokscope.run import Run

    run = Run.open(folder)
    rows = run.read_metrics()
    if not any(COLLAPSE in r for r in rows):
        return None  # trained before these metrics were logged
    return stability_curves(rows, f"{run.config.name} (seed {run.config.seed})")


def sweep_settings(folder: Path) -> dict[str, list[list[dict]]]:
    """A sweep folder's trials grouped by their overrides (seeds together): label -> metrics rows."""
    from grokscope.run import Run

    manifest = json.loads((Path(folder) / "sweep.json").read_text())
    runs: dict[str, list[list[dict]]] = {}
    for trial in manifest.get("trials", []):
        path = Path(folder) / "runs" / trial["name"]
        if not (path / "metrics.jsonl").is_file():
            continue
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in trial["overrides"].items()) or "base"
        runs.setdefault(label, []).append(Run(path).read_metrics())
    return runs


def _sweep_figure(folder: Path, _key):
    runs = sweep_settings(folder)
    if not any(COLLAPSE in r for seeds in runs.values() for rows in seeds for r in rows):
        return None
    name = json.loads((Path(folder) / "sweep.json").read_text()).get("name", "")
    return stability_comparison(runs, name)


register_figure(
    FigureSpec(
        "stability",
        "Numerical stability: softmax collapse, NLM cosine, logit norm",
        "Prieto et al. (2025): without weight decay the logits grow until the float32 softmax of the "
        "right class is exactly 1 (softmax collapse, second panel) and the gradient mostly scales the "
        "weights up (the naive-loss-minimisation direction; its cosine with the descent direction, "
        "third panel). Weight decay keeps the logit norm (fourth panel) in check.",
        "progress",
        ("metrics.jsonl",),
        "figures/stability.png",
        _run_figure,
    )
)
register_figure(
    FigureSpec(
        "stability_sweep",
        "Test accuracy and softmax collapse per setting",
        "Each colour one setting of the sweep, each line one seed: test accuracy, the fraction of "
        "training examples whose float32 softmax is exactly 1 on the right class, and the cosine "
        "between the descent direction and the weights.",
        "sweeps",
        ("sweep.json",),
        "stability.png",
        _sweep_figure,
    )
)

__all__ = ["stability_comparison", "stability_curves", "sweep_settings"]
