"""`Run`: one run folder, opened once. The only reader of a folder and the writer training uses.

```
DIR/config.toml        resolved config, with [meta] (format and library versions)
DIR/split.safetensors  exact train/test membership: the truth about what the run trained on
DIR/checkpoints/step_0000100.safetensors   weights after 100 updates
DIR/state/state.safetensors                weights + optimizer + progress, for exact resume
DIR/metrics.jsonl      one JSON object per evaluation
DIR/analysis/  DIR/figures/  DIR/report.html
```
Every verb reads what the folder says: `run.config`, `run.task` (built from the SAVED split; when
it differs from what the config would draw today, a note says so once and the file wins),
`run.model(step)`, `run.models()` over checkpoints, `run.read_metrics()`. Every file is written to
a temporary name and renamed into place, so a crash leaves the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import platform
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save as save_numpy
from safetensors.torch import save as save_torch

import grokscope
from grokscope.config import ModelConfig, RunConfig, dumps_toml, from_dict, read_toml
from grokscope.devices import to_cpu
from grokscope.errors import GrokscopeError
from grokscope.files import (
    atomic_write_bytes,
    atomic_write_text,
    check_regular_file,
    read_bytes,
    read_tensors,
)
from grokscope.model import Transformer
from grokscope.tasks import Task, build_task
from grokscope.tasks.split import InvalidSplit

_CKPT = re.compile(r"step_(\d+)\.safetensors$")


class RunNote(UserWarning):
    """Something a user should know about a run folder that does not stop the verb (shown once)."""


def resolve_model_config(model: ModelConfig, task: Task) -> ModelConfig:
    """Fill vocabulary and context sizes left at 0 from the task; check explicit ones fit it.

    An explicit vocabulary may be smaller than the task's full one when it still covers every token
    the task reads (`task.d_vocab_read`) and every class it scores (`task.d_vocab_emitted`): e.g. a
    five-digit-addition model with exactly 12 input tokens and 10 output classes loads as it is."""
    resolved = dataclasses.replace(
        model,
        d_vocab=model.d_vocab or task.d_vocab,
        d_vocab_out=model.d_vocab_out or task.d_vocab_out,
        n_ctx=model.n_ctx or task.n_ctx,
    )
    needs = {"d_vocab": task.d_vocab_read, "d_vocab_out": task.d_vocab_emitted, "n_ctx": task.n_ctx}
    for name, need in needs.items():
        if getattr(resolved, name) < need:
            raise GrokscopeError(
                f"bad config: model.{name} = {getattr(resolved, name)} is smaller than the task needs "
                f"({need}); leave it at 0 to take it from the task"
            )
    return resolved


def build_model(config: RunConfig, task: Task) -> Transformer:
    """The run's model at initialisation (weights drawn from the run's seed)."""
    return Transformer(resolve_model_config(config.model, task), seed=config.seed)


def build(config: RunConfig) -> tuple[Task, Transformer]:
    """Task (split drawn from the config) and initial model of a config: what training starts from."""
    task = build_task(config.task, config.seed)
    return task, build_model(config, task)


def load_weights(model: Transformer, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load weights by name, with a clear error when they do not belong to this model."""
    expected = dict(model.named_parameters())
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise GrokscopeError(
            f"{source} does not match the run's model (missing {_names_list(missing)}, unexpected "
            f"{_names_list(unexpected)}); a model trained elsewhere comes in with `grokscope import`, "
            "which maps other layouts' names (docs/import.md)"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            hint = (
                "; it is the transpose of what the model expects: `grokscope import` recognises that"
                if tensor.ndim == 2 and tuple(tensor.shape[::-1]) == tuple(expected[name].shape)
                else ""
            )
            raise GrokscopeError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[name].shape)}{hint}"
            )
    with torch.no_grad():
        for name, p in expected.items():
            p.copy_(weights[name])


