"""Many models in one process: train configs that differ only in per-model settings side by side.

Grokking is fragile across seeds, so a question needs dozens of runs. `train_stacked` trains them
in one process and writes one ordinary run folder per config, the same files a single run writes
(through the same `Trainer` methods: metrics rows, checkpoints, state), so every verb, and a plain
`grokscope resume DIR` of one folder, works on each.

Each model keeps its own `Trainer` (its own optimizer, Grokfast EMA, step, early stop, schedules):
the update is the single trainer's `_update` on that model, so per-model lr, weight decay,
Grokfast and optimizer settings are exactly torch's. What is shared is the forward and backward:

- `vmap` mode: the models' parameters live as views into one stacked tensor per parameter name
  [model ...], and one `torch.func.vmap` of `functional_call` over the Transformer computes every
  model's logits and, through one backward, every model's gradient. Each model still trains on its
  own batch (`task.train_batch(step, batch_size, seed)`, padded to the longest in the stack) and
  its loss comes from the one scorer (`scoring.loss_and_stats`) on its own rows.
- `loop` mode: the models take their steps one after another in one process. At full batch the
  step is compute-bound and stacking gains nothing (measured: benchmarks/bench_stacked.py), so
  `auto` takes `loop` there and `vmap` for minibatches.

A model that stops early (or reaches its `train.steps`) leaves the stack and is frozen: its weights
and optimizer state no longer change while the others go on. SIGINT/SIGTERM save every model's
state and raise `Interrupted` naming the resume command; `resume_stacked` continues the folders
stacked, bit-exactly (each model's arithmetic does not depend on which others share its stack;
tests/test_stacked.py checks that too).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, vmap

from grokscope.config import RunConfig
from grokscope.devices import resolve_device
from grokscope.errors import GrokscopeError
from grokscope.model.positional import offset_generator, position_ids
from grokscope.run import Run, build
from grokscope.scoring import loss_and_stats
from grokscope.tasks.base import Batch
from grokscope.train.loop import (
    Interrupted,
    Trainer,
    TrainResult,
    _catch_signals,
    _postfix,
    prepare_resume,
    trained_with_entry,
    weight_settings,
)
from grokscope.train.optim import build_optimizer, lr_at
from grokscope.train.progress import progress_bar

MODES = ("auto", "vmap", "loop")

#: settings each model of a stack may have its own value of (a key ending in "." is a prefix):
#: everything its own Trainer reads, plus the seed and the training fraction (its own split)
STACKABLE = (
    "seed",
    "task.frac_train",
    "train.steps",
    "train.optimizer",
    "train.lr",
    "train.weight_decay",
    "train.betas",
    "train.eps",
    "train.momentum",
    "train.warmup_steps",
    "train.lr_schedule",
    "train.lr_min",
    "train.grad_clip",
    "train.grokfast.",
    "train.loss",
    "train.loss_precision",
    "train.nonfinite",
    "train.eval.",
    "train.checkpoint.",
    "train.stop_at_test_acc",
    "train.stop_at_test_loss",
)


def _stackable(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in STACKABLE)


def stack_key(config: RunConfig) -> str:
    """The settings every model of a stack must share, as one string: equal keys stack."""
    shared = {k: v for k, v in weight_settings(config).items() if not _stackable(k)}
    return json.dumps(shared, sort_keys=True, default=str)


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """Raise a GrokscopeError naming the first setting, not in `STACKABLE`, that differs."""
    if not configs:
        raise GrokscopeError("nothing to stack: give at least one config")
    first = weight_settings(configs[0])
    for other in configs[1:]:
        now = weight_settings(other)
        for key in sorted(set(first) | set(now)):
            if not _stackable(key) and first.get(key) != now.get(key):
                raise GrokscopeError(
                    f"cannot stack these configs: they differ in {key} ({first.get(key)!r} vs "
                    f"{now.get(key)!r}), which every model of a stack must share; only seed, "
                    "task.frac_train and the per-model train settings (lr, weight_decay, grokfast, "
                    "schedules, early stops, ...) may differ. Train them in separate processes"
                )


def choose_mode(mode: str, trainers: Sequence[Trainer]) -> str:
    """`auto`: `vmap` for minibatches on an accelerator (one kernel launch for every model is what
    stacking is for there), `loop` otherwise: for one model, at full batch (compute-bound), and on
    the CPU, where the vmapped step measured 0.89-0.99x the sequential rate at N = 8 and 32 on a
    quiet 2-core machine (benchmarks/bench_stacked.py --mode vmap; docs/stacked.md)."""
    if mode not in MODES:
        raise GrokscopeError(f"unknown stack mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if len(trainers) < 2 or trainers[0].device.type == "cpu":
        return "loop"
    t = trainers[0]
    n_train = len(t.task.eval_sets()["train"])
    full = t.cfg.batch_size <= 0 or t.cfg.batch_size >= n_train
    return "loop" if full else "vmap"


def parse_seeds(text: str) -> list[int]:
    """`0-7`, `0,3,5` or a mix (`0-3,8`) -> the seeds, in order, each once."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if last < first:
                raise ValueError
            seeds.extend(s for s in range(first, last + 1) if s not in seeds)
    except ValueError:
        raise GrokscopeError(
            f"--seeds {text!r} is not a seed list; write a range 0-7, a list 0,3,5, or both (0-3,8)"
        ) from None
    if not seeds or min(seeds) < 0:
        raise GrokscopeError(f"--seeds {text!r}: give seeds >= 0, e.g. 0-7")
    return seeds


