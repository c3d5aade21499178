"""Per-step cost of the paper's frac_train sweep (sweep_frac_train_paper.toml: 7 fractions x 2
seeds at p = 113, full batch), packed (trials stacked, one process per worker) vs unpacked (one
process per trial), and the wall time that projects for the whole sweep.

Each arm runs the sweep twice, cut to S1 and S2 steps (`--set train.steps=...`, evaluation every
50 steps as in the preset, no early stop reached); the marginal cost per step of the whole sweep
is (T(S2) - T(S1)) / (S2 - S1), the fixed cost (process start-up, folders, first evaluations) is
what is left. The projection multiplies the marginal cost by the steps the paper's runs need
(`--stop-steps`, one per fraction; defaults are rough guesses, not measurements) and adds the fixed cost.

Run: PYTHONPATH=src python benchmarks/bench_stacked_sweep.py [--workers 2] [--s1 20 --s2 120]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from grokscope.sweep import load_spec, run_sweep

HERE = Path(__file__).parent
FRACS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def timed(steps: int, pack: bool, workers: int, root: Path) -> float:
    spec = load_spec(str(HERE / "sweep_frac_train_paper.toml"), extra_set=[f"train.steps={steps}"])
    out = root / f"{'packed' if pack else 'plain'}-{steps}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    result = run_sweep(spec, out, workers=workers, progress=False, pack=pack)
    wall = time.perf_counter() - t
    bad = [n for n, r in result.rows.items() if r["status"] != "done"]
    if bad:
        raise SystemExit(f"trials did not finish: {bad}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--s1", type=int, default=20)
    ap.add_argument("--s2", type=int, default=120)
    # steps to 99% test accuracy per fraction: a guess from the paper's test-loss curves (appendix)
    ap.add_argument("--stop-steps", type=int, nargs=7, default=[10000, 5000, 2500, 2000, 1500, 1200, 1000])
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        walls = {}
        for pack in (True, False):
            for s in (args.s1, args.s2):
                walls[pack, s] = timed(s, pack, args.workers, root)
                print(f"  {'packed' if pack else 'unpacked'} {s} steps: {walls[pack, s]:.1f} s", flush=True)
    n_trials = 2 * len(FRACS)
    mean_steps = sum(args.stop_steps) / len(args.stop_steps)
    print(f"{n_trials} trials, {args.workers} workers; load average after: {os.getloadavg()}")
    print(f"{'arm':<9} {'s/step (sweep)':>15} {'fixed s':>8} {'projected h':>12}")
    for pack in (True, False):
        per_step = (walls[pack, args.s2] - walls[pack, args.s1]) / (args.s2 - args.s1)
        fixed = walls[pack, args.s1] - per_step * args.s1
        # per_step is all trials advancing one step together; the projection runs every trial to the
        # mean of its stop steps (balanced packs; a pack ends with its slowest member)
        projected = (per_step * mean_steps + fixed) / 3600
        print(f"{'packed' if pack else 'unpacked':<9} {per_step:>15.3f} {fixed:>8.1f} {projected:>12.2f}")


if __name__ == "__main__":
    main()
