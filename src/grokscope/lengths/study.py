"""The length-generalization study: train each encoding x seed on short problems, then read exact
match on longer ones -- a (len a, len b) grid for addition, one accuracy per length for a sequence
task (count, mode, copy, sort, parity; `grokscope.tasks.rasp`).

Training runs as an ordinary sweep (`grokscope.sweep`): run folders side by side under
`OUT/runs/`, in parallel local processes with one thread each, and re-running the same command
resumes (finished runs are skipped, stopped ones continue from their state). Each run's grid is
cached in its `analysis/` folder, so a re-run only evaluates what is new.

```
OUT/runs/pos=abacus__seed=0/ ...   run folders (plus the sweep's spec/configs/logs/trials.csv)
OUT/lengths.csv                    pos, seed, len_a, len_b, n, exact   (one row per run and cell;
                                   sequence tasks: pos, seed, length, n, exact)
OUT/lengths_summary.csv            pos, len_a, len_b (or length), seeds, mean, std, min, max
OUT/lengths.md                     in-distribution and diagonal accuracy per encoding (mean ± std)
OUT/lengths_study.json             the grid's lengths, the training lengths, problems per cell, dims
OUT/heatmap_<pos>.png              mean over seeds per cell, with the spread written in each cell (2-D)
OUT/lengths_by_length.png          accuracy against length, one line per encoding, min-max band
```
The figures are made from the tables by `grokscope.figures.lengths` (the `lengths` verb and
`grokscope report OUT` render them).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from grokscope.errors import GrokscopeError

if TYPE_CHECKING:
    from grokscope.config import RunConfig


# The problems every length grid reads (studies and `grokscope eval --digits`), so their cells compare.
GRID_SEED = 12345


@dataclass
class StudySpec:
    """What to train and read. `train_digits` / `test_digits` are length ranges: operand digits
    for addition, the task's own length for a sequence task (`--train-lengths`)."""

    config: str  # preset name or TOML file
    pes: list[str]
    seeds: list[int]
    train_digits: tuple[int, int] = (1, 5)
    test_digits: tuple[int, int] = (1, 12)
    overrides: list[str] = field(default_factory=list)
    n_per_cell: int = 100
    eval_seed: int = GRID_SEED

    @property
    def lengths(self) -> list[int]:
        return list(range(self.test_digits[0], self.test_digits[1] + 1))


def parse_range(text: str, what: str) -> tuple[int, int]:
    """`1-5` -> (1, 5); `7` -> (7, 7)."""
    parts = text.split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or hi is None or lo < 1 or hi < lo:
        raise GrokscopeError(f"bad {what} {text!r}: expected a length range like 1-5 (lengths >= 1)")
    return lo, hi


def parse_seeds(text: str) -> list[int]:
    """`3` -> [0, 1, 2]; `0,4,7` -> those seeds; `5,` (a trailing comma) -> the single seed 5."""
    try:
        listed = [int(s) for s in text.split(",") if s.strip()] if "," in text else None
        seeds = listed if listed is not None else list(range(int(text)))
    except ValueError:
        raise GrokscopeError(f"bad --seeds {text!r}: a count (3), a list (0,1,2) or one seed (5,)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise GrokscopeError(
            f"bad --seeds {text!r}: need at least one distinct seed >= 0 (a count, or one seed as `5,`)"
        )
    return seeds


def study_config(spec: StudySpec) -> tuple[str, RunConfig]:
    """(base, config): the preset or file (as an absolute path) and its config with the study's
    overrides and training lengths applied."""
    from grokscope.config import apply_overrides, from_dict
    from grokscope.presets import load_preset_or_file

    base = spec.config
    if Path(base).is_file():
        base = str(Path(base).resolve())
    data = apply_overrides(load_preset_or_file(base), spec.overrides)
    return base, from_dict(apply_overrides(data, length_overrides(spec, from_dict(data).task)))


