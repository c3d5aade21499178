"""Figures of a sweep: a summary column (default `grok_step`) against a swept override.

`plot_summary(rows, x, y, out)` is what `grokscope summarize` draws; the registered spec makes the
default plot (`grok_step` against the only swept key) from `SWEEP_DIR/summary.csv` for the report.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from grokscope.errors import GrokscopeError
from grokscope.figures.render import new_figure, save_png
from grokscope.figures.spec import FigureSpec, register_figure


def plot_summary(
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    out: str | Path,
    by: str | None = None,
    title: str = "",
    log_y: bool = False,
) -> Path:
    """Write `summary_figure(rows, x, y, ...)` to the PNG `out` (atomically); returns its path."""
    return save_png(summary_figure(rows, x, y, by, title, log_y), Path(out), dpi=120)


def summary_figure(
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    by: str | None = None,
    title: str = "",
    log_y: bool = False,
):
    """`y` against the override `x`: each seed a dot, the mean over seeds a line with min-max bars.

    Trials where `y` is missing (e.g. never grokked) are drawn as open triangles at the top.
    """
    known = set().union(*(r.keys() for r in rows)) if rows else set()
    for key, what in ((x, "--x"), (y, "--y"), (by, "--by")):
        if key is not None and key not in known:
            raise GrokscopeError(
                f"{what} {key!r} is not a column of this sweep's summary; "
                f"choose from: {', '.join(sorted(k for k in known if k not in ('error',)))}"
            )
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r.get(by)) if by else None, []).append(r)
    xs_all = [_num(r.get(x)) for r in rows]
    numeric_x = all(isinstance(v, int | float) for v in xs_all)
    categories = sorted({_key(r.get(x)) for r in rows}, key=str) if not numeric_x else []
    ys_all = [v for r in rows if isinstance(v := _num(r.get(y)), int | float) and math.isfinite(v)]
    top = max(ys_all) * 1.08 if ys_all else 1.0

    fig, axes = new_figure(size=(6.4, 4.2), layout=None)
    ax = axes[0, 0]
    missing_shown = False
    for i, (group, members) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        color = f"C{i % 10}"
        by_x: dict[Any, list[float]] = {}
        missing: list[Any] = []
        for r in members:
            xv = _num(r.get(x)) if numeric_x else categories.index(_key(r.get(x)))
            yv = _num(r.get(y))
            if isinstance(yv, int | float) and math.isfinite(yv):
                by_x.setdefault(xv, []).append(float(yv))
            else:
                missing.append(xv)
        xs = sorted(by_x)
        label = f"{by}={group}" if by else None
        for xv in xs:
            ax.scatter([xv] * len(by_x[xv]), by_x[xv], s=14, color=color, alpha=0.5, lw=0)
        means = [sum(by_x[v]) / len(by_x[v]) for v in xs]
        lo = [m - min(by_x[v]) for m, v in zip(means, xs, strict=True)]
        hi = [max(by_x[v]) - m for m, v in zip(means, xs, strict=True)]
        if xs:
            ax.errorbar(xs, means, yerr=[lo, hi], color=color, marker="o", capsize=3, label=label)
        if missing:
            ax.scatter(missing, [top] * len(missing), marker="^", facecolors="none", edgecolors=color, s=40)
            missing_shown = True
    n_seeds = max(
        (len({r.get("seed") for r in rows if _key(r.get(x)) == _key(v)}) for v in xs_all), default=0
    )
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if not numeric_x:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30)
    if log_y:
        ax.set_yscale("log")
    n_missing = sum(1 for r in rows if not isinstance(_num(r.get(y)), int | float))
    note = f"mean over seeds (n<={n_seeds}), bars min-max"
    if n_missing:
        note += f"; ^ = {n_missing} trial(s) without a value"
    ax.set_title(title + ("\n" if title else "") + note, fontsize=9)
    if missing_shown:
        ax.scatter([], [], marker="^", facecolors="none", edgecolors="grey", label=f"no {y} (not reached)")
    if by or missing_shown:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _num(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def slug(text: str) -> str:
    """A column name as it appears in a file name (`task.frac_train` -> `task_frac_train`)."""
    return text.replace(".", "_").replace("/", "_")


# ----------------------------------------------------------------------------- from the sweep folder
def read_summary_rows(folder: Path) -> list[dict[str, Any]]:
    """summary.csv's rows as dicts of strings (empty cells dropped: those trials have no value)."""
    with open(Path(folder) / "summary.csv", newline="") as f:
        return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _swept_key(folder: Path) -> str | None:
    import json

    try:
        keys = json.loads((folder / "sweep.json").read_text()).get("swept_keys", [])
    except (OSError, ValueError, AttributeError):
        return None
    return keys[0] if len(keys) == 1 else None


def _default_plot(folder: Path, _key):
    import json

    x = _swept_key(folder)
    rows = read_summary_rows(folder)
    if x is None or not rows or not any(x in r for r in rows):
        return None
    known = set().union(*(r.keys() for r in rows))
    if "grok_step" not in known:
        for r in rows:
            r.setdefault("grok_step", "")  # no trial grokked: all drawn as open triangles
    name = json.loads((folder / "sweep.json").read_text()).get("name", "")
    return summary_figure(rows, x, "grok_step", title=name)


register_figure(
    FigureSpec(
        "sweep_grok_step",
        "Grokking step against the swept setting",
        "First evaluated step with test accuracy >= 99% for each trial: each seed a dot, the mean over "
        "seeds a line with min-max bars; open triangles are trials that never grokked.",
        "sweeps",
        ("summary.csv", "sweep.json"),
        "grok_step_vs_{key}.png",
        _default_plot,
        keys=lambda folder: [slug(k)] if (k := _swept_key(folder)) else [],
    )
)
