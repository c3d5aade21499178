"""Devices and precision: what a mainline training step costs here in fp32, bf16 and `auto`.

Prints, measured in this one process on this machine:
  - the device and what its hardware reports (the CPU's capability, AVX-512-BF16, AMX; the GPU),
  - what `train.precision = "auto"` resolves to here, and why,
  - ms per mainline training step (full batch, forward + float64 loss + backward + AdamW) for
    fp32, bf16 and auto, and each one's ratio to fp32 (bf16 on a CPU without native bf16 is the
    slow path `auto` must avoid),
  - with --to-grok: the wall time of `mainline_fast` (precision auto) to 99% test accuracy.
Stacked training (many models in one process) is measured by benchmarks/bench_stacked.py.

Run: python benchmarks/bench_devices.py [--device auto] [--threads 2] [--steps 30] [--to-grok]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as grokscope sets it, before torch loads
import torch  # noqa: E402

from grokscope.config import apply_overrides, from_dict  # noqa: E402
from grokscope.devices import cpu_features, describe, resolve_device, resolve_precision
from grokscope.presets import load_preset_or_file
from grokscope.run import build
from grokscope.scoring import loss_and_stats
from grokscope.train import train
from grokscope.train.optim import build_optimizer


def ms_per_step(device: torch.device, precision: str, steps: int) -> float:
    """Steady-state ms per full-batch mainline step in `precision` on `device`."""
    config = from_dict(apply_overrides(load_preset_or_file("mainline"), [f"train.precision={precision}"]))
    task, model = build(config)
    model.to(device)
    chosen = resolve_precision(precision, device)
    batch = task.eval_sets()["train"].to(device)
    optimizer = build_optimizer(list(model.parameters()), config.train)

    def step() -> None:
        with chosen.context(device):
            logits = model(batch.tokens, positions=task.loss_positions)
        loss, _ = loss_and_stats(logits, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--to-grok", action="store_true", help="also time mainline_fast to 99%% test acc")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device: {describe(device)}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    if device.type == "cpu":
        print(f"cpu features: {cpu_features()}")
    auto = resolve_precision("auto", device)
    print(f"precision auto -> {auto.used} ({auto.why})")
    print("\n| precision | resolves to | ms/step | vs fp32 |\n|---|---|---|---|")
    base = None
    for precision in ("fp32", "bf16", "auto"):
        ms = ms_per_step(device, precision, args.steps)
        base = base or ms
        used = resolve_precision(precision, device).used
        print(f"| {precision} | {used} | {ms:.1f} | {ms / base:.2f}x |", flush=True)
    if args.to_grok:
        config = from_dict(
            apply_overrides(load_preset_or_file("mainline_fast"), [f"train.device={args.device}"])
        )
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            result = train(config, Path(tmp) / "run", progress=False)
            wall = time.perf_counter() - t
        print(
            f"\nmainline_fast ({auto.used}): {result.reason} at step {result.step}, test_acc "
            f"{result.last_metrics.get('test_acc', float('nan')):.4f}, {wall:.1f} s wall"
        )


if __name__ == "__main__":
    main()
