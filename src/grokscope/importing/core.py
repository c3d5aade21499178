"""`import_run(format, src, out)`: a grokscope run folder from checkpoints trained elsewhere.

1. Read each source file safely (`source.read_source_file`) and convert it to grokscope's names
   (the format's `convert`); turn round matrices stored as transposes (`source.orient`).
2. The config: the preset or file given (else modular arithmetic with p = d_vocab - 1), then what the
   source's own config says (seed, p, fraction, ...), then the sizes the weights have, then `--set`.
3. The split: indices saved in the file, else the original code's rule (`--split original`), else
   the one the config draws.
4. Every checkpoint is loaded into the grokscope model (names and shapes checked, all finite); the
   loss curves become metrics.jsonl (without curves, each checkpoint is evaluated on train and test).
5. The folder is written aside and moved into place, marked `[meta] imported = {format, source}`,
   so `resume` refuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grokscope.config import RunConfig, from_dict, read_toml
from grokscope.errors import GrokscopeError
from grokscope.files import atomic_write_text, read_bytes
from grokscope.importing.format import Converted, ImportFormat
from grokscope.importing.options import SPLITS, ImportOptions
from grokscope.importing.progress_measures import original_split, split_arrays
from grokscope.importing.source import model_settings, note, orient, read_source_file, source_files
from grokscope.model import Transformer
from grokscope.registry import IMPORT_FORMATS
from grokscope.run import Run, load_weights, resolve_model_config
from grokscope.scoring import evaluate
from grokscope.tasks import build_task


@dataclass
class ImportResult:
    run: Run
    steps: list[int]
    split: str  # where the split came from: "file", "original" or "config"
    turned: list[str]  # weights stored as transposes, turned round
    n_metrics: int  # rows written to metrics.jsonl
    final: dict[str, float]  # train/test loss and accuracy of the last checkpoint


def import_run(
    fmt: str,
    src: str | Path,
    out: str | Path,
    config: str | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    options: ImportOptions | None = None,
) -> ImportResult:
    """Import the checkpoints `src` (a file, folder or glob) of format `fmt` into a new run folder."""
    o = options or ImportOptions()
    if o.split not in SPLITS:
        raise GrokscopeError(f"--split must be one of {', '.join(SPLITS)}; got {o.split!r}")
    form: ImportFormat = IMPORT_FORMATS.get(fmt)
    files = source_files(src, o.step)
    source_config = _read_source_config(o.source_config)
    converted: list[Converted] = [form.convert(read_source_file(f.path), source_config) for f in files]
    checkpoints, turned = _checkpoints(files, converted, o.step)
    last = converted[-1]
    curves = _curve_rows(last, o.curve_every)
    if len(files) == 1 and checkpoints[-1][0] is None:  # no step anywhere: the curve's end, else 0
        step = curves[-1]["step"] if curves else 0
        if not curves:
            note(f"{files[0].path} says nothing of its training step; imported as step 0 (pass --step N)")
        checkpoints[-1] = (step, checkpoints[-1][1])
    steps = [s for s, _ in checkpoints]
    if len(set(steps)) < len(steps):
        raise GrokscopeError(f"two checkpoints of {src} have the same step; keep one file per step")

    run_config = _config(
        config, last.settings, model_settings(checkpoints[-1][1]), overrides or [], Path(out)
    )
    task = build_task(run_config.task, run_config.seed)
    split, where = _split(form, o.split, last, run_config, task)
    if split is not None:
        task.use_split(split)
    model = Transformer(resolve_model_config(run_config.model, task), seed=run_config.seed)
    for step, weights in checkpoints:  # check everything before anything is written
        load_weights(model, {k: v.float() for k, v in weights.items()}, f"{fmt} checkpoint at step {step}")
        bad = [k for k, v in weights.items() if not torch.isfinite(v).all()]
        if bad:
            raise GrokscopeError(
                f"the checkpoint at step {step} has non-finite values in {', '.join(bad[:3])}"
            )
    final: dict[str, float] = {}

    def fill(run: Run) -> None:
        rows = list(curves)
        for step, weights in checkpoints:
            run.save_checkpoint(step, {k: v.float() for k, v in weights.items()})
            if not curves or step == checkpoints[-1][0]:
                load_weights(model, {k: v.float() for k, v in weights.items()}, f"step {step}")
                row = _evaluate(model.eval(), task, step)
                final.update(row)
                if not curves:
                    rows.append(row)
        rows.sort(key=lambda r: r["step"])
        atomic_write_text(run.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        final["n_metrics"] = len(rows)

    if split is None:
        split = task.split_arrays()
    run = Run.create(
        out,
        run_config,
        split,
        overwrite=o.overwrite,
        imported={"format": fmt, "source": str(Path(src).resolve()) if Path(src).exists() else str(src)},
        fill=fill,
    )
    n = int(final.pop("n_metrics"))
    return ImportResult(run, steps, where, turned, n, final)


def _read_source_config(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path)
    try:
        if p.suffix == ".toml":
            return read_toml(p)
        data = json.loads(read_bytes(p, max_bytes=2**20).decode())
    except FileNotFoundError:
        raise GrokscopeError(f"no such source config: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GrokscopeError(
            f"{path} is not a JSON config ({e}); write the source's config as JSON"
        ) from None
    if not isinstance(data, dict):
        raise GrokscopeError(f"{path} holds a {type(data).__name__}, not a JSON object of config fields")
    return data


def _checkpoints(files, converted, step):
    out, turned = [], []
    for f, c in zip(files, converted, strict=True):
        for s, weights in c.checkpoints:
            weights, t = orient(weights)
            turned += [n for n in t if n not in turned]
            if len(c.checkpoints) == 1:
                s = f.step if (step is not None or s is None) else s
            out.append((s, weights))
    if turned:
        note(f"weights stored as transposes were turned round: {', '.join(turned)}")
    if len(out) > 1 and any(s is None for s, _ in out):
        raise GrokscopeError("cannot tell the step of every checkpoint; name the files with their steps")
    return sorted(out, key=lambda x: -1 if x[0] is None else x[0]), turned


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _config(spec, source: dict, shapes: dict, overrides: list[str], out: Path) -> RunConfig:
    from grokscope.config import apply_overrides
    from grokscope.presets import load_preset_or_file

    if spec is None:
        data: dict[str, Any] = {"name": out.name or "imported", "task": {"kind": "modular"}}
        p = source.get("task.p") or shapes["model.d_vocab"] - 1
        _set(data, "task.p", p)
    else:
        data = load_preset_or_file(spec) if isinstance(spec, str) else json.loads(json.dumps(spec))
    task_kind = data.get("task", {}).get("kind")
    for dotted, value in {**source, **shapes}.items():
        if dotted.startswith("task.") and task_kind != "modular":
            continue  # the original Config's p, op and fraction describe its modular task only
        _set(data, dotted, value)
    return from_dict(apply_overrides(data, overrides))


def _split(form: ImportFormat, choice: str, c: Converted, config: RunConfig, task):
    """(split arrays or None for the config's own, where it came from)."""
    modular = config.task.kind == "modular"
    if choice == "auto":
        if c.split is not None and modular:
            return split_arrays(*c.split), "file"
        choice = form.default_split if modular else "config"
    if choice == "original":
        if not modular:
            raise GrokscopeError(
                "--split original is the modular task's rule; use --split config for this task"
            )
        return split_arrays(*original_split(task.p, config.task.frac_train, config.seed)), "original"
    return None, "config"


def _curve_rows(c: Converted, every: int | None) -> list[dict[str, Any]]:
    """metrics.jsonl rows from the saved curves: train loss per step (epoch) and test loss every k
    (k from the lengths, or `every`); two curves of one length given `every` are both every k."""
    train, test = c.train_losses or [], c.test_losses or []
    if not train and not test:
        return []
    train_every = every if every is not None and len(train) == len(test) else 1
    if every is None:
        every = 1 if not train or not test else max(1, round(len(train) / len(test)))
    rows: dict[int, dict[str, Any]] = {}
    for i, v in enumerate(train):
        rows.setdefault(i * train_every, {"step": i * train_every})["train_loss"] = v
    for i, v in enumerate(test):
        rows.setdefault(i * every, {"step": i * every})["test_loss"] = v
    return [rows[s] for s in sorted(rows)]


def _evaluate(model, task, step: int) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "source": "import"}
    with torch.no_grad():
        for name, batch in task.eval_sets().items():
            row.update({f"{name}_{k}": v for k, v in evaluate(model, batch, task.loss_positions).items()})
    return row