def seed_configs(config: RunConfig, seeds: Sequence[int]) -> list[RunConfig]:
    """One config per seed, named `<name>-s<seed>` (the folder name each is written to)."""
    return [dataclasses.replace(copy.deepcopy(config), seed=s, name=f"{config.name}-s{s}") for s in seeds]


def seed_folders(configs: Sequence[RunConfig], out: str | Path | None = None) -> list[Path]:
    """`runs/<name>` for each config, or `OUT/<name>` under a chosen parent folder."""
    parent = Path(out) if out is not None else Path("runs")
    return [parent / c.name for c in configs]


def train_stacked(
    configs: Sequence[RunConfig],
    outs: Sequence[str | Path],
    overwrite: bool = False,
    progress: bool = True,
    mode: str = "auto",
    device: torch.device | str | None = None,
) -> list[TrainResult]:
    """Create one run folder per config (`outs[i]` for `configs[i]`) and train them stacked."""
    if len(configs) != len(outs):
        raise GrokscopeError(f"{len(configs)} configs but {len(outs)} run folders; give one folder each")
    if len({Path(o).resolve() for o in outs}) != len(outs):
        raise GrokscopeError("two stacked configs would write the same run folder; give each its own --out")
    check_stackable(configs)
    dev = _device(device, configs)  # an absent device is refused before any write
    built = []
    for config in configs:
        task, model = build(config)
        build_optimizer(list(model.parameters()), config.train)  # every setting usable before any write
        built.append((config, task, model))
    runs = [
        Run.create(out, c, t.split_arrays(), overwrite=overwrite, trained_with=trained_with_entry(0, dev, c))
        for out, (c, t, _) in zip(outs, built, strict=True)
    ]
    with contextlib.ExitStack() as locks:
        for run in runs:
            locks.enter_context(run.lock())
        trainers = [Trainer(run, c, t, m, dev) for run, (c, t, m) in zip(runs, built, strict=True)]
        return StackedTrainer(trainers, mode=mode, device=dev).run(progress=progress)


def train_or_resume_stacked(
    pairs: Sequence[tuple[str | Path, RunConfig]],
    progress: bool = False,
    mode: str = "auto",
    device: torch.device | str | None = None,
) -> list[TrainResult]:
    """A sweep's pack: each (folder, config) is trained from scratch where the folder holds no run
    yet and resumed from its state where it does; all of them stacked in this process."""
    check_stackable([c for _, c in pairs])
    dev = _device(device, [c for _, c in pairs])
    built: dict[int, tuple[RunConfig, Any, Any]] = {}
    for i, (out, config) in enumerate(pairs):
        if not (Path(out) / "config.toml").is_file():
            task, model = build(config)
            build_optimizer(list(model.parameters()), config.train)
            built[i] = (config, task, model)
    runs = [
        Run.create(
            out, built[i][0], built[i][1].split_arrays(), trained_with=trained_with_entry(0, dev, built[i][0])
        )
        if i in built
        else Run.open(out)
        for i, (out, _) in enumerate(pairs)
    ]
    check_stackable([r.config for r in runs])
    with contextlib.ExitStack() as locks:
        for run in runs:
            locks.enter_context(run.lock())
        prepared = [
            Trainer(run, *built[i], dev) if i in built else prepare_resume(run, None, False, str(dev))
            for i, run in enumerate(runs)
        ]
        return _run_prepared(prepared, progress, mode, dev)


