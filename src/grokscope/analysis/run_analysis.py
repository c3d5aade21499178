"""`analyze_run(DIR)`: every progress measure at every checkpoint, cached in `DIR/analysis/`.

Files written (one row per checkpoint in each CSV):
```
analysis/progress.csv              losses, accuracies, restricted/excluded loss, Gini, Σw², ...
analysis/cos_coeffs.csv            coefficient of cos(k(a+b−c)) in the logits, k = 1..(p-1)/2
analysis/excluded_loss_by_freq.csv train loss with each key frequency removed alone
analysis/fourier_W_E.csv           Fourier-component norms of W_E (const, cos_1, sin_1, ...)
analysis/fourier_W_L.csv           Fourier-component norms of W_L = W_out W_U along the answer axis
analysis/key_frequencies.json      key frequencies + each neuron's frequency and fraction explained
analysis/phases.json               memorization / circuit formation / cleanup boundaries (`run_phases`)
analysis/snapshot.safetensors      the final checkpoint's attention, example neurons and logit Fourier norms
analysis/analysis_meta.json        what the tables were computed with (the cache key)
```
Files whose content did not change are not rewritten (their mtimes stay), so figures made from them
are not made again.
A second call computes only checkpoints missing from the tables, unless the key frequencies or
options changed (then everything is recomputed). Checkpoints are streamed in chunks, so memory does
not grow with their number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grokscope.analysis import progress as pm
from grokscope.analysis.fourier import basis_names, n_freqs
from grokscope.analysis.key_frequencies import (
    KeyFrequencies,
    key_frequencies,
    neuron_frequencies,
    select_key_freqs,
)
from grokscope.analysis.modular_view import check_task, last_mlp_name, modular_outputs
from grokscope.analysis.options import AnalyzeOptions
from grokscope.analysis.phases import run_phases
from grokscope.analysis.snapshot import SNAPSHOT_FILE, read_snapshot, snapshot, snapshot_bytes
from grokscope.analysis.tables import read_table, write_table
from grokscope.errors import GrokscopeError
from grokscope.files import write_if_changed

ANALYSIS_VERSION = 1
PROGRESS_COLUMNS = [
    "step",
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "restricted_loss_train",
    "restricted_loss_test",
    "excluded_loss_train",
    "excluded_loss_test",
    "gini_W_E",
    "gini_W_L",
    "sum_sq_weights",
    "frac_neurons_explained",
    "n_key_freqs_here",
]
TABLES = ("progress", "cos_coeffs", "excluded_loss_by_freq", "fourier_W_E", "fourier_W_L")


@dataclass
class RunAnalysis:
    """The analysis tables of one run, as numpy columns (what plots and the report read)."""

    path: Path
    p: int
    key: KeyFrequencies
    progress: dict[str, np.ndarray]
    cos_coeffs: dict[str, np.ndarray]
    excluded_by_freq: dict[str, np.ndarray]
    fourier_W_E: dict[str, np.ndarray]
    fourier_W_L: dict[str, np.ndarray]
    meta: dict

    @property
    def steps(self) -> np.ndarray:
        return self.progress["step"]


def load_phases(path: str | Path):
    """The `Phases` that `analyze_run` wrote to analysis/phases.json (computed again from the
    curves if the file is missing, as after an older grokscope)."""
    from grokscope.analysis.phases import Phases
    from grokscope.run import Run

    f = Path(path) / "analysis" / "phases.json"
    if f.is_file():
        return Phases(**json.loads(f.read_text()))
    return run_phases(Run(path).read_metrics(), load_analysis(path).progress)


def _files(adir: Path) -> dict[str, Path]:
    return {name: adir / f"{name}.csv" for name in TABLES}


def load_analysis(path: str | Path) -> RunAnalysis:
    """Read the tables `analyze_run` wrote (clear error if it has not run)."""
    path = Path(path)
    adir = path / "analysis"
    meta_path = adir / "analysis_meta.json"
    if not meta_path.is_file():
        raise GrokscopeError(f"{path} has no progress analysis yet; run `grokscope analyze {path}`")
    meta = json.loads(meta_path.read_text())
    key = KeyFrequencies(**json.loads((adir / "key_frequencies.json").read_text()))
    t = {name: read_table(f) for name, f in _files(adir).items()}
    return RunAnalysis(
        path,
        meta["p"],
        key,
        t["progress"],
        t["cos_coeffs"],
        t["excluded_loss_by_freq"],
        t["fourier_W_E"],
        t["fourier_W_L"],
        meta,
    )


def _resolve_key(
    run, model, task, key_freqs, threshold, min_share, rule=("carried", 0.5, 0.05)
) -> KeyFrequencies:
    """Detected on the final checkpoint (stored with per-neuron data), or the user's list; with the
    restricted train loss each rule's key set gives there, beside the model's own loss."""
    from grokscope.analysis.modular_view import SIGNS
    from grokscope.run import load_weights

    last = run.last_step()
    load_weights(model, run.load_checkpoint(last), f"checkpoint step {last} of {run.path}")
    out = modular_outputs(model, task)
    if out.neurons is None:
        raise GrokscopeError("the progress measures need an MLP (key frequencies come from its neurons)")
    name, floor, share = rule
    key = key_frequencies(out.neurons, task.p, threshold, min_share, step=last, rule=name,
                          carry_floor=floor, carry_share=share)  # fmt: skip
    if key_freqs is not None:
        K = n_freqs(task.p)
        bad = [k for k in key_freqs if not 1 <= k <= K]
        if bad or len(set(key_freqs)) != len(key_freqs):
            raise GrokscopeError(
                f"key frequencies must be distinct integers in 1..{K} for p = {task.p}; got {key_freqs}"
            )
        key.key_freqs = sorted(key_freqs)
        key.source = "user"
    sign = SIGNS[task.config.op]
    labels, idx = task.labels, task.train_idx

    def restricted(freqs: list[int]) -> float:
        return float(pm.restricted_loss_from_logits(out.logits, labels, idx, task.p, freqs, sign))

    for entry in key.by_rule.values():
        entry["restricted_loss_train"] = restricted(entry["key_freqs"])
    key.restricted_loss_train = restricted(key.key_freqs)
    key.model_loss_train = float(pm.cross_entropy(out.logits[idx], labels[idx]))
    return key


def applies_to(config) -> bool:
    """Whether the progress measures apply to a run's config (modular, odd prime p, add/subtract)."""
    from grokscope.analysis.fourier import check_odd_prime
    from grokscope.analysis.modular_view import SIGNS

    if config.task.kind != "modular":
        return False
    try:
        check_odd_prime(config.task.p)
    except GrokscopeError:
        return False
    return config.task.op in SIGNS


