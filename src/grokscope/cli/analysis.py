"""Verbs `analyze DIR` and `report DIR` (heavy imports stay inside handlers)."""

from __future__ import annotations

import argparse
import time

from grokscope.cli.options import add_options, options_from_args


def _analyze(path, options=None, progress: bool = True, figures: bool = True) -> None:
    from grokscope.analysis import analyze_run, load_phases

    t0 = time.perf_counter()
    result = analyze_run(path, options, progress=progress)
    n_new = len(result.meta.get("computed_steps", []))
    phases = load_phases(path)
    print(
        f"{path}/analysis/progress.csv: {len(result.steps)} checkpoints ({n_new} computed now, "
        f"{time.perf_counter() - t0:.1f} s); key frequencies {result.key.key_freqs or 'none found'}"
    )
    located = ", ".join(f"{n} {a}-{b}" for n, a, b in phases.spans()) or "none located"
    key = result.key
    if key.restricted_loss_train is not None:
        others = "; ".join(
            f"{r}: {v['key_freqs']} -> {v['restricted_loss_train']:.3g}"
            for r, v in key.by_rule.items()
            if r != key.rule and "restricted_loss_train" in v
        )
        print(
            f"restricted train loss with {key.key_freqs} ({key.source}, rule {key.rule}): "
            f"{key.restricted_loss_train:.3g} (the model's own: {key.model_loss_train:.3g}); {others}"
        )
    print("phases: " + (located if phases.known else "unknown (one checkpoint and no loss curve)"))
    print(f"phases and final-checkpoint snapshot: {path}/analysis/phases.json, snapshot.safetensors")
    if figures:
        from grokscope.figures import write_figures

        written = write_figures(path, "progress", force=True)
        if written:
            print(f"{len(written)} figures in {written[0].path.parent}")


def cmd_analyze(args: argparse.Namespace) -> int:
    from grokscope.analysis import AnalyzeOptions

    _analyze(args.dir, options_from_args(AnalyzeOptions, args), not args.quiet, figures=not args.no_figures)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from grokscope.analysis import applies_to
    from grokscope.report import is_sweep_folder, write_report
    from grokscope.run import Run

    if is_sweep_folder(args.dir):
        from grokscope.sweep.summarize import write_summary

        path, rows = write_summary(args.dir)  # unchanged trials leave summary.csv as it was
        print(f"sweep summary: {path} ({len(rows)} trials)")
    elif not args.no_analyze and applies_to(Run.open(args.dir).config):
        _analyze(args.dir, progress=not args.quiet, figures=False)
    print(f"report: {write_report(args.dir)}")
    return 0


def register(sub) -> None:
    from grokscope.analysis.options import AnalyzeOptions

    p = sub.add_parser("analyze", help="progress measures of a modular-arithmetic run, every checkpoint")
    p.add_argument("dir", help="run folder")
    add_options(p, AnalyzeOptions)
    p.add_argument("--no-figures", action="store_true", help="skip writing DIR/figures/*.png")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_analyze)

    p = sub.add_parser(
        "report",
        help="write DIR/report.html: config, headline numbers, phases, figures and tables of every study "
        "(DIR: a run folder, or a sweep / length-study folder)",
    )
    p.add_argument("dir", help="run folder or sweep folder")
    p.add_argument("--no-analyze", action="store_true", help="do not (re)run the progress analysis first")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_report)
