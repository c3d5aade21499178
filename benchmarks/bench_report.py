"""`grokscope report` on an analysed run: the first call renders every figure, a second call none.

    python benchmarks/bench_report.py RUN_DIR [--repeat 3]

RUN_DIR is any analysed run folder (`grokscope analyze RUN_DIR`), e.g. the `tiny` preset trained with
`grokscope train tiny --out /tmp/tiny`. The run is copied to a temporary folder; the script prints the
wall time of `write_report` with no PNGs present (every registered figure rendered) and then with
all PNGs up to date (the report only reads them), each the best of --repeat calls, and how many PNGs
each call wrote.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from grokscope.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(args.run_dir, run, ignore=shutil.ignore_patterns("figures", "report.html"))
        write_report(run)  # warm-up: imports, font cache
        cold, warm, n_cold, n_warm = [], [], 0, 0
        for _ in range(args.repeat):
            shutil.rmtree(run / "figures", ignore_errors=True)
            t0 = time.perf_counter()
            write_report(run)
            cold.append(time.perf_counter() - t0)
            n_cold = len(list((run / "figures").glob("*.png")))
            before = {p: p.stat().st_mtime_ns for p in (run / "figures").glob("*.png")}
            t0 = time.perf_counter()
            write_report(run)
            warm.append(time.perf_counter() - t0)
            n_warm = sum(p.stat().st_mtime_ns != t for p, t in before.items())
        print(f"report, no PNGs present : {min(cold):.2f} s ({n_cold} figures rendered)")
        print(f"report, PNGs up to date : {min(warm):.2f} s ({n_warm} figures rendered)")
        print(f"speed-up of a repeated report: {min(cold) / min(warm):.1f}x")


if __name__ == "__main__":
    main()
