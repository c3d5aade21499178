"""Mainline training speed: grokscope vs a faithful re-creation of the original loop, and the floor.

Prints, measured in this one process on this machine:
  - the fp32 matmul rate (GFLOP/s) on the mainline's own matmul shapes,
  - the FLOPs a mainline training step must do and the floor they imply (ms/step),
  - ms/step of grokscope's training step (steady state, evaluation amortised per the mainline's
    schedule) and of the original loop (all positions, 114 classes, test loss every epoch),
  - their ratio, and grokscope's distance from the floor.

Run: python benchmarks/bench_train.py [--threads 2] [--steps 200]
"""

from __future__ import annotations

import argparse
import time

import torch

from grokscope.config import apply_overrides, from_dict
from grokscope.presets import load_preset_or_file
from grokscope.run import build
from grokscope.scoring import evaluate, loss_and_stats
from grokscope.train.optim import build_optimizer, lr_at
from original_loop import OriginalTransformer, original_epoch


def matmul_rate(n_rows: int, d: int, m: int, repeats: int = 50) -> float:
    a, w = torch.randn(n_rows, d), torch.randn(d, m)
    for _ in range(5):
        a @ w
    t = time.perf_counter()
    for _ in range(repeats):
        a @ w
    return 2 * n_rows * d * m * repeats / (time.perf_counter() - t) / 1e9


def step_flops(
    n: int, d: int, heads: int, d_head: int, d_mlp: int, v_in: int, v_out: int, n_ctx: int
) -> float:
    """FLOPs of one grokscope training step (forward + backward = 3x forward matmuls)."""
    table = v_in * n_ctx * d * 3 * heads * d_head * 2  # layer-0 q/k/v per (token, position)
    attn = 2 * n * heads * n_ctx * d_head * 2  # scores + mix at the one query position
    w_o = n * heads * d_head * d * 2
    mlp = n * d * d_mlp * 2 * 2
    unembed = n * d * v_out * 2
    return 3 * (table + attn + w_o + mlp + unembed)


def time_it(fn, steps: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = from_dict(apply_overrides(load_preset_or_file("mainline"), []))
    task, model = build(config)
    cfg, positions = config.train, task.loss_positions
    evals = task.eval_sets()
    train_set, test_set = evals["train"], evals["test"]
    optimizer = build_optimizer(list(model.parameters()), cfg)
    n, p = len(train_set), task.p
    m = config.model

    rate = matmul_rate(n, m.d_model, m.d_mlp)
    flops = step_flops(n, m.d_model, m.n_heads, m.d_head, m.d_mlp, task.d_vocab, task.d_vocab_out, 3)
    eval_flops = flops / 3 * len(test_set) / n  # forward only, test set
    print(
        f"machine: {torch.get_num_threads()} threads, fp32 matmul {rate:.0f} GFLOP/s on [{n}x{m.d_model}]@[{m.d_model}x{m.d_mlp}]"
    )
    print(f"floor: {flops / 1e9:.2f} GFLOP per step -> {flops / rate / 1e6:.1f} ms/step")

    step = [0]

    def grokscope_step() -> None:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step[0], cfg)
        loss, _ = loss_and_stats(model(train_set.tokens, positions=positions), train_set)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step[0] += 1

    ours = time_it(grokscope_step, args.steps)
    eval_ms = time_it(lambda: evaluate(model, test_set, positions), 20, warmup=2)
    evals_per_step = 1 / cfg.eval.every  # steady state after the dense phase
    ours_total = ours + eval_ms * evals_per_step
    print(
        f"grokscope: {ours:.1f} ms/step train + {eval_ms:.1f} ms per test eval every {cfg.eval.every} steps = {ours_total:.1f} ms/step"
    )

    orig = OriginalTransformer(d_vocab=p + 1)
    orig_opt = torch.optim.AdamW(orig.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(orig_opt, lambda s: min(s / 10, 1))
    tr_idx, te_idx = task.train_idx, task.test_idx
    data = task.tokens
    labels = task.labels
    orig_ms = time_it(
        lambda: original_epoch(
            orig, orig_opt, sched, data[tr_idx], labels[tr_idx], data[te_idx], labels[te_idx]
        ),
        max(args.steps // 4, 20),
    )
    print(f"original loop: {orig_ms:.1f} ms/epoch (all 3 positions, {p + 1} classes, test loss every epoch)")
    print(f"speed-up vs original: {orig_ms / ours_total:.2f}x   (target >= 5x)")
    floor_ms = (flops + eval_flops * evals_per_step) / rate / 1e6
    print(f"grokscope / floor: {ours_total / floor_ms:.2f}x   (target <= 2x)")


if __name__ == "__main__":
    main()