def _names_list(names: list[str], limit: int = 8) -> str:
    """`[a, b, c]`, or the first `limit` names and how many more, so no name is silently cut off."""
    if len(names) <= limit:
        return str(names)
    return f"{names[:limit]} and {len(names) - limit} more"


def library_versions() -> dict[str, str]:
    return {
        "grokscope": grokscope.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class Run:
    """One run folder: its config, saved split, checkpoints, state and metrics."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._readable: list[int] | None = None  # readable_steps(), checked once
        #: where `new_model`, `model` and `models` put the model (a study's `--device`); the folder's
        #: files are CPU tensors whatever this is
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ create / open
    @staticmethod
    def is_run(path: str | Path) -> bool:
        """Whether `path` holds a grokscope run: a config.toml with grokscope's [meta] table."""
        try:
            meta = read_toml(Path(path) / "config.toml").get("meta")
        except (GrokscopeError, OSError):
            return False
        return isinstance(meta, dict) and isinstance(meta.get("format_version"), int)

    @classmethod
    def create(
        cls,
        path: str | Path,
        config: RunConfig,
        split: dict[str, np.ndarray],
        overwrite: bool = False,
        imported: dict[str, str] | None = None,
        fill: Callable[[Run], None] | None = None,
        trained_with: dict[str, Any] | None = None,
    ) -> Run:
        """A new run folder at `path` holding `config` and `split`, written aside and then moved
        into place, so a failure leaves nothing half-made; with `overwrite` an existing grokscope
        run there is replaced in the same swap (anything else is never deleted).

        `imported` ({"format": ..., "source": ...}) marks a folder whose weights were made elsewhere
        (`[meta] imported`; `resume` refuses it); `fill(run)` writes more into the staged folder
        (checkpoints, metrics) before it is moved into place. `trained_with` ({from_step, device,
        precision}) starts `[meta] trained_with`, the list of what each stretch of training ran on."""
        target = Path(path)
        parent = target.parent
        if target.exists() and not target.is_dir():
            raise GrokscopeError(f"{target} is a file, not a folder; choose another --out")
        for up in (parent, *parent.parents):
            if up.exists():
                if not up.is_dir():
                    raise GrokscopeError(f"{target} cannot be made: {up} is a file; choose another --out")
                break
        existing = target.is_dir() and any(target.iterdir())
        if existing and not overwrite:
            raise GrokscopeError(
                f"{target} already exists and is not empty; choose another --out, "
                "resume it with `grokscope resume`, or pass --overwrite to replace it"
            )
        if existing and not cls.is_run(target):
            raise GrokscopeError(
                f"refusing to overwrite {target}: it is not a grokscope run folder (no config.toml with "
                "grokscope's [meta]); nothing was changed. Choose another --out"
            )
        if existing:
            cls(target)._check_unlocked()
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GrokscopeError(f"cannot make {parent}: {e.strerror}; choose another --out") from None
        staging = parent / f".{target.name}.new-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)  # our own leftover from a crash of this very pid: never user data
        try:
            staging.mkdir()
            (staging / "checkpoints").mkdir()
            (staging / "state").mkdir()
            data = config.to_dict()
            data["meta"] = {"format_version": grokscope.RUN_FORMAT_VERSION, "versions": library_versions()}
            if imported is not None:
                data["meta"]["imported"] = dict(imported)
            if trained_with is not None:
                data["meta"]["trained_with"] = [dict(trained_with)]
            atomic_write_text(staging / "config.toml", dumps_toml(data))
            cls(staging).write_split(split)
            if fill is not None:
                fill(cls(staging))
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise GrokscopeError(f"cannot write the run folder next to {target}: {e.strerror}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if existing:
            old = parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if target.is_dir():
                target.rmdir()  # an empty folder the user made for the run
            os.replace(staging, target)
        return cls(target)

    # ------------------------------------------------------------------ one writer at a time
    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def _check_unlocked(self) -> None:
        pid = _lock_owner(self.lock_path)
        if pid is not None and _alive(pid):
            raise GrokscopeError(
                f"{self.path} is in use by another grokscope process (pid {pid}); wait for it to finish "
                f"or stop it (if no such process runs, delete {self.lock_path})"
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's writer lock (a file with our pid) while training writes into it; a lock
        whose process is gone is stale and taken over."""
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_unlocked()
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()
                continue
            except OSError as e:
                raise GrokscopeError(f"cannot write in {self.path}: {e.strerror}") from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            break
        else:
            raise GrokscopeError(f"could not take the lock {self.lock_path}; try again")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                if _lock_owner(self.lock_path) == os.getpid():
                    self.lock_path.unlink()

    @classmethod
    def open(cls, path: str | Path) -> Run:
        run = cls(path)
        if not run.path.is_dir():
            raise GrokscopeError(f"no such run folder: {run.path}")
        if not (run.path / "config.toml").is_file():
            raise GrokscopeError(f"{run.path} is not a grokscope run folder (no config.toml)")
        meta = run.meta()
        version = meta.get("format_version")
        if version is None:
            raise GrokscopeError(
                f"{run.path}/config.toml has no [meta] table, so grokscope did not write this folder; "
                "bring weights trained elsewhere in with `grokscope import FORMAT SRC --out DIR` "
                "(docs/import.md)"
            )
        if version != grokscope.RUN_FORMAT_VERSION:
            raise GrokscopeError(
                f"{run.path} was written by a grokscope with run-folder format {version!r}; this "
                f"version reads format {grokscope.RUN_FORMAT_VERSION}. Use the grokscope version "
                f"that wrote it ({meta.get('versions', {}).get('grokscope', 'unknown')})."
            )
        return run

    def raw_config(self) -> dict[str, Any]:
        return read_toml(self.path / "config.toml")

    def meta(self) -> dict[str, Any]:
        meta = self.raw_config().get("meta", {})
        if not isinstance(meta, dict):
            raise GrokscopeError(f"{self.path}/config.toml has a [meta] that is not a table; it is damaged")
        return meta

    def record_trained_with(self, entry: dict[str, Any]) -> None:
        """Append `entry` ({from_step, device, precision}) to `[meta] trained_with` when it differs
        from the last one (a resume on another device or in another precision)."""
        raw = self.raw_config()
        history = raw.setdefault("meta", {}).setdefault("trained_with", [])
        last = {k: v for k, v in history[-1].items() if k != "from_step"} if history else None
        if last == {k: v for k, v in entry.items() if k != "from_step"}:
            return
        history.append(dict(entry))
        atomic_write_text(self.path / "config.toml", dumps_toml(raw))

    @property
    def imported(self) -> dict[str, str] | None:
        """`{"format": ..., "source": ...}` when the folder's weights were imported (trained
        elsewhere, by `grokscope import`), else None."""
        value = self.meta().get("imported")
        return value if isinstance(value, dict) else None

    @cached_property
    def config(self) -> RunConfig:
        """The run's resolved config, as the folder's config.toml says."""
        return from_dict(self.raw_config())

    @cached_property
    def task(self) -> Task:
        """The task with the folder's saved split (the file is the truth; a difference from what
        the config draws today is said once)."""
        task = build_task(self.config.task, self.config.seed)
        saved = self.read_split()
        if saved is None:
            warnings.warn(
                f"{self.path} has no split.safetensors; using the split its config draws today",
                RunNote,
                stacklevel=2,
            )
            return task
        try:
            changed = task.use_split(saved)
        except InvalidSplit as e:
            raise GrokscopeError(
                f"{self.split_path} is not a split of this run's task: {e}. Restore it from a copy of "
                "the run folder (nothing was changed)"
            ) from None
        if changed and self.imported is None:  # an imported folder's split is the source's, by design
            warnings.warn(
                f"{self.split_path} differs from the split this config draws today (a run from another "
                "version or made elsewhere); using the saved split",
                RunNote,
                stacklevel=2,
            )
        return task

    def new_model(self) -> Transformer:
        """The run's model at initialisation, on the saved task's sizes, on `self.device`."""
        return build_model(self.config, self.task).to(self.device)

    def model(self, step: int | None = None) -> Transformer:
        """The model with the weights of checkpoint `step` (the last one when None), in eval mode."""
        model = self.new_model()
        step = self.last_step() if step is None else step
        load_weights(model, self.load_checkpoint(step), f"checkpoint step {step} of {self.path}")
        return model.eval()

    def models(self, steps: list[int] | None = None) -> Iterator[tuple[int, Transformer]]:
        """(step, model) at each checkpoint, one model reloaded in place (memory stays flat)."""
        model = self.new_model().eval()
        for step, weights in self.iter_checkpoints(steps):
            load_weights(model, weights, f"checkpoint step {step} of {self.path}")
            yield step, model

    def last_step(self) -> int:
        steps = self.readable_steps()
        if not steps:
            raise GrokscopeError(self.no_checkpoints_message())
        return steps[-1]

    def no_checkpoints_message(self, what: str = "has no checkpoints yet") -> str:
        """Why there is nothing to read, naming other weight files lying in checkpoints/."""
        d = self.path / "checkpoints"
        others = sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []
        if not others:
            return f"{self.path} {what}"
        return (
            f"{self.path} {what}: checkpoints/ holds {', '.join(others[:3])}, but grokscope reads only "
            "step_NNNNNNN.safetensors; bring other files in with `grokscope import safetensors FILE "
            "--step N --out DIR` (docs/import.md)"
        )

    def subdir(self, name: str) -> Path:
        """An output folder of the run (`analysis`, `figures`, ...), created on first use."""
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def analysis_dir(self) -> Path:
        return self.subdir("analysis")

    @property
    def figures_dir(self) -> Path:
        return self.subdir("figures")

    # ------------------------------------------------------------------ split
    @property
    def split_path(self) -> Path:
        return self.path / "split.safetensors"

    def write_split(self, arrays: dict[str, np.ndarray]) -> None:
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        atomic_write_bytes(self.split_path, save_numpy(arrays))

    def read_split(self) -> dict[str, np.ndarray] | None:
        path = self.split_path
        if not path.exists() and not path.is_symlink():
            return None
        try:
            check_regular_file(path)
            return load_numpy(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise GrokscopeError(f"{path} is corrupt ({e}); the run's split cannot be recovered") from None

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step_{step:07d}.safetensors"

    def checkpoint_steps(self) -> list[int]:
        d = self.path / "checkpoints"
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _CKPT.match(p.name)))

    def damaged_checkpoints(self) -> dict[int, str]:
        """{step: what is wrong} for checkpoint files that cannot be read (header checked only)."""
        from safetensors import safe_open

        damaged = {}
        for step in self.checkpoint_steps():
            path = self.checkpoint_path(step)
            try:
                check_regular_file(path)
                with safe_open(str(path), framework="pt") as f:
                    f.keys()
            except (GrokscopeError, SafetensorError, OSError, ValueError) as e:
                damaged[step] = str(e).split("\n")[0][:120]
        return damaged

    def readable_steps(self) -> list[int]:
        """The checkpoint steps a study can read; damaged checkpoints are named once and skipped."""
        if self._readable is None:
            damaged = self.damaged_checkpoints()
            if damaged:
                warnings.warn(
                    f"{self.path}: checkpoint{'s' if len(damaged) > 1 else ''} at step "
                    f"{', '.join(map(str, damaged))} cannot be read ({next(iter(damaged.values()))}); "
                    "skipping, the other checkpoints are intact",
                    RunNote,
                    stacklevel=2,
                )
            self._readable = [s for s in self.checkpoint_steps() if s not in damaged]
        return self._readable

    def save_checkpoint(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        data = save_torch(_contiguous(weights), metadata={"step": str(step)})
        atomic_write_bytes(self.checkpoint_path(step), data)

    def load_checkpoint(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """Weights at `step` (the last checkpoint when None)."""
        steps = self.checkpoint_steps()
        if not steps:
            raise GrokscopeError(self.no_checkpoints_message())
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise GrokscopeError(f"{self.path} has no checkpoint at step {step}; it has {_summarize(steps)}")
        return read_tensors(self.checkpoint_path(step))

    def iter_checkpoints(
        self, steps: list[int] | None = None
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield (step, weights) one checkpoint at a time, so memory does not grow with their number."""
        for step in steps if steps is not None else self.readable_steps():
            yield step, self.load_checkpoint(step)

    # ------------------------------------------------------------------ training state
    def save_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        data = save_torch(_contiguous(tensors), metadata={"grokscope_state": json.dumps(info)})
        atomic_write_bytes(self.path / "state" / "state.safetensors", data)

    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        path = self.path / "state" / "state.safetensors"
        if not path.is_file():
            return None
        tensors = read_tensors(path)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                info = json.loads(f.metadata()["grokscope_state"])
        except (KeyError, TypeError, json.JSONDecodeError, SafetensorError):
            raise GrokscopeError(f"{path} is corrupt or not a grokscope state file") from None
        return tensors, info

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def append_metrics(self, row: dict[str, Any]) -> None:
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise GrokscopeError(
                    f"disk full while writing {self.metrics_path}; resume after freeing space"
                ) from None
            raise

    def read_metrics(self) -> list[dict[str, Any]]:
        """The valid rows of metrics.jsonl. A last line cut off by a crash is dropped silently; any
        other damaged line is named once (a RunNote) and skipped, the rest of the folder intact."""
        rows, damaged = self._scan_metrics()
        if damaged:
            warnings.warn(
                f"{self.metrics_path} {damaged[0]}"
                + (f" (and {len(damaged) - 1} more lines)" if len(damaged) > 1 else "")
                + f"; using its {len(rows)} valid rows, the rest of the folder is intact",
                RunNote,
                stacklevel=2,
            )
        return rows

    def _scan_metrics(self) -> tuple[list[dict[str, Any]], list[str]]:
        try:
            data = read_bytes(self.metrics_path)
        except FileNotFoundError:
            return [], []
        except OSError as e:
            raise GrokscopeError(f"cannot read {self.metrics_path}: {e.strerror}") from None
        lines = data.split(b"\n")
        complete = lines[:-1]  # the part after the last newline is a row being written (or nothing)
        rows, damaged = [], []
        for i, line in enumerate(complete, 1):
            try:
                row = json.loads(line.decode())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                damaged.append(f"line {i} is not a metrics row ({type(e).__name__})")
                continue
            step = row.get("step") if isinstance(row, dict) else None
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                damaged.append(f"line {i} is not a metrics row (no whole-number step)")
                continue
            rows.append(row)
        return rows, damaged

    def truncate_metrics(self, before_step: int) -> None:
        """Keep only valid rows for steps before `before_step` (a resume recomputes the rest
        identically); a damaged file is first kept aside as metrics.jsonl.damaged."""
        rows, damaged = self._scan_metrics()
        if damaged:
            shutil.copyfile(self.metrics_path, self.path / "metrics.jsonl.damaged")
            print(f"note: {self.metrics_path} {damaged[0]}; a copy is in metrics.jsonl.damaged")
        rows = [r for r in rows if r["step"] < before_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous copies: a folder's files never name the device that trained it."""
    return {k: v.contiguous() for k, v in to_cpu(tensors).items()}


def _summarize(steps: list[int]) -> str:
    if len(steps) <= 6:
        return "steps " + ", ".join(map(str, steps))
    return f"{len(steps)} checkpoints from step {steps[0]} to {steps[-1]}"


def _lock_owner(path: Path) -> int | None:
    try:
        text = path.read_text()[:32].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
