"""Stacked training: model-steps per second of N models in one stacked process vs N sequential runs.

For each workload (mainline: p = 113 at full batch; five-digit addition at batch 128) and each N,
it trains N seeds stacked (`train_stacked`, the mode given, `auto` by default) and the same N seeds
one after another with the single-model trainer, in this one process, with the same thread count.
Each arm runs twice, to S1 and to S2 steps, and the rate is N * (S2 - S1) / (T(S2) - T(S1)): the
fixed costs (folder creation, the evaluations at step 0 and at the end, imports) cancel, and what
is left is the steady training step. Evaluation is switched off in both arms (the metrics row is
replaced by {"step": s}): it is the same per-model scorer in both and would only add noise here.
Prints one row per (workload, N) with the ratio.

`--steady` measures instead the training step alone, in one process, alternating the two arms
`--repeat` times and taking each arm's median (robust on a shared, loaded machine): the stacked
step (each model's batch, the stacked forward and backward, each model's optimizer update) against
N single-model steps (batch, forward, backward, update: the single trainer's code).

Run: python benchmarks/bench_stacked.py [--threads 1] [--n 1 8 32] [--s1 4 --s2 14] [--mode auto]
     python benchmarks/bench_stacked.py --steady [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from grokscope.config import apply_overrides, from_dict
from grokscope.presets import load_preset_or_file
from grokscope.train import train
from grokscope.train.stacked import choose_mode, seed_configs, seed_folders, train_stacked

WORKLOADS = {
    "mainline (full batch)": ("mainline", []),
    "five-digit addition (batch 128)": ("five_digit_addition", ["train.batch_size=128"]),
}
QUIET = [
    "train.eval.every=1000000",
    "train.eval.dense_until=0",
    "train.checkpoint.every=1000000",
    "train.checkpoint.dense_until=0",
    "train.state_every_s=1000000",
]


def configs(preset: str, extra: list[str], n: int, steps: int):
    base = from_dict(apply_overrides(load_preset_or_file(preset), [*extra, *QUIET, f"train.steps={steps}"]))
    return seed_configs(base, range(n))


def time_stacked(preset, extra, n, steps, mode, root: Path) -> float:
    cs = configs(preset, extra, n, steps)
    t = time.perf_counter()
    train_stacked(cs, seed_folders(cs, root / f"stacked-{steps}"), overwrite=True, progress=False, mode=mode)
    return time.perf_counter() - t


def time_sequential(preset, extra, n, steps, root: Path) -> float:
    cs = configs(preset, extra, n, steps)
    t = time.perf_counter()
    for c, out in zip(cs, seed_folders(cs, root / f"seq-{steps}"), strict=True):
        train(c, out, overwrite=True, progress=False)
    return time.perf_counter() - t


def steady_rates(preset, extra, n, mode, repeat) -> tuple[str, float, float]:
    """(mode, stacked, sequential) model-steps/s of the bare training step, medians over `repeat`."""
    import statistics

    from grokscope.model.positional import offset_generator, position_ids
    from grokscope.run import build
    from grokscope.train.loop import Trainer
    from grokscope.train.optim import lr_at
    from grokscope.train.stacked import StackedTrainer

    trainers = [Trainer(None, c, *build(c)) for c in configs(preset, extra, n, 1000)]
    stacked = StackedTrainer(trainers, mode=mode if n > 1 else "loop")
    single = StackedTrainer(trainers, mode="loop")

    def step(st: StackedTrainer, s: int) -> None:
        batches, ids = [], []
        for t in trainers:
            for group in t.optimizer.param_groups:
                group["lr"] = lr_at(s, t.cfg)
            b = t.task.train_batch(s, t.cfg.batch_size, t.config.seed)
            batches.append(b)
            ids.append(position_ids(t.model, b, offset_generator(t.config.seed, s)))
        grads = (st._grads_vmap if st.mode == "vmap" else st._grads_loop)(trainers, batches, ids)
        for t, g in zip(trainers, grads, strict=True):
            t._update(g[3])

    times: dict[str, list[float]] = {"stacked": [], "sequential": []}
    s = 0
    for _ in range(repeat + 1):  # the first round warms up
        for arm, st in (("stacked", stacked), ("sequential", single)):
            st._restack(trainers)
            t0 = time.perf_counter()
            step(st, s)
            times[arm].append(time.perf_counter() - t0)
            st._restack([])
            s += 1
    med = {arm: statistics.median(v[1:]) for arm, v in times.items()}
    return stacked.mode, n / med["stacked"], n / med["sequential"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--s1", type=int, default=4)
    ap.add_argument("--s2", type=int, default=14)
    ap.add_argument("--mode", default="auto", choices=("auto", "vmap", "loop"))
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--steady", action="store_true", help="the bare training step, arms alternated")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from grokscope.train.loop import Trainer

    Trainer._metrics_row = lambda self, step, *a, **k: {"step": step}  # both arms: no evaluation
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()}")
    if args.steady:
        print(f"rate = N / median step time over {args.repeat} alternated rounds, model-steps/s")
    else:
        print(f"rate = N * ({args.s2} - {args.s1}) steps / (T({args.s2}) - T({args.s1})), model-steps/s")
    header = f"{'workload':<34} {'N':>3} {'mode':>5} {'stacked':>9} {'sequential':>11} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        time_sequential("tiny", [], 1, 2, root)  # imports and first-call costs out of the way
        for label, (preset, extra) in ((k, WORKLOADS[k]) for k in args.workloads):
            for n in args.n:
                if args.steady:
                    mode, r_st, r_sq = steady_rates(preset, extra, n, args.mode, args.repeat)
                    print(
                        f"{label:<34} {n:>3} {mode:>5} {r_st:>9.1f} {r_sq:>11.1f} {r_st / r_sq:>6.2f}",
                        flush=True,
                    )
                    continue
                from grokscope.run import build

                probe = [Trainer(None, c, *build(c)) for c in configs(preset, extra, min(n, 2), 1)]
                mode = choose_mode(args.mode, probe) if n > 1 else "loop"
                st = {s: time_stacked(preset, extra, n, s, args.mode, root) for s in (args.s1, args.s2)}
                sq = {s: time_sequential(preset, extra, n, s, root) for s in (args.s1, args.s2)}
                steps = n * (args.s2 - args.s1)
                r_st = steps / max(st[args.s2] - st[args.s1], 1e-9)
                r_sq = steps / max(sq[args.s2] - sq[args.s1], 1e-9)
                print(
                    f"{label:<34} {n:>3} {mode:>5} {r_st:>9.1f} {r_sq:>11.1f} {r_st / r_sq:>6.2f}", flush=True
                )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