def analyze_run(
    path: str | Path, options: AnalyzeOptions | None = None, progress: bool = False, **overrides
) -> RunAnalysis:
    """Compute (or update) the progress tables of the run folder at `path`; returns them.
    `overrides` set single options (`analyze_run(path, key_freqs=[4, 11])`)."""
    o = dataclasses.replace(options or AnalyzeOptions(), **overrides)
    with torch_threads(o.threads):
        return _analyze_run(
            path,
            o.key_freqs,
            o.per_checkpoint,
            o.threshold,
            o.min_share,
            o.chunk,
            o.recompute,
            progress,
            (o.key_rule, o.carry_floor, o.carry_share),
            o.device,
        )


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with `n` torch threads, restoring the previous setting afterwards."""
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise GrokscopeError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _analyze_run(
    path, key_freqs, per_checkpoint, threshold, min_share, chunk, recompute, progress, rule, device="cpu"
) -> RunAnalysis:
    from grokscope.devices import resolve_device
    from grokscope.run import Run, load_weights

    if not 0 < threshold <= 1 or not 0 <= min_share <= 1:
        raise GrokscopeError("threshold must be in (0, 1] and min_share in [0, 1]")
    run = Run.open(path)
    run.device = resolve_device(device)  # the forward runs there; the measures on the CPU
    config = run.config
    if config.task.kind != "modular":
        raise GrokscopeError(
            f"the progress measures analyse modular-arithmetic runs; {run.path} has task.kind = "
            f"{config.task.kind!r}"
        )
    task, model = run.task, run.new_model()  # the folder's saved split, never a fresh draw
    sign = check_task(task)
    model.eval()
    steps = run.readable_steps()
    if not steps:
        raise GrokscopeError(run.no_checkpoints_message("has no checkpoints to analyse yet"))
    p = task.p
    key = _resolve_key(run, model, task, key_freqs, threshold, min_share, rule)
    adir = run.subdir("analysis")
    meta = {
        "version": ANALYSIS_VERSION,
        "p": p,
        "key_freqs": key.key_freqs,
        "key_source": key.source,
        "per_checkpoint": per_checkpoint,
        "threshold": threshold,
        "min_share": min_share,
        "key_rule": list(rule),
    }
    names = [n.replace(" ", "_") for n in basis_names(p)]
    columns = {
        "progress": PROGRESS_COLUMNS,
        "cos_coeffs": ["step"] + [f"k{k}" for k in range(1, n_freqs(p) + 1)],
        "excluded_loss_by_freq": ["step"] + [f"k{k}" for k in key.key_freqs],
        "fourier_W_E": ["step", *names],
        "fourier_W_L": ["step", *names],
    }
    files = _files(adir)
    meta_path = adir / "analysis_meta.json"
    cached: dict[str, dict[str, np.ndarray]] = {}
    if not recompute and meta_path.is_file() and all(f.is_file() for f in files.values()):
        try:
            if json.loads(meta_path.read_text()) == meta:
                cached = {name: read_table(f) for name, f in files.items()}
                if any(list(cached[name]) != columns[name] for name in TABLES):
                    cached = {}
        except (GrokscopeError, json.JSONDecodeError):
            cached = {}
    # a checkpoint counts as done only when every table has its row
    done = set.intersection(*(set(t["step"].tolist()) for t in cached.values())) if cached else set()
    todo = [s for s in steps if s not in done]

    new_rows: dict[str, list[list[float]]] = {name: [] for name in TABLES}
    mlp = last_mlp_name(dict(model.named_parameters()))
    bar = _bar(len(todo), progress)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        logits, counts = [], []
        for step in part:
            weights = run.load_checkpoint(step)
            load_weights(model, weights, f"checkpoint step {step} of {run.path}")
            out = modular_outputs(model, task)
            logits.append(out.logits)
            freq, frac = neuron_frequencies(out.neurons, p)
            here = select_key_freqs(freq, frac, threshold, min_share, *rule)
            counts.append((float((frac >= threshold).double().mean()), here))
            w = pm.weight_measures(weights, p, mlp)
            new_rows["fourier_W_E"].append([step, *pm.fourier_norms_W_E(weights["embed.W_E"], p).tolist()])
            norms_L = pm.fourier_norms_W_L(weights[f"{mlp}.W_out"], weights["unembed.W_U"], p)
            new_rows["fourier_W_L"].append([step, *norms_L.tolist()])
            counts[-1] = (*counts[-1], w)
            bar.update(1)
        L = torch.stack(logits)  # [C, p², p] float64: the chunk's checkpoints at once
        if per_checkpoint:
            ms = [pm.logit_measures(L[i], task, counts[i][1], sign) for i in range(len(part))]
            m = {k: torch.stack([x[k] for x in ms]) for k in ms[0]}
        else:
            m = pm.logit_measures(L, task, key.key_freqs, sign)
        cos = pm.cos_coefficients_from_logits(L, p, sign)
        excl = pm.excluded_loss_per_freq_from_logits(L, task.labels, task.train_idx, p, key.key_freqs, sign)
        for i, step in enumerate(part):
            frac_explained, here, w = counts[i]
            new_rows["progress"].append(
                [step]
                + [float(m[c][i]) for c in PROGRESS_COLUMNS[1:9]]
                + [w["gini_W_E"], w["gini_W_L"], w["sum_sq_weights"], frac_explained, len(here)]
            )
            new_rows["cos_coeffs"].append([step, *cos[i].tolist()])
            new_rows["excluded_loss_by_freq"].append([step, *excl[i].tolist()])
    bar.close()

    keep = set(steps)
    for name in TABLES:
        rows = new_rows[name]
        if cached:
            old = cached[name]
            rows += [
                [old[c][i] for c in columns[name]] for i in range(len(old["step"])) if old["step"][i] in done
            ]
        rows = sorted((r for r in rows if int(r[0]) in keep), key=lambda r: r[0])
        rows = [[int(r[0]), *r[1:]] for r in rows]
        write_table(files[name], columns[name], rows)
    write_if_changed(adir / "key_frequencies.json", json.dumps(key.to_dict(), indent=1))
    write_if_changed(meta_path, json.dumps(meta, indent=1))
    result = load_analysis(run.path)
    phases = run_phases(run.read_metrics(), result.progress)  # the dense curves when there are some
    write_if_changed(adir / "phases.json", json.dumps(phases.to_dict(), indent=1))
    _write_snapshot(run, model, task, key, adir / SNAPSHOT_FILE, fresh=bool(todo))
    result.meta["computed_steps"] = todo
    return result


def _write_snapshot(run, model, task, key: KeyFrequencies, path: Path, fresh: bool) -> None:
    """The final checkpoint's snapshot, recomputed only when checkpoints changed or it is missing."""
    from grokscope.run import load_weights

    last = run.last_step()
    if not fresh and path.is_file():
        try:
            if read_snapshot(path).step == last:
                return
        except GrokscopeError:
            pass  # damaged: write it again
    load_weights(model, run.load_checkpoint(last), f"checkpoint step {last} of {run.path}")
    write_if_changed(path, snapshot_bytes(snapshot(model, task, last), key))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, show: bool):
    if not show or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="analysing checkpoints", unit="ckpt")
