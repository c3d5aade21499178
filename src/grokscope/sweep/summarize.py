"""`grokscope summarize SWEEP_DIR`: one CSV row per trial (overrides + headline figures).

The plot of a column against an override is `grokscope.figures.sweeps` (`plot_summary`).

Headline figures come from each run's metrics.jsonl; where the progress-measures analysis has run
(`grokscope analyze` / `report`: `RUN/analysis/key_frequencies.json`, `RUN/analysis/phases.json`),
its key frequencies and phase boundaries are added. Those files are read defensively: missing or
unfamiliar ones leave their columns empty.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from grokscope.analysis.phases import FIT_ACC, GROK_ACC
from grokscope.files import write_if_changed
from grokscope.run import Run
from grokscope.sweep.folder import SweepFolder
from grokscope.sweep.spec import format_value

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
        out["fit_step"] = first_step(rows, "train_acc", lambda v: v >= FIT_ACC)
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
    write_if_changed(path, buf.getvalue())  # unchanged: its mtime stays, so its plots are not redone
    return path, rows


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | bool):
        return format_value(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
