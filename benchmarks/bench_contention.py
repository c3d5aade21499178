"""How much one other CPU-bound process slows a mainline training step, by thread count and OpenMP
wait policy (issue 18: sharing the cores should cost about 2x, not 10x).

Each cell is a fresh child process (the wait policy must be set before torch loads) that times
`--steps` full-batch mainline training steps; a second child spins on one core beside it for the
"busy" column. Prints ms/step alone, ms/step beside the spinner, and their ratio.

Run: python benchmarks/bench_contention.py [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = r"""
import time, torch
from grokscope.config import from_dict
from grokscope.presets import load_preset_or_file
from grokscope.run import Run, build
from grokscope.train.loop import Trainer
torch.set_num_threads({threads})
config = from_dict(load_preset_or_file("mainline"))
task, model = build(config)
trainer = Trainer(None, config, task, model)
batch = task.train_batch(0, 0, 0)
from grokscope.train import loop
def step():
    logits = model(batch.tokens, positions=task.loss_positions)
    loss = logits.double().log_softmax(-1).gather(-1, batch.targets[..., None]).mean().neg()
    trainer._update(loss)
for _ in range(5):
    step()
t = time.perf_counter()
for _ in range({steps}):
    step()
print((time.perf_counter() - t) / {steps} * 1000)
"""

SPIN = "import time\nt = time.time()\nwhile time.time() - t < 600: pass\n"


def cell(threads: int, policy: str | None, busy: bool, steps: int) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        time.sleep(0.2 if busy else 0)
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(threads=threads, steps=steps)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before starting")
    print("| threads | OMP_WAIT_POLICY | alone ms/step | beside a busy process | ratio |")
    print("|---|---|---|---|---|")
    for threads in (2, 1):
        for policy in (None, "PASSIVE"):
            alone = cell(threads, policy, False, args.steps)
            busy = cell(threads, policy, True, args.steps)
            print(f"| {threads} | {policy or '(default)'} | {alone:.1f} | {busy:.1f} | {busy / alone:.2f}x |")


if __name__ == "__main__":
    main()