def _run_prepared(
    prepared: list, progress: bool, mode: str, device: torch.device | str | None
) -> list[TrainResult]:
    """Train the `Trainer`s among `prepared` stacked; the `TrainResult`s (finished runs) pass through."""
    trainers = [p for p in prepared if isinstance(p, Trainer)]
    results = {id(p): p for p in prepared if isinstance(p, TrainResult)}
    if trainers:
        ran = StackedTrainer(trainers, mode=mode, device=device).run(progress)
        for t, r in zip(trainers, ran, strict=True):
            results[id(t)] = r
    return [results[id(p)] for p in prepared]


def resume_stacked(
    paths: Sequence[str | Path],
    steps: int | None = None,
    progress: bool = True,
    accept_config_change: bool = False,
    mode: str = "auto",
    device: torch.device | str | None = None,
) -> list[TrainResult]:
    """Continue the run folders in `paths` stacked, each from its last state (as `resume` does)."""
    runs = [Run.open(p) for p in paths]
    if len({r.path.resolve() for r in runs}) != len(runs):
        raise GrokscopeError("the same run folder is named twice; give each folder once")
    check_stackable([r.config for r in runs])
    dev = _device(device, [r.config for r in runs])
    with contextlib.ExitStack() as locks:
        for run in runs:
            locks.enter_context(run.lock())
        prepared = [prepare_resume(run, steps, accept_config_change, str(dev)) for run in runs]
        return _run_prepared(prepared, progress, mode, dev)


def _device(device: torch.device | str | None, configs: Sequence[RunConfig]) -> torch.device:
    """The stack's device: `device` when given, else the configs' `train.device` (equal in a stack)."""
    return resolve_device(configs[0].train.device if device is None else str(device))


