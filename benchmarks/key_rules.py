"""The key-frequency rules side by side (docs/key_frequencies.md prints what this measures).

Part 1, hand-built neurons (p = 31, 200 neurons): frequency 4 carried cleanly by 100 neurons, 7 by 60
neurons explained at ~0.75 (none passes the 0.85 cut), 11 by 4 neurons at ~0.75, 36 noise neurons.
Part 2, a trained run: trains the `tiny` preset into /tmp (or takes a run folder), analyses it, and
prints each rule's key set and the restricted train loss it gives beside the model's own.

    PYTHONPATH=src python3 benchmarks/key_rules.py [RUN_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)


def main() -> None:
    from tests.test_fourier import _neurons_of

    from grokscope.analysis import analyze_run
    from grokscope.analysis.key_frequencies import key_frequencies

    plan = [(4, 0.95, 100), (7, 0.75, 60), (11, 0.75, 4), (2, 0.2, 36)]
    kf = key_frequencies(_neurons_of(31, plan), 31)
    print("hand-built neurons (p = 31):")
    for rule, v in kf.by_rule.items():
        print(f"  {rule:<10} {v['key_freqs']}")

    if len(sys.argv) > 1:
        run = Path(sys.argv[1])
    else:
        from grokscope.config import from_dict
        from grokscope.presets import load_preset_or_file
        from grokscope.train import train

        run = Path("/tmp/grokscope_key_rules/tiny")
        if not run.is_dir():
            train(from_dict(load_preset_or_file("tiny")), run, progress=False)
    key = analyze_run(run).key
    print(f"{run} at step {key.step}: model's own train loss {key.model_loss_train:.3g}")
    for rule, v in key.by_rule.items():
        print(
            f"  {rule:<10} {str(v['key_freqs']):<24} restricted train loss {v['restricted_loss_train']:.3g}"
        )
    scan(run)


def scan(path: Path) -> None:
    """Checkpoints where the rules disagree: each rule's set and restricted train loss."""
    from grokscope.analysis import progress as pm
    from grokscope.analysis.key_frequencies import key_frequencies
    from grokscope.analysis.modular_view import SIGNS, modular_outputs
    from grokscope.run import Run

    run = Run.open(path)
    task = run.task
    sign, idx = SIGNS[task.config.op], task.train_idx
    print("checkpoints where the rules differ (restricted train loss; the model's own):")
    for step, model in run.models(run.readable_steps()[::2]):
        out = modular_outputs(model, task)
        sets = {r: v["key_freqs"] for r, v in key_frequencies(out.neurons, task.p).by_rule.items()}
        if sets["carried"] == sets["threshold"]:
            continue
        own = float(pm.cross_entropy(out.logits[idx], task.labels[idx]))
        cells = [
            f"{r} {s} {float(pm.restricted_loss_from_logits(out.logits, task.labels, idx, task.p, s, sign)):.3g}"
            for r, s in sets.items()
        ]
        print(f"  step {step:>5}: own {own:.3g}; " + "; ".join(cells))


if __name__ == "__main__":
    main()