def length_overrides(spec: StudySpec, task_config) -> list[str]:
    """`--set`s of the training length range, in the task's own settings (digits or lengths)."""
    from grokscope.lengths.grid import length_fields

    try:
        lo_key, hi_key = length_fields(task_config)
    except GrokscopeError as e:
        raise GrokscopeError(f"{spec.config}: `grokscope lengths`: {e}") from None
    return [f"{lo_key}={spec.train_digits[0]}", f"{hi_key}={spec.train_digits[1]}"]


def untrained_abacus_note(pes: list[str], train_digits: int, test_digits: int, max_offset: int) -> str | None:
    """A warning when problems of up to `test_digits` digits reach digit indices no training step
    used: sums of `train_digits`-digit operands have at most train_digits + 1 digits, and offsets
    (or random subsets) add at most `max_offset` (model.abacus_max_offset)."""
    if not any("abacus" in p.split("+") for p in pes):
        return None
    last = train_digits + 1 + max_offset
    if test_digits + 1 <= last:
        return None
    return (
        f"Abacus: digit indices past {last} were never trained (sums of {train_digits}-digit operands, "
        f"plus model.abacus_max_offset = {max_offset}); operands of {last} digits or more read "
        "untrained rows. Raise model.abacus_max_offset to reach them."
    )


def sweep_spec(spec: StudySpec, out: Path):
    """The sweep that trains every encoding x seed: the base config with training digits and a
    context long enough for the longest test problem (learned positions past the trained length
    exist but stay untrained -- the point of the comparison)."""
    import tomli_w

    from grokscope.lengths.grid import eval_task
    from grokscope.registry import POSITIONAL
    from grokscope.sweep.spec import parse_spec

    bad = [p for p in spec.pes if p not in POSITIONAL]
    if bad or not spec.pes or len(set(spec.pes)) != len(spec.pes):
        raise GrokscopeError(
            f"bad --pe {','.join(spec.pes)!r}: give distinct values from {', '.join(POSITIONAL.names())}"
        )
    base, config = study_config(spec)
    lo, hi = spec.train_digits
    if spec.test_digits[1] < hi:
        raise GrokscopeError(f"--test-lengths must reach at least the training length {hi}")
    if getattr(config.task, "index_hints", False) and spec.test_digits[1] > hi:
        raise GrokscopeError(
            f"task.index_hints: hint tokens name the columns of {hi}-digit training problems only, so "
            f"the models could not read {spec.test_digits[1]}-digit ones; use --test-digits up to {hi} "
            "or turn index hints off"
        )
    n_ctx = max(eval_task(config.task, spec.test_digits[1]).n_ctx, config.model.n_ctx)
    fixed = [*spec.overrides, *length_overrides(spec, config.task), f"model.n_ctx={n_ctx}"]
    table = {
        "sweep": {"name": "lengths", "base": base, "seeds": spec.seeds, "set": fixed},
        "grid": {"model.pos": list(spec.pes)},
    }
    source = "# grokscope lengths: the training sweep of a length-generalization study\n" + tomli_w.dumps(
        table
    )
    return parse_spec(table, out / "spec.toml", source=source)


# ----------------------------------------------------------------------------- evaluation


def _grid_of_run(run_dir: str, lengths: list[int], n: int, seed: int) -> list[list[float]]:
    """One run's grid, cached in its analysis folder (key: lengths, n, seed, last checkpoint)."""
    import torch

    torch.set_num_threads(1)
    from grokscope.files import atomic_write_text
    from grokscope.lengths.grid import length_grid
    from grokscope.run import Run

    run = Run.open(run_dir)
    config = run.config
    model = run.model()
    key = {"lengths": lengths, "n": n, "seed": seed, "step": run.last_step()}
    cache = run.subdir("analysis") / "lengths.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["exact"]
    grid = length_grid(model, config.task, lengths, n=n, seed=seed).tolist()
    atomic_write_text(cache, json.dumps({"key": key, "exact": grid}) + "\n")
    return grid


