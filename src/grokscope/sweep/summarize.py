"""`grokscope summarize SWEEP_DIR`: one CSV row per trial (overrides + headline figures), and a plot.

Headline figures come from each run's metrics.jsonl; where the progress-measures analysis has run
(`grokscope analyze` / `report`: `RUN/analysis/key_frequencies.json`, `RUN/analysis/phases.json`),
its key frequencies and phase boundaries are added. Those files are read defensively: missing or
unfamiliar ones leave their columns empty.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from grokscope.errors import GrokscopeError
from grokscope.files import atomic_write_bytes, atomic_write_text
from grokscope.run import Run
from grokscope.sweep.folder import SweepFolder
from grokscope.sweep.spec import format_value

GROK_ACC = 0.99  # test accuracy that counts as grokked
FIGURES = (
    "final_step",
    "final_train_loss",
    "final_test_loss",
    "final_train_acc",
    "final_test_acc",
    "best_train_loss",
    "best_test_loss",
    "best_train_acc",
    "best_test_acc",
    "fit_step",
    "grok_step",
    "test_loss_below_0.1_step",
    "key_frequencies",
    "memorization_end",
    "cleanup_start",
    "cleanup_end",
)


def first_step(rows: list[dict[str, Any]], key: str, ok) -> int | None:
    return next((r["step"] for r in rows if key in r and ok(r[key])), None)


def run_figures(run_dir: Path) -> dict[str, Any]:
    """Headline figures of one run folder (empty values where it has no metrics yet)."""
    rows = Run(run_dir).read_metrics() if (run_dir / "metrics.jsonl").is_file() else []
    out: dict[str, Any] = {}
    if rows:
        last = rows[-1]
        out["final_step"] = last["step"]
        for split in ("train", "test"):
            losses = [r[f"{split}_loss"] for r in rows if f"{split}_loss" in r]
            accs = [r[f"{split}_acc"] for r in rows if f"{split}_acc" in r]
            out[f"final_{split}_loss"] = last.get(f"{split}_loss")
            out[f"final_{split}_acc"] = last.get(f"{split}_acc")
            out[f"best_{split}_loss"] = min(losses) if losses else None
            out[f"best_{split}_acc"] = max(accs) if accs else None
        out["fit_step"] = first_step(rows, "train_acc", lambda v: v >= GROK_ACC)
        out["grok_step"] = first_step(rows, "test_acc", lambda v: v >= GROK_ACC)
        out["test_loss_below_0.1_step"] = first_step(rows, "test_loss", lambda v: v < 0.1)
    out.update(analysis_figures(run_dir / "analysis"))
    return out


PHASE_KEYS = ("memorization_end", "cleanup_start", "cleanup_end")


def analysis_figures(analysis_dir: Path) -> dict[str, Any]:
    """Key frequencies (`key_frequencies.json`) and phase boundaries (`phases.json`) where present."""
    out: dict[str, Any] = {}
    freqs = _read_json(analysis_dir / "key_frequencies.json")
    freqs = freqs.get("key_freqs", freqs.get("key_frequencies"))
    if isinstance(freqs, list):
        out["key_frequencies"] = " ".join(str(f) for f in freqs)
    phases = _read_json(analysis_dir / "phases.json")
    for key in PHASE_KEYS:
        if isinstance(phases.get(key), int):
            out[key] = phases[key]
    return out


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------- the table


def summarize(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per trial of the sweep: name, overrides, seed, status, headline figures."""
    folder = SweepFolder(sweep_dir)
    manifest = folder.manifest()
    status = _statuses(folder.path / "trials.csv")
    rows = []
    for trial in manifest["trials"]:
        row: dict[str, Any] = {"trial": trial["name"]}
        row.update(trial["overrides"])
        row["seed"] = trial["seed"]
        row["status"] = status.get(trial["name"], {}).get("status", "")
        row["error"] = status.get(trial["name"], {}).get("error", "")
        row.update(run_figures(folder.run_dir(trial["name"])))
        rows.append(row)
    return rows


def _statuses(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["trial"]: r for r in csv.DictReader(f)}


def write_summary(sweep_dir: str | Path, out: str | Path | None = None) -> tuple[Path, list[dict[str, Any]]]:
    folder = SweepFolder(sweep_dir)
    rows = summarize(folder.path)
    keys = folder.manifest().get("swept_keys", [])
    fields = ["trial", *keys, "seed", "status", *FIGURES, "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    path = Path(out) if out else folder.path / "summary.csv"
    atomic_write_text(path, buf.getvalue())
    return path, rows


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | bool):
        return format_value(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# ----------------------------------------------------------------------------- the plot


def plot_summary(
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    out: str | Path,
    by: str | None = None,
    title: str = "",
    log_y: bool = False,
) -> Path:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r.get(by)) if by else None, []).append(r)
    xs_all = [_num(r.get(x)) for r in rows]
    numeric_x = all(isinstance(v, int | float) for v in xs_all)
    categories = sorted({_key(r.get(x)) for r in rows}, key=str) if not numeric_x else []
    ys_all = [v for r in rows if isinstance(v := _num(r.get(y)), int | float) and math.isfinite(v)]
    top = max(ys_all) * 1.08 if ys_all else 1.0

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out


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
