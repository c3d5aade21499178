"""Wall-clock seconds of the verbs users wait on -- probe, lens, eval -- on one addition run folder.

    python benchmarks/bench_verbs.py RUN_DIR [--repeat 2] [--only probe,lens,eval]

RUN_DIR: a five-digit addition run, e.g.
    grokscope train five_digit_addition --out /tmp/fda --steps 3000 --quiet
Each verb runs as users run it (`python -m grokscope ...`, a fresh process: imports and loading
included), with the commands of docs/interp.md; it writes under RUN_DIR/analysis/ as usual. The
process inherits this environment (PYTHONPATH selects the code measured). Prints one line per run.

Measured 2026-12-01 on the shared 2-core machine (4 engineers; load average 0.5-2 during these runs),
/tmp/fda = five_digit_addition stopped at step 1626 (checkpoint 1500: test digit acc 0.98, exact 0.91);
"before" = commit 86ba4c9, "after" = branch scorer, each run a separate copy of the folder:

    verb    before (s)        after (s)
    eval    10.60, 10.36      7.46, 11.35     (the scorer adds nothing measurable; noise dominates)
    lens    147.2, 183.0      43.1, 45.3      (tuned-lens L-BFGS, 3 hooks x 200 steps, is most of it)
    probe   118.6, 127.1      39.2, 40.8      (collect: last block at the probed positions only;
                                               fit: preconditioned L-BFGS, control fitted with main)
Targets from the issue (probe < 15 s, lens < 10 s, eval < 10 s) are not all met on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

VERBS = {
    "probe": [
        "probe",
        "{dir}",
        "--hook",
        "blocks.0.hook_resid_mid",
        "--hook",
        "blocks.0.hook_resid_post",
        "--label",
        "carry_out",
        "--position",
        "loss",
        "--fit",
        "sample:5000",
    ],
    "lens": ["lens", "{dir}", "--fit", "sample:5000"],
    "eval": ["eval", "{dir}"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", default=",".join(VERBS))
    args = ap.parse_args()
    env = dict(os.environ, MPLBACKEND="Agg")
    for verb in args.only.split(","):
        cmd = [sys.executable, "-m", "grokscope", *(a.format(dir=args.dir) for a in VERBS[verb])]
        for i in range(args.repeat):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                print(done.stdout, done.stderr, file=sys.stderr)
                raise SystemExit(f"{verb} failed with exit code {done.returncode}")
            print(f"{verb:6s} run {i + 1}: {seconds:7.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