def evaluate_runs(
    runs: dict[tuple[str, int], Path], spec: StudySpec, workers: int
) -> dict[tuple[str, int], np.ndarray]:
    """(pos, seed) -> exact-match grid, evaluated in `workers` processes of one thread each."""
    keys = sorted(runs)
    args = [(str(runs[k]), spec.lengths, spec.n_per_cell, spec.eval_seed) for k in keys]
    if workers <= 1 or len(keys) <= 1:
        grids = [_grid_of_run(*a) for a in args]
    else:
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            ctx = multiprocessing.get_context("spawn")  # no fork of a parent whose torch threads ran
            with ProcessPoolExecutor(max_workers=min(workers, len(keys)), mp_context=ctx) as pool:
                grids = list(pool.map(_grid_of_run, *zip(*args, strict=True)))
        finally:
            if env_threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_threads
    return {k: np.asarray(g, dtype=np.float64) for k, g in zip(keys, grids, strict=True)}


# ----------------------------------------------------------------------------- tables


def summarize(grids: dict[tuple[str, int], np.ndarray], pes: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """pos -> {mean, std, min, max, seeds} over its seeds' grids."""
    out = {}
    for pos in pes:
        mine = [g for (p, _), g in sorted(grids.items()) if p == pos]
        if not mine:
            continue
        stack = np.stack(mine)
        out[pos] = {
            "mean": stack.mean(0),
            "std": stack.std(0),
            "min": stack.min(0),
            "max": stack.max(0),
            "seeds": np.array(len(stack)),
        }
    return out


def write_tables(out: Path, spec: StudySpec, grids, summary, note: str | None = None) -> str:
    """Write lengths.csv, lengths_summary.csv and lengths.md (the table, then `note`); return it."""
    from grokscope.files import atomic_write_text

    dims = next(iter(grids.values())).ndim
    cells = _cells(spec.lengths, dims)  # (key columns, index) per cell
    names = ["len_a", "len_b"] if dims == 2 else ["length"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["pos", "seed", *names, "n", "exact"])
    for (pos, seed), g in sorted(grids.items()):
        for key, ix in cells:
            w.writerow([pos, seed, *key, spec.n_per_cell, f"{g[ix]:.4f}"])
    atomic_write_text(out / "lengths.csv", buf.getvalue())

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["pos", *names, "seeds", "mean", "std", "min", "max"])
    for pos, s in summary.items():
        for key, ix in cells:
            w.writerow(
                [pos, *key, int(s["seeds"])] + [f"{s[k][ix]:.4f}" for k in ("mean", "std", "min", "max")]
            )
    atomic_write_text(out / "lengths_summary.csv", buf.getvalue())

    md = markdown_table(spec, grids, summary) + (f"\n{note}\n" if note else "")
    atomic_write_text(out / "lengths.md", md)
    study = {
        "lengths": spec.lengths,
        "train_digits": list(spec.train_digits),
        "n_per_cell": spec.n_per_cell,
        "dims": dims,
    }
    atomic_write_text(out / "lengths_study.json", json.dumps(study) + "\n")
    return md


