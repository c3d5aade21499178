"""The training loop: one function to start a run, one to resume it, bit-exact either way.

The batch at step s is a pure function of (seed, s), and the state file holds everything else
(weights, optimizer moments, Grokfast EMA, step), so a run stopped at any instant and resumed from
its last state retraces exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from grokscope.config import RunConfig, dumps_toml
from grokscope.devices import describe, resolve_device, resolve_precision
from grokscope.errors import GrokscopeError
from grokscope.files import atomic_write_text
from grokscope.model import Transformer
from grokscope.model.positional import offset_generator, position_ids
from grokscope.run import Run, build, load_weights
from grokscope.scoring import evaluate, loss_and_stats, stability, stability_stats
from grokscope.tasks import Task
from grokscope.train.optim import Grokfast, build_optimizer, lr_at, nlm_cosine
from grokscope.train.progress import progress_bar


class Interrupted(GrokscopeError):
    """Training was stopped by a signal after saving its state."""


@dataclass
class TrainResult:
    run: Run
    step: int
    reason: str  # "steps", "stop_at_test_acc", "stop_at_test_loss"
    last_metrics: dict[str, Any] = field(default_factory=dict)


def train(config: RunConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Create a run folder at `out` and train `config` in it, on `config.train.device`."""
    device = resolve_device(config.train.device)  # an absent device is refused before any write
    task, model = build(config)
    build_optimizer(list(model.parameters()), config.train)  # every setting is usable before any write
    run = Run.create(
        out,
        config,
        task.split_arrays(),
        overwrite=overwrite,
        trained_with=trained_with_entry(0, device, config),
    )
    with run.lock():
        return Trainer(run, config, task, model, device).run(progress=progress)


def trained_with_entry(step: int, device: torch.device, config: RunConfig) -> dict[str, Any]:
    """The `[meta] trained_with` entry of training `config` on `device` from `step`."""
    precision = resolve_precision(config.train.precision, device)
    return {"from_step": step, "device": describe(device), "precision": precision.used}


def resume(
    path: str | Path,
    steps: int | None = None,
    progress: bool = True,
    accept_config_change: bool = False,
    device: str | None = None,
) -> TrainResult:
    """Continue the run in `path` from its last saved state, to `steps` total steps if given, on
    `device` (default: the config's `train.device`). A config.toml edited since that state was saved
    is refused (the folder would no longer say how its weights were made) unless
    `accept_config_change`, which records the change in the folder. On the device the state was
    saved from the resume is bit-exact; on another one it works, and says it is not."""
    run = Run.open(path)
    with run.lock():
        return _resume(run, steps, progress, accept_config_change, device)


def _resume(
    run: Run, steps: int | None, progress: bool, accept_config_change: bool, device_name: str | None = None
) -> TrainResult:
    prepared = prepare_resume(run, steps, accept_config_change, device_name)
    return prepared if isinstance(prepared, TrainResult) else prepared.run(progress=progress)


def prepare_resume(
    run: Run, steps: int | None, accept_config_change: bool, device_name: str | None = None
) -> Trainer | TrainResult:
    """The checks and restore of `resume` (its folder locked by the caller), on `device_name` (default:
    the config's `train.device`): the `Trainer` ready to go on, or the `TrainResult` of a run already
    finished. train/stacked.py shares it."""
    imported = run.imported
    if imported is not None:
        raise GrokscopeError(
            f"{run.path} holds weights imported from {imported.get('format', '?')} "
            f"({imported.get('source', '?')}), made by other code and without grokscope's training "
            "state, so `resume` cannot continue it; nothing was changed. Analyse it as it is "
            "(`grokscope analyze`, `grokscope report`), or train a new run into another folder"
        )
    config, task = run.config, run.task  # the task trains on the folder's saved split
    device = resolve_device(device_name or config.train.device)
    state = run.load_state()
    if state is None and (run.checkpoint_steps() or run.read_metrics()):
        raise GrokscopeError(
            f"{run.path} has checkpoints or metrics but no training state (state/state.safetensors), "
            "so it cannot be resumed bit-exactly, and starting again would overwrite them; nothing was "
            "changed. Analyse it as it is, or train a new run into another folder"
        )
    if run.read_split() is None:
        run.write_split(task.split_arrays())
    damaged = run.damaged_checkpoints()
    if damaged:
        print(
            f"note: checkpoints at step {', '.join(map(str, damaged))} cannot be read; training rewrites "
            "those it passes again, analysis skips the others"
        )
    trainer = Trainer(run, config, task, run.new_model(), device)
    if state is not None:
        trainer.restore(*state)
        _check_config_unchanged(run, state[1], accept_config_change, trainer.step)
        _note_other_hardware(run, state[1], trainer)
    past_early_stop = (
        steps is not None and steps > trainer.step and trainer.finished_reason.startswith("stop_at")
    )
    if steps is not None and (steps != config.train.steps or past_early_stop):
        if steps < trainer.step:
            raise GrokscopeError(f"{run.path} is already at step {trainer.step}; --steps must be >= that")
        if config.train.lr_schedule != "constant" and steps != config.train.steps:
            print(
                f"note: train.lr_schedule = {config.train.lr_schedule!r} now decays to step {steps} "
                f"instead of {config.train.steps}; the rate jumps at step {trainer.step}"
            )
        config.train.steps = steps
        raw = run.raw_config()
        raw["train"]["steps"] = steps
        atomic_write_text(run.path / "config.toml", dumps_toml(raw))
        if trainer.finished_reason.startswith("stop_at"):
            trainer.early_stop = False  # the user asked for more steps past an early stop
    elif trainer.finished_reason:
        return TrainResult(run, trainer.step, trainer.finished_reason, (run.read_metrics() or [{}])[-1])
    run.truncate_metrics(before_step=trainer.step)
    return trainer


