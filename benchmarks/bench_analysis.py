"""Progress-measure analysis: grokscope vs a faithful re-creation of the original code's metrics.

    python benchmarks/bench_analysis.py RUN_DIR [--original-checkpoints 3] [--threads 1]

RUN_DIR should be mainline-shaped (p = 113, d_mlp = 512) with >= 200 checkpoints; make one quickly with
    grokscope train mainline --steps 400 --set train.checkpoint.every=2 \
        --set train.checkpoint.dense_every=2 --out /tmp/mainline_bench --quiet
(the weights need not have grokked for timing). Prints per-checkpoint time of both, their ratio, the
time for all checkpoints (`analyze_run`, recomputed from scratch), the forward over the p x p grid
(the model's grid fast path vs its general forward), and peak memory for a quarter of the
checkpoints vs all of them (bounded memory: it should not grow with their number).

The "original" below follows the structure of the progress-measures paper's notebook code: a full
forward pass with cached activations, key frequencies from a Python loop over neurons x frequencies on
a 2D Fourier transform of all neurons, the 56 x p² x p cosine cube built per checkpoint for the
cos(k(a+b−c)) coefficients, restricted / excluded losses from projections onto per-frequency p²
vectors, float32 except the float64 cross-entropy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from grokscope.analysis.fourier import fourier_basis
from grokscope.run import Run, load_weights

PAPER_KEY_FREQS = [14, 35, 41, 42, 52]  # the mainline run's key frequencies in Nanda et al. (2023)


# ---------------------------------------------------------------------------- the original, re-created
def cross_entropy_high_precision(logits, labels):
    logprobs = torch.nn.functional.log_softmax(logits.to(torch.float64), dim=-1)
    return -torch.gather(logprobs, index=labels[:, None], dim=-1).mean()


def original_metrics(model, task, key_freqs_from_final=None) -> dict:
    """One checkpoint's metrics the way the original code computed them."""
    p = task.p
    fb = fourier_basis(p, torch.float32)
    labels, is_train, is_test = task.labels, task.train_idx, task.test_idx
    name = "blocks.0.mlp.hook_post"
    logits, cache = model.run_with_cache(task.tokens, names_filter=name)
    logits = logits[:, -1, :p]
    neuron_acts = cache[name][:, -1]  # [p², d_mlp]

    def fft2d(mat):
        shape = mat.shape
        m = mat.reshape(p, p, -1)
        return torch.einsum("xyz,fx,Fy->fFz", m, fb, fb).reshape(shape)

    def extract_freq_2d(tensor, freq):
        index_1d = [0, 2 * freq - 1, 2 * freq]
        return tensor[[[i] * 3 for i in index_1d], [index_1d] * 3]

    # key frequencies: the Python loop over neurons x frequencies
    centered = neuron_acts - neuron_acts.mean(0)
    fourier_neuron_acts = fft2d(centered).reshape(p, p, -1)
    neuron_freqs, neuron_frac = [], []
    for ni in range(fourier_neuron_acts.shape[-1]):
        best_frac, best_freq = -1e6, -1
        for freq in range(1, p // 2):
            numerator = extract_freq_2d(fourier_neuron_acts[:, :, ni], freq).pow(2).sum()
            denominator = fourier_neuron_acts[:, :, ni].pow(2).sum().item()
            frac = numerator / denominator
            if frac > best_frac:
                best_freq, best_frac = freq, frac
        neuron_freqs.append(best_freq)
        neuron_frac.append(float(best_frac))
    neuron_freqs = np.array(neuron_freqs)
    key_freqs = key_freqs_from_final
    if key_freqs is None:
        freqs, counts = np.unique(neuron_freqs[np.array(neuron_frac) > 0.85], return_counts=True)
        key_freqs = [
            int(f) for f, c in zip(freqs, counts, strict=True) if c >= max(1, 0.02 * len(neuron_freqs))
        ]

    def cos_xpy_direction(freq):
        cc = (fb[2 * freq - 1][:, None] * fb[2 * freq - 1][None, :]).flatten()
        ss = (fb[2 * freq][:, None] * fb[2 * freq][None, :]).flatten()
        return (cc - ss) / np.sqrt(2)

    def sin_xpy_direction(freq):
        sc = (fb[2 * freq][:, None] * fb[2 * freq - 1][None, :]).flatten()
        cs = (fb[2 * freq - 1][:, None] * fb[2 * freq][None, :]).flatten()
        return (sc + cs) / np.sqrt(2)

    def component(tensor, direction):
        return direction[:, None] @ (direction[None, :] @ tensor)

    def test_logits(x, mode, bias_correction=False, original=None):
        if bias_correction:
            x = (original - x).mean(0) + x
        idx = is_train if mode == "train" else is_test
        return cross_entropy_high_precision(x[idx], labels[idx]).item()

    out = {
        "train_loss": test_logits(logits, "train"),
        "test_loss": test_logits(logits, "test"),
    }
    approx = torch.zeros_like(logits)
    for freq in key_freqs:
        approx = (
            approx + component(logits, cos_xpy_direction(freq)) + component(logits, sin_xpy_direction(freq))
        )
    out["restricted_loss_train"] = test_logits(approx, "train", True, logits)
    out["restricted_loss_test"] = test_logits(approx, "test", True, logits)
    out["excluded_loss_train"] = test_logits(logits - approx, "train")
    out["excluded_by_freq"] = [
        test_logits(
            logits - component(logits, cos_xpy_direction(f)) - component(logits, sin_xpy_direction(f)),
            "train",
        )
        for f in key_freqs
    ]
    # the cos(k(a+b−c)) cube, built per checkpoint
    cos_cube = []
    for freq in range(1, p // 2 + 1):
        a = torch.arange(p)[:, None, None]
        b = torch.arange(p)[None, :, None]
        c = torch.arange(p)[None, None, :]
        cube = torch.cos(freq * 2 * torch.pi / p * (a + b - c))
        cube /= cube.norm()
        cos_cube.append(cube)
    cos_cube = torch.stack(cos_cube, dim=0)
    out["cos_coeffs"] = (cos_cube * logits.reshape(1, p, p, p)).sum([-3, -2, -1])

    def calc_gini(x):
        x = x.sort().values
        n = x.shape[0]
        return (1 - 2 * ((x / x.sum()) * ((n - torch.arange(1, n + 1) + 0.5) / n)).sum()).item()

    W_E = model.embed.W_E[:p]
    W_L = model.blocks[0].mlp.W_out @ model.unembed.W_U[:, :p]
    out["gini_W_E"] = calc_gini((fb @ W_E).norm(dim=-1))
    out["gini_W_L"] = calc_gini((W_L @ fb.T).norm(dim=0))
    out["sum_sq_weights"] = sum(w.pow(2).sum().item() for w in model.parameters())
    out["key_freqs"] = key_freqs
    return out


# ---------------------------------------------------------------------------- measurement
def peak_rss_of_analysis(run_dir: Path, threads: int) -> float:
    """Peak resident memory (MiB) of a fresh process analysing `run_dir` from scratch."""
    # VmHWM of the child, not ru_maxrss: Linux carries the parent's ru_maxrss over fork + exec
    code = (
        "import re, sys; from grokscope.analysis import analyze_run; "
        f"analyze_run(sys.argv[1], recompute=True, threads={threads}); "
        "print(re.search(r'VmHWM:[ \\t]+([0-9]+)', open('/proc/self/status').read()).group(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def subset_run(run_dir: Path, n: int, where: Path) -> Path:
    """A run folder holding only the first `n` checkpoints of `run_dir` (files linked, not copied)."""
    target = where / "subset"
    (target / "checkpoints").mkdir(parents=True)
    for name in ("config.toml", "split.safetensors", "metrics.jsonl"):
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, target / name)
    for step in Run(run_dir).checkpoint_steps()[:n]:
        src = Run(run_dir).checkpoint_path(step)
        os.symlink(src.resolve(), target / "checkpoints" / src.name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--original-checkpoints", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from grokscope.analysis import analyze_run

    run = Run.open(args.run_dir)
    config = run.config
    task, model = run.task, run.new_model().eval()
    steps = run.checkpoint_steps()
    print(
        f"run {args.run_dir}: p = {task.p}, d_mlp = {config.model.d_mlp}, {len(steps)} checkpoints; "
        f"torch threads {args.threads}; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    # grokscope: the whole run from scratch (includes loading, key-frequency detection, writing tables)
    detected = analyze_run(args.run_dir, threads=args.threads).key.key_freqs
    key_freqs = detected or PAPER_KEY_FREQS  # an ungrokked run has none; time the work a grokked one needs
    print(
        f"key frequencies used by both: {key_freqs}" + ("" if detected else " (the paper's; none detected)")
    )
    t0, c0 = time.perf_counter(), time.process_time()
    result = analyze_run(args.run_dir, key_freqs=key_freqs, recompute=True, threads=args.threads)
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    ours = total / len(steps)
    print(f"grokscope analyze_run, all {len(steps)} checkpoints: {total:.1f} s wall ({total_cpu:.1f} s CPU)")
    print(f"grokscope per checkpoint: {ours * 1000:.0f} ms wall ({total_cpu / len(steps) * 1000:.0f} ms CPU)")

    # the original, on a few checkpoints spread over the run (key freqs from the final one, like ours)
    picks = [steps[int(i)] for i in np.linspace(0, len(steps) - 1, args.original_checkpoints)]
    kf = key_freqs
    times, cpus = [], []
    with torch.no_grad():
        for step in picks:
            load_weights(model, run.load_checkpoint(step), f"step {step}")
            t0, c0 = time.perf_counter(), time.process_time()
            ref = original_metrics(model, task, key_freqs_from_final=kf)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            i = int(np.searchsorted(result.steps, step))
            for col in ("test_loss", "restricted_loss_train", "excluded_loss_train", "gini_W_E"):
                ok = np.isclose(ref[col], result.progress[col][i], rtol=1e-3, atol=1e-6)
                assert ok, (col, step, ref[col], result.progress[col][i])
    orig = float(np.mean(times))
    print(
        f"original re-creation per checkpoint (mean of {len(picks)}): {orig * 1000:.0f} ms wall "
        f"({np.mean(cpus) * 1000:.0f} ms CPU); same numbers as grokscope to 1e-3"
    )
    print(
        f"speed-up per checkpoint: {orig / ours:.1f}x wall, {np.mean(cpus) / (total_cpu / len(steps)):.1f}x CPU"
    )
    print(f"original, extrapolated to all {len(steps)} checkpoints: {orig * len(steps):.0f} s")

    # the forward over the p x p grid: the model's grid fast path vs its general forward, alternated
    from grokscope.analysis.modular_view import modular_outputs

    load_weights(model, run.load_checkpoint(steps[-1]), f"step {steps[-1]}")
    wall, cpu = {True: [], False: []}, {True: [], False: []}
    for _ in range(11):
        for fast in (True, False):
            t0, c0 = time.perf_counter(), time.process_time()
            modular_outputs(model, task, fast=fast)
            wall[fast].append(1000 * (time.perf_counter() - t0))
            cpu[fast].append(1000 * (time.process_time() - c0))
    med = {k: (float(np.median(wall[k][1:])), float(np.median(cpu[k][1:]))) for k in wall}  # 1st: warm-up
    print(
        f"forward over the {task.p}x{task.p} grid (logits + neurons, median of 10): grid fast path "
        f"{med[True][0]:.0f} ms wall ({med[True][1]:.0f} ms CPU), general forward {med[False][0]:.0f} ms "
        f"wall ({med[False][1]:.0f} ms CPU): {med[False][1] / med[True][1]:.1f}x CPU"
    )

    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            quarter = max(1, len(steps) // 4)
            small = peak_rss_of_analysis(subset_run(args.run_dir, quarter, Path(tmp)), args.threads)
        full = peak_rss_of_analysis(args.run_dir, args.threads)
        print(
            json.dumps(
                {
                    f"peak_rss_MiB_{quarter}_checkpoints": round(small),
                    f"peak_rss_MiB_{len(steps)}_checkpoints": round(full),
                }
            )
        )


if __name__ == "__main__":
    main()