def _cells(lengths: list[int], dims: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(lengths of the cell, its index in the grid), row-major."""
    if dims == 1:
        return [((a,), (i,)) for i, a in enumerate(lengths)]
    return [((a, b), (i, j)) for i, a in enumerate(lengths) for j, b in enumerate(lengths)]


def per_run_scores(spec: StudySpec, grid: np.ndarray) -> dict[str, float]:
    """In-distribution mean (both operands within the training lengths) and the diagonal; for a
    1-D grid, the mean over the training lengths and each longer length."""
    L = np.array(spec.lengths)
    lo, hi = spec.train_digits
    if grid.ndim == 1:
        inside = (lo <= L) & (hi >= L)
        scores = {"in-dist": float(grid[inside].mean()) if inside.any() else float("nan")}
        scores.update({str(n): float(grid[i]) for i, n in enumerate(L) if n > hi})
        return scores
    inside = (L[:, None] <= spec.train_digits[1]) & (L[None, :] <= spec.train_digits[1])
    inside &= (L[:, None] >= spec.train_digits[0]) & (L[None, :] >= spec.train_digits[0])
    scores = {"in-dist": float(grid[inside].mean()) if inside.any() else float("nan")}
    scores.update({str(n): float(grid[i, i]) for i, n in enumerate(L) if n > spec.train_digits[1]})
    return scores


def markdown_table(spec: StudySpec, grids, summary) -> str:
    """Rows = encodings; columns = in-distribution mean, then the diagonal len a = len b past the
    training range; each cell mean ± std over seeds (exact match, greedy decoding)."""
    cols = ["in-dist"] + [str(n) for n in spec.lengths if n > spec.train_digits[1]]
    one_d = next(iter(grids.values())).ndim == 1
    lines = [
        f"Exact match (greedy), mean ± std over seeds, {spec.n_per_cell} problems per "
        f"{'length' if one_d else 'cell'}; trained on {spec.train_digits[0]}-{spec.train_digits[1]} "
        + (
            "(task length); in-dist = mean over the training lengths; numbers = length."
            if one_d
            else "digits; in-dist = mean over cells with both lengths in the training range; "
            "numbers = len a = len b."
        ),
        "",
        "| pos | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for pos in summary:
        rows = [per_run_scores(spec, g) for (p, _), g in sorted(grids.items()) if p == pos]
        cells = []
        for c in cols:
            v = np.array([r[c] for r in rows])
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
        lines.append(f"| {pos} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the whole study


def run_study(spec: StudySpec, out: str | Path, workers: int | None = None, progress: bool = True) -> str:
    """Train what is missing, evaluate, write the tables; returns the markdown table. (Figures:
    `grokscope.figures.write_figures(out, "lengths")`.)"""
    from grokscope.sweep.folder import SweepFolder
    from grokscope.sweep.runner import default_workers, run_sweep
    from grokscope.sweep.trial import trial_state

    out = Path(out)
    if spec.n_per_cell < 1:
        raise GrokscopeError(f"--n-per-cell must be >= 1, got {spec.n_per_cell}")
    sweep = sweep_spec(spec, out)
    workers = workers or default_workers()
    result = run_sweep(sweep, out, workers=workers, progress=progress)
    folder = SweepFolder(out)
    runs, unfinished = {}, []
    for trial in sweep.trials:
        run_dir = folder.run_dir(trial.name)
        if trial_state(run_dir) == "finished":
            runs[(trial.overrides["model.pos"], trial.seed)] = run_dir
        else:
            unfinished.append(f"{trial.name} ({result.rows.get(trial.name, {}).get('status', '?')})")
    if not runs:
        raise GrokscopeError(f"no run of the study finished; see {out / 'logs'} and {out / 'trials.csv'}")
    grids = evaluate_runs(runs, spec, workers)
    summary = summarize(grids, spec.pes)
    config = study_config(spec)[1]
    offset = config.model.abacus_max_offset
    note = None
    if getattr(config.task, "kind", "") == "addition":
        note = untrained_abacus_note(spec.pes, spec.train_digits[1], spec.test_digits[1], offset)
    md = write_tables(out, spec, grids, summary, note=note)
    if unfinished:
        md += f"\nNot finished (left out; re-run the same command to resume): {', '.join(unfinished)}\n"
    return md


def default_ranges(config: str, overrides: list[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(train, test) lengths when the command gives none: addition 1-5 and 1-12 digits; a sequence
    task its config's min_len..max_len, tested up to twice max_len."""
    from grokscope.config import apply_overrides, from_dict
    from grokscope.lengths.grid import check_length_task
    from grokscope.presets import load_preset_or_file

    task = from_dict(apply_overrides(load_preset_or_file(config), overrides)).task
    check_length_task(task)
    if getattr(task, "kind", "") == "addition":
        return (1, 5), (1, 12)
    return (task.min_len, task.max_len), (1, 2 * task.max_len)
