"""Summarise the numerical-stability study (docs/stability.md) from its sweep folder.

    PYTHONPATH=src python3 benchmarks/stability_study.py /tmp/stability_sweep [--png docs/figures/stability_sweep.png]

Prints one row per trial: steps trained, final test accuracy, the first evaluated step with test
accuracy >= 99% (grokking), the first step where more than half the training examples are in
softmax collapse, and the final collapse fraction, NLM cosine and logit norm; then writes the
comparison figure (figures/stability.py) to --png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grokscope.figures.render import save_png
from grokscope.figures.stability import COLLAPSE, LOGIT_NORM, NLM, stability_comparison, sweep_settings


def first_step(rows: list[dict], key: str, at_least: float) -> int | None:
    return next((r["step"] for r in rows if r.get(key, -1.0) >= at_least), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    settings = sweep_settings(args.sweep)
    head = (
        "setting",
        "seed",
        "steps",
        "test_acc",
        "grok_step",
        "collapse>0.5",
        "collapse",
        "nlm_cos",
        "logit_norm",
    )
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for label, seeds in settings.items():
        for seed, rows in enumerate(seeds):
            last = rows[-1]
            cells = (
                label,
                seed,
                last["step"],
                f"{last['test_acc']:.3f}",
                first_step(rows, "test_acc", 0.99) or "-",
                first_step(rows, COLLAPSE, 0.5) or "-",
                f"{last.get(COLLAPSE, float('nan')):.3f}",
                f"{last.get(NLM, float('nan')):.3f}",
                f"{last.get(LOGIT_NORM, float('nan')):.1f}",
            )
            print(" | ".join(map(str, cells)))
    if args.png is not None:
        print(f"figure: {save_png(stability_comparison(settings, args.sweep.name), args.png)}")


if __name__ == "__main__":
    main()
