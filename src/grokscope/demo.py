"""The demo: train the mainline run until it groks, then analyse it and write its report."""

from __future__ import annotations

from pathlib import Path

from grokscope.config import apply_overrides, from_dict
from grokscope.presets import load_preset_or_file
from grokscope.run import Run
from grokscope.train import resume, train


def run_demo(out: Path, preset: str = "mainline", overwrite: bool = False, progress: bool = True) -> Path:
    """Train (or finish training) `preset` in `out`, analyse it and write its report; returns the run folder."""
    if (out / "config.toml").is_file() and not overwrite:
        print(f"continuing the demo run in {out}")
        result = resume(out, progress=progress)
    else:
        # "until it groks": stop at 99% test accuracy (the preset's own step budget is the cap)
        config = from_dict(apply_overrides(load_preset_or_file(preset), ["train.stop_at_test_acc=0.99"]))
        result = train(config, out, overwrite=overwrite, progress=progress)
    row = result.last_metrics
    print(f"{out}: trained to step {result.step}; test accuracy {row.get('test_acc', float('nan')):.4f}")
    from grokscope.analysis import analyze_run, applies_to
    from grokscope.report import write_report

    run = Run.open(out)
    if applies_to(run.config):
        key = analyze_run(out, progress=progress).key.key_freqs
        print(
            f"{out}/analysis/: progress measures at every checkpoint; key frequencies {key or 'none found'}"
        )
    report = write_report(out)
    print(f"report: {report}")
    return run.path
