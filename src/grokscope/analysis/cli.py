"""Verbs `grokscope analyze DIR` and `grokscope report DIR` (heavy imports stay inside handlers)."""

from __future__ import annotations

import argparse
import time

from grokscope.errors import GrokscopeError


def _freq_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def analyzable(path) -> bool:
    """Whether the progress measures apply to this run (modular task, odd prime p, add/subtract)."""
    from grokscope.train.run_folder import RunFolder

    config = RunFolder.open(path).config()
    if config.task.kind != "modular":
        return False
    from grokscope.analysis.fourier import check_odd_prime
    from grokscope.analysis.modular_view import SIGNS

    try:
        check_odd_prime(config.task.p)
    except GrokscopeError:
        return False
    return config.task.op in SIGNS


def run_analyze(path, args=None, progress: bool = True, figures: bool = True) -> None:
    from grokscope.analysis import analyze_run, detect_phases

    t0 = time.perf_counter()
    result = analyze_run(
        path,
        key_freqs=getattr(args, "key_freqs", None),
        per_checkpoint=getattr(args, "per_checkpoint", False),
        threshold=getattr(args, "threshold", 0.85),
        min_share=getattr(args, "min_share", 0.02),
        recompute=getattr(args, "recompute", False),
        progress=progress,
        threads=getattr(args, "threads", 1),
    )
    n_new = len(result.meta.get("computed_steps", []))
    phases = detect_phases(result.progress)
    print(
        f"{path}/analysis/progress.csv: {len(result.steps)} checkpoints ({n_new} computed now, "
        f"{time.perf_counter() - t0:.1f} s); key frequencies {result.key.key_freqs or 'none found'}"
    )
    print("phases: " + (", ".join(f"{n} {a}-{b}" for n, a, b in phases.spans()) or "none located"))
    print(f"phases and final-checkpoint snapshot: {path}/analysis/phases.json, snapshot.safetensors")
    if figures:
        from grokscope.figures import write_figures

        written = write_figures(path, "progress", force=True)
        if written:
            print(f"{len(written)} figures in {written[0].path.parent}")


def cmd_analyze(args: argparse.Namespace) -> int:
    run_analyze(args.dir, args, progress=not args.quiet, figures=not args.no_figures)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from grokscope.report import is_sweep_folder, write_report

    if is_sweep_folder(args.dir):
        from grokscope.sweep.summarize import write_summary

        path, rows = write_summary(args.dir)  # unchanged trials leave summary.csv as it was
        print(f"sweep summary: {path} ({len(rows)} trials)")
    elif not args.no_analyze and analyzable(args.dir):
        run_analyze(args.dir, progress=not args.quiet, figures=False)
    print(f"report: {write_report(args.dir)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("analyze", help="progress measures of a modular-arithmetic run, every checkpoint")
    p.add_argument("dir", help="run folder")
    p.add_argument("--key-freqs", type=_freq_list, metavar="K1,K2,...", help="use these key frequencies")
    p.add_argument(
        "--per-checkpoint",
        action="store_true",
        help="restricted/excluded loss with each checkpoint's own key freqs",
    )
    p.add_argument("--threshold", type=float, default=0.85, help="neuron fraction explained to count (0.85)")
    p.add_argument(
        "--min-share", type=float, default=0.02, help="share of neurons for a key frequency (0.02)"
    )
    p.add_argument("--recompute", action="store_true", help="ignore cached tables")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a busy CPU)")
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