class StackedTrainer:
    """Steps several `Trainer`s together; see the module docstring for the two modes."""

    #: models per vmapped forward: larger stacks go in chunks of this many (measured on a 2-core
    #: CPU, five-digit addition at batch 128: 32 models in one vmap ran slower than 32 single
    #: steps, 8 at a time faster; benchmarks/bench_stacked.py)
    vmap_chunk: int = 8

    def __init__(
        self, trainers: Sequence[Trainer], mode: str = "auto", device: torch.device | str | None = None
    ):
        if not trainers:
            raise GrokscopeError("nothing to stack: give at least one model")
        check_stackable([t.config for t in trainers])
        self.trainers = list(trainers)
        self.mode = choose_mode(mode, self.trainers)
        # the trainers' own device (train.device is equal across a stack) unless one is given
        self.device = self.trainers[0].device if device is None else torch.device(device)
        for t in self.trainers:
            t.model.to(self.device)
            t.device = self.device
        self._stop_signal: str | None = None
        self._base: torch.nn.Module | None = None  # the module vmap calls with each model's weights
        self._stack: dict[str, torch.Tensor] = {}  # name -> [model ...], the live models' weights
        self._stacked: list[Trainer] = []

    # ------------------------------------------------------------------ stacking
    def _restack(self, live: list[Trainer]) -> None:
        """Make `live`'s parameters views into one tensor per name; give leavers their own copy."""
        for t in self._stacked:
            if t not in live:
                with torch.no_grad():
                    for p in t.params.values():
                        p.data = p.data.clone()
        self._stacked = list(live)
        if self.mode != "vmap" or not live:
            self._stack = {}
            return
        if self._base is None:
            self._base = copy.deepcopy(live[0].model)
            self._base.vmapped = True
        names = list(live[0].params)
        with torch.no_grad():
            self._stack = {n: torch.stack([t.params[n].detach() for t in live]) for n in names}
            for j, t in enumerate(live):
                for n in names:
                    t.params[n].data = self._stack[n][j]

    def _grads_vmap(
        self, live: list[Trainer], batches: list[Batch], pos_ids: list[torch.Tensor | None]
    ) -> list[tuple[torch.Tensor, dict[str, Any], torch.Tensor, bool]]:
        """Every live model's (loss, stats, logits, finite) from stacked forwards and backwards of
        at most `vmap_chunk` models each, leaving each model's gradient in its parameters' `.grad`
        (None where not finite)."""
        out = []
        k = self.vmap_chunk
        for a in range(0, len(live), k):
            out += self._grads_vmap_chunk(a, live[a : a + k], batches[a : a + k], pos_ids[a : a + k])
        return out

    def _grads_vmap_chunk(
        self, first: int, live: list[Trainer], batches: list[Batch], pos_ids: list[torch.Tensor | None]
    ) -> list[tuple[torch.Tensor, dict[str, Any], torch.Tensor, bool]]:
        """`_grads_vmap` for the models `first .. first + len(live)` of the stack."""
        positions = live[0].task.loss_positions
        longest = max(len(b) for b in batches)
        tokens = torch.stack([_pad(b.tokens, longest) for b in batches]).to(self.device)  # [model batch pos]
        ids = None
        if pos_ids[0] is not None:
            ids = torch.stack([_pad(p, longest) for p in pos_ids]).to(self.device)  # [model batch pos]
        rows = slice(first, first + len(live))
        leaves = {n: s[rows].detach().requires_grad_(True) for n, s in self._stack.items()}
        base = self._base

        def one(params, tok, pid):
            return functional_call(base, params, (tok,), {"positions": positions, "pos_ids": pid})

        with live[0].precision.context(self.device):  # train.precision is equal across a stack
            logits = vmap(one, in_dims=(0, 0, None if ids is None else 0))(leaves, tokens, ids)
        # logits: [model batch n_loss d_vocab_out]
        out = []
        total = None
        # unbind: its backward stacks the per-model gradients in one op (indexing logits[j] would
        # give each model a full-size zero-filled gradient, O(models^2) memory traffic)
        for t, b, per_model in zip(live, batches, logits.unbind(0), strict=True):
            lj = per_model[: len(b)]
            loss, stats = loss_and_stats(lj, b.to(self.device), t.cfg.loss, t.cfg.loss_precision)
            ok = bool(torch.isfinite(loss))
            if ok:
                total = loss if total is None else total + loss
            out.append((loss, stats, lj, ok))
        for t in live:
            t.optimizer.zero_grad(set_to_none=True)
        if total is None:
            return out
        total.backward()
        finite = torch.ones(len(live), dtype=torch.bool, device=self.device)
        for leaf in leaves.values():
            finite &= leaf.grad.flatten(1).isfinite().all(dim=1)
        finite_list = finite.tolist()
        for j, t in enumerate(live):
            good = out[j][3] and finite_list[j]
            out[j] = (*out[j][:3], good)
            if good:
                for n, p in t.params.items():
                    p.grad = leaves[n].grad[j]
        return out

    def _grads_loop(
        self, live: list[Trainer], batches: list[Batch], pos_ids: list[torch.Tensor | None]
    ) -> list[tuple[torch.Tensor, dict[str, Any], torch.Tensor, bool]]:
        """The same as `_grads_vmap`, one model after another (exactly the single trainer's step)."""
        out = []
        for t, b, pid in zip(live, batches, pos_ids, strict=True):
            b = b.to(self.device)
            pid = None if pid is None else pid.to(self.device)
            with t.precision.context(self.device):
                logits = t.model(b.tokens, positions=t.task.loss_positions, pos_ids=pid)
            loss, stats = loss_and_stats(logits, b, t.cfg.loss, t.cfg.loss_precision)
            out.append((loss, stats, logits, t._backward(loss)))
        return out

    # ------------------------------------------------------------------ loop
    def run(self, progress: bool = True) -> list[TrainResult]:
        trainers = self.trainers
        cfg0 = trainers[0].cfg
        if cfg0.threads:
            torch.set_num_threads(cfg0.threads)
        evals = {id(t): {k: b.to(self.device) for k, b in t.task.eval_sets().items()} for t in trainers}
        raw_evals = {id(t): t.task.eval_sets() for t in trainers}
        now = time.perf_counter()
        started = {id(t): now - t.elapsed_s for t in trainers}
        last_rows: dict[int, dict[str, Any]] = {id(t): {} for t in trainers}
        for t in trainers:
            t.finished_reason = ""
            t.model.train()
        live = list(trainers)
        failed: list[str] = []
        self._restack(live)
        last_state_save = time.perf_counter()
        state_every_s = min(t.cfg.state_every_s for t in trainers)
        total_steps = sum(t.cfg.steps for t in trainers)
        bar = progress_bar(total_steps, sum(t.step for t in trainers), progress)
        with _catch_signals(self), bar:
            while live:
                batches, pos_ids = [], []
                for t in live:
                    s = t.step
                    for group in t.optimizer.param_groups:
                        group["lr"] = lr_at(s, t.cfg)
                    batch = t.task.train_batch(s, t.cfg.batch_size, t.config.seed)
                    batches.append(batch)
                    pos_ids.append(position_ids(t.model, batch, offset_generator(t.config.seed, s)))
                grads = (self._grads_vmap if self.mode == "vmap" else self._grads_loop)(
                    live, batches, pos_ids
                )
                leaving: list[Trainer] = []
                for t, batch, pid, (loss, stats, logits, finite) in zip(
                    live, batches, pos_ids, grads, strict=True
                ):
                    s, cfg = t.step, t.cfg
                    at_end = s >= cfg.steps
                    if cfg.eval.due(s) or at_end:
                        train_stats = train_logits = None
                        if not at_end and batch is raw_evals[id(t)]["train"] and pid is None:
                            train_stats, train_logits = stats, logits
                        row = t._metrics_row(
                            s, evals[id(t)], train_stats, started[id(t)], train_logits, finite
                        )
                        t.folder.append_metrics(row)
                        last_rows[id(t)] = row
                        t.finished_reason = t._early_stop_reason(row)
                    stop = at_end or bool(t.finished_reason)
                    if stop or cfg.checkpoint.due(s):
                        t.folder.save_checkpoint(s, {k: v.cpu() for k, v in t.model.state_dict().items()})
                    if stop:
                        t.finished_reason = t.finished_reason or "steps"
                        t.save_state(time.perf_counter() - started[id(t)])
                        leaving.append(t)
                        continue
                    if cfg.checkpoint.due(s):
                        t.save_state(time.perf_counter() - started[id(t)])
                    if not t._update(finite):
                        if cfg.nonfinite == "stop":
                            t.save_state(time.perf_counter() - started[id(t)])
                            failed.append(
                                f"{t.folder.path} (step {s}, loss {loss.item():.4g}): the training loss "
                                "or its gradient is not finite; its state is the last finite one"
                            )
                            leaving.append(t)
                            continue
                        t.skipped_steps += 1
                    t.step += 1
                    bar.update(1)
                if leaving:
                    for t in leaving:
                        bar.update(max(t.cfg.steps - t.step, 0))  # an early stop skips its remaining steps
                    live = [t for t in live if t not in leaving]
                    self._restack(live)
                if live:
                    bar.set_postfix_str(
                        f"{len(live)} training; " + _postfix(last_rows[id(live[0])]), refresh=False
                    )
                if live and time.perf_counter() - last_state_save > state_every_s:
                    for t in live:
                        t.save_state(time.perf_counter() - started[id(t)])
                    last_state_save = time.perf_counter()
                if self._stop_signal and live:
                    for t in live:
                        t.save_state(time.perf_counter() - started[id(t)])
                    folders = " ".join(str(t.folder.path) for t in trainers)
                    raise Interrupted(
                        f"stopped by {self._stop_signal} with {len(live)} of {len(trainers)} models "
                        f"training; every state saved. Continue with: grokscope resume {folders}"
                    )
        self._restack([])
        if failed:
            raise GrokscopeError(
                f"{len(failed)} stacked model(s) stopped on a non-finite loss, the others finished: "
                + "; ".join(failed)
                + ". Lower train.lr, add train.grad_clip, or set train.nonfinite = 'skip', then resume them"
            )
        return [TrainResult(t.folder, t.step, t.finished_reason, last_rows[id(t)]) for t in trainers]


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """x [batch ...] with its first row repeated to n rows (rows past len(x) are never scored)."""
    if len(x) == n:
        return x
    return torch.cat([x, x[:1].expand(n - len(x), *x.shape[1:])])


__all__ = [
    "MODES",
    "STACKABLE",
    "StackedTrainer",
    "check_stackable",
    "parse_seeds",
    "resume_stacked",
    "seed_configs",
    "seed_folders",
    "stack_key",
    "train_or_resume_stacked",
    "train_stacked",
]
