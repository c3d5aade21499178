"""Wall-clock time for a preset to reach 99% test accuracy on this machine.

Each variant is trained from scratch in a temporary folder with `train.stop_at_test_acc=0.99`;
the script prints steps and seconds to get there (the run's own `elapsed_s`, training plus its
scheduled evaluations and checkpoints).

Run: python benchmarks/time_to_grok.py                  # mainline fp32, +Grokfast, bf16, mainline_fast
     python benchmarks/time_to_grok.py tiny --set train.lr=3e-3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from grokscope.config import apply_overrides, from_dict
from grokscope.presets import load_preset_or_file
from grokscope.train import train

VARIANTS = {
    "mainline (fp32)": ("mainline", []),
    "mainline + Grokfast": ("mainline", ["train.grokfast.enabled=true"]),
    "mainline bf16 autocast": ("mainline", ["train.precision='bf16'"]),
    "mainline_fast": ("mainline_fast", []),
}


def time_to_grok(preset: str, overrides: list[str], target: float = 0.99) -> tuple[int | None, float]:
    data = apply_overrides(load_preset_or_file(preset), [*overrides, f"train.stop_at_test_acc={target}"])
    config = from_dict(data)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Path(tmp) / "run", progress=False)
    row = result.last_metrics
    reached = row.get("test_acc", 0.0) >= target
    return (result.step if reached else None), row["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("preset", nargs="?")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--only", action="append", help="run only these variant names")
    args = parser.parse_args()
    variants = {f"{args.preset} {' '.join(args.set)}": (args.preset, args.set)} if args.preset else VARIANTS
    for name, (preset, overrides) in variants.items():
        if args.only and name not in args.only:
            continue
        step, seconds = time_to_grok(preset, overrides)
        outcome = f"99% test accuracy at step {step}" if step is not None else "did NOT reach 99%"
        print(f"{name:<28} {outcome} in {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