#: settings a resume may change without changing how the weights are made (a device change is
#: recorded in `[meta] trained_with` and noted as not bit-exact instead)
_FREE_TO_CHANGE = {"name", "train.steps", "train.threads", "train.state_every_s", "train.device"}

#: settings added after states began recording their config, with the value every older run had
_ADDED_SINCE = {"train.loss": "cross_entropy", "train.loss_precision": "float64"}


def weight_settings(config: RunConfig) -> dict[str, Any]:
    """The config as flat dotted settings, less those a resume may change (`_FREE_TO_CHANGE`)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = value

    walk("", config.to_dict())
    return {k: v for k, v in flat.items() if k not in _FREE_TO_CHANGE}


def _check_config_unchanged(run: Run, info: dict[str, Any], accept: bool, step: int) -> None:
    saved = info.get("config")
    if not isinstance(saved, dict):
        return  # a state from before grokscope recorded its config
    now = weight_settings(run.config)
    saved = {**{k: v for k, v in _ADDED_SINCE.items() if k in now}, **saved}
    changed = {
        k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)
    }
    if not changed:
        return
    listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
    if not accept:
        raise GrokscopeError(
            f"{run.path}/config.toml was edited after its state was saved ({listing}); resuming would "
            "leave a folder that no longer says how its weights were made. Undo the edit, or pass "
            "--accept-config-change to go on and record the change in config_changes.jsonl"
        )
    with open(run.path / "config_changes.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "changes": {k: list(v) for k, v in changed.items()}}) + "\n")
    print(
        f"note: continuing with the edited config from step {step} ({listing}); recorded in config_changes.jsonl"
    )


def _note_other_hardware(run: Run, info: dict[str, Any], trainer: Trainer) -> None:
    """Say so when the state was saved on another device or precision (the resume is then not
    bit-exact), and record what this stretch of training runs on."""
    now = trained_with_entry(trainer.step, trainer.device, trainer.config)
    saved = {k: info[k] for k in ("device", "precision") if k in info}
    if saved and saved != {k: now[k] for k in saved}:
        was = ", ".join(f"{v}" for v in saved.values())
        print(
            f"note: the state of {run.path} was saved on {was}; continuing on {now['device']}, "
            f"{now['precision']}. This works, but is not bit-exact with a run that stayed on one device"
        )
    run.record_trained_with(now)


class Trainer:
    def __init__(
        self, run: Run, config: RunConfig, task: Task, model: Transformer, device: torch.device | None = None
    ):
        self.device = resolve_device(config.train.device) if device is None else device
        self.precision = resolve_precision(config.train.precision, self.device)
        model.to(self.device)
        self.folder, self.config, self.task, self.model = run, config, task, model
        self.cfg = config.train
        self.params = dict(model.named_parameters())
        self.optimizer = build_optimizer(list(self.params.values()), self.cfg)
        self.grokfast = Grokfast(self.cfg.grokfast, self.params) if self.cfg.grokfast.enabled else None
        self.step = 0
        self.skipped_steps = 0  # updates skipped for a non-finite loss (train.nonfinite = "skip")
        self.elapsed_s = 0.0
        self.finished_reason = ""
        self.early_stop = True
        self._stop_signal: str | None = None

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model.{n}": p for n, p in self.params.items()}
        for i, s in self.optimizer.state_dict()["state"].items():
            tensors.update({f"optim.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
        if self.grokfast:
            tensors.update({f"grokfast.{n}": v for n, v in self.grokfast.ema.items()})
        return tensors

    def save_state(self, elapsed_s: float) -> None:
        sd = self.optimizer.state_dict()
        info = {
            "step": self.step,
            "elapsed_s": elapsed_s,
            "finished_reason": self.finished_reason,
            "skipped_steps": self.skipped_steps,
            "device": describe(self.device),
            "precision": self.precision.used,
            "config": weight_settings(self.config),
            "param_groups": sd["param_groups"],
            "optim_scalars": {
                str(i): {k: v for k, v in s.items() if not torch.is_tensor(v)} for i, s in sd["state"].items()
            },
        }
        self.folder.save_state(self.state_tensors(), info)

    def restore(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        load_weights(
            self.model,
            {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
            "state file",
        )
        state: dict[int, dict[str, Any]] = {}
        for key, v in tensors.items():
            if key.startswith("optim."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        for i, scalars in info.get("optim_scalars", {}).items():
            state.setdefault(int(i), {}).update(scalars)
        try:
            self.optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
        except (ValueError, KeyError) as e:
            raise GrokscopeError(
                f"the state file of {self.folder.path} does not fit its config ({e})"
            ) from None
        if self.grokfast:
            self.grokfast.ema = {
                k[9:]: v.to(self.device, copy=True) for k, v in tensors.items() if k.startswith("grokfast.")
            }
        step = info.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise GrokscopeError(f"the state file of {self.folder.path} is corrupt (step {step!r})")
        self.step = step
        self.elapsed_s = float(info.get("elapsed_s", 0.0))
        self.skipped_steps = int(info.get("skipped_steps", 0))
        self.finished_reason = info.get("finished_reason", "")

    # ------------------------------------------------------------------ loop
    def run(self, progress: bool = True) -> TrainResult:
        cfg, task, model, run = self.cfg, self.task, self.model, self.folder
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        total = cfg.steps
        positions = task.loss_positions
        device, precision = self.device, self.precision
        if precision.worth_a_note:
            print(f"note: train.precision = {precision.asked!r}: {precision.why}")
        host_evals = task.eval_sets()
        evals = {name: b.to(device) for name, b in host_evals.items()}  # moved once, not per step
        self.finished_reason = ""
        last_row: dict[str, Any] = {}
        started = time.perf_counter() - self.elapsed_s
        last_state_save = time.perf_counter()
        model.train()
        bar = progress_bar(total, self.step, progress)
        with _catch_signals(self), bar:
            while True:
                s = self.step
                at_end = s >= total
                do_eval = at_end or cfg.eval.due(s)
                train_stats = train_logits = None
                if not at_end or do_eval:
                    # at the end only for the metrics row's gradient (no update follows)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr_at(s, cfg)
                    host_batch = task.train_batch(s, cfg.batch_size, self.config.seed)
                    # Abacus's random offsets are drawn on the CPU, so every device trains the same ids
                    pos_ids = position_ids(model, host_batch, offset_generator(self.config.seed, s))
                    pos_ids = None if pos_ids is None else pos_ids.to(device)
                    # full-batch training reuses the evaluation set already on the device
                    batch = evals["train"] if host_batch is host_evals["train"] else host_batch.to(device)
                    with precision.context(device):
                        logits = model(batch.tokens, positions=positions, pos_ids=pos_ids)
                    loss, stats = loss_and_stats(logits, batch, cfg.loss, cfg.loss_precision)
                    if do_eval and not at_end and batch is evals["train"] and pos_ids is None:
                        # the full train set at the weights after s updates, exactly as evaluation
                        # would see it (not so when Abacus shifts training positions at random)
                        train_stats, train_logits = stats, logits
                    # the gradient comes before the metrics row (which reads it) and the saves;
                    # the update itself still comes after them
                    finite = self._backward(loss)
                if do_eval:
                    last_row = self._metrics_row(s, evals, train_stats, started, train_logits, finite)
                    run.append_metrics(last_row)
                    bar.set_postfix_str(_postfix(last_row), refresh=False)
                    self.finished_reason = self._early_stop_reason(last_row)
                stop = at_end or bool(self.finished_reason)
                if stop or cfg.checkpoint.due(s):
                    run.save_checkpoint(s, model.state_dict())
                if stop:
                    self.finished_reason = self.finished_reason or "steps"
                    self.save_state(time.perf_counter() - started)
                    break
                if cfg.checkpoint.due(s) or time.perf_counter() - last_state_save > cfg.state_every_s:
                    self.save_state(time.perf_counter() - started)
                    last_state_save = time.perf_counter()
                if not self._update(finite):
                    if cfg.nonfinite == "stop":
                        self.save_state(time.perf_counter() - started)  # still the finite weights of step s
                        raise GrokscopeError(
                            f"the training loss or its gradient is not finite at step {s} (loss "
                            f"{loss.item():.4g}); training stopped before that update, so the state and "
                            f"checkpoints in {run.path} are finite. Lower train.lr, add train.grad_clip, or "
                            "set train.nonfinite = 'skip' to skip such steps"
                        )
                    self.skipped_steps += 1
                self.step += 1
                bar.update(1)
                if self._stop_signal:
                    self.save_state(time.perf_counter() - started)
                    raise Interrupted(
                        f"stopped by {self._stop_signal} at step {self.step}; state saved. "
                        f"Continue with: grokscope resume {run.path}"
                    )
        return TrainResult(run, self.step, self.finished_reason, last_row)

    def _backward(self, loss: torch.Tensor) -> bool:
        """The gradient of `loss` into `.grad`; False, leaving no gradient, when the loss or a
        gradient is not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return False
        loss.backward()
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not torch.stack([g.isfinite().all() for g in grads]).all():
            self.optimizer.zero_grad(set_to_none=True)
            return False
        return True

    def _update(self, finite: bool) -> bool:
        """One optimizer step on the gradient `_backward` left; False, changing nothing, when that
        gradient was not finite."""
        if not finite:
            return False
        if self.grokfast:
            self.grokfast.apply()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params.values(), self.cfg.grad_clip)
        self.optimizer.step()
        return True

    def _metrics_row(
        self, step: int, evals, train_stats, started: float, train_logits=None, finite: bool = False
    ) -> dict[str, Any]:
        cfg = self.cfg
        positions, precision = self.task.loss_positions, self.precision.used
        self.model.eval()
        row: dict[str, Any] = {"step": step}
        for name, batch in evals.items():
            stats = (
                train_stats
                if (name == "train" and train_stats is not None)
                else evaluate(self.model, batch, positions, precision)
            )
            if name == "train" and train_logits is not None:
                stats = stats | stability_stats(
                    train_logits, batch.targets, batch.mask, cfg.loss, cfg.loss_precision
                )
            elif name == "train" or cfg.loss == "stablemax":
                more = stability(
                    self.model, batch, positions, precision, loss=cfg.loss, loss_precision=cfg.loss_precision
                )
                stats = stats | (more if name == "train" else {"stablemax_loss": more["stablemax_loss"]})
            row.update({f"{name}_{k}": v for k, v in stats.items()})
        self.model.train()
        cosine = nlm_cosine(self.params.values()) if finite else None
        if cosine is not None:
            row["nlm_cosine"] = cosine  # of this step's training gradient (see optim.nlm_cosine)
        with torch.no_grad():
            row["weight_norm_sq"] = sum(p.cpu().double().pow(2).sum() for p in self.params.values()).item()
        row["lr"] = lr_at(step, self.cfg)
        if self.skipped_steps:
            row["skipped_steps"] = self.skipped_steps
        row["elapsed_s"] = round(time.perf_counter() - started, 3)
        return row

    def _early_stop_reason(self, row: dict[str, Any]) -> str:
        if not self.early_stop:
            return ""
        if self.cfg.stop_at_test_acc is not None and row.get("test_acc", 0) >= self.cfg.stop_at_test_acc:
            return "stop_at_test_acc"
        if (
            self.cfg.stop_at_test_loss is not None
            and row.get("test_loss", float("inf")) <= self.cfg.stop_at_test_loss
        ):
            return "stop_at_test_loss"
        return ""


def _postfix(row: dict[str, Any]) -> str:
    parts = []
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        if key in row:
            parts.append(f"{key}={row[key]:.3g}")
    return " ".join(parts)


@contextlib.contextmanager
def _catch_signals(trainer: Trainer):
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step (then it saves and stops)."""

    def handler(signum, frame):
        trainer._stop_signal = signal.Signals(signum).name

    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                old[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


__all__ = ["train", "resume", "Trainer", "TrainResult", "Interrupted"]
