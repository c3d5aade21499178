"""`grokscope lengths`: train each positional encoding x seed on short problems, read exact match
on longer ones, write the table and figures; `--suite zhou2023` does it for every task of a suite
and writes one table (tasks x encodings)."""

from __future__ import annotations

import argparse
from pathlib import Path

from grokscope.errors import GrokscopeError


def cmd_lengths(args: argparse.Namespace) -> int:
    from grokscope.figures import write_figures
    from grokscope.lengths.study import StudySpec, default_ranges, parse_range, parse_seeds, run_study

    if args.device:
        args.set = [*args.set, f"train.device={args.device}"]
    if args.suite:
        return _suite(args)
    if not args.config:
        raise GrokscopeError("grokscope lengths needs a PRESET|CONFIG_FILE, or --suite zhou2023")
    train, test = default_ranges(args.config, args.set)
    spec = StudySpec(
        config=args.config,
        pes=[p.strip() for p in args.pe.split(",") if p.strip()],
        seeds=parse_seeds(args.seeds),
        train_digits=parse_range(args.train_lengths, "--train-lengths") if args.train_lengths else train,
        test_digits=parse_range(args.test_lengths, "--test-lengths") if args.test_lengths else test,
        overrides=args.set,
        n_per_cell=args.n_per_cell,
    )
    out = Path(args.out) if args.out else Path("runs") / "lengths"
    print(run_study(spec, out, workers=args.workers, progress=not args.quiet), end="")
    write_figures(out, "lengths", force=True)
    print(
        f"tables and figures: {out}/lengths.csv, lengths_summary.csv, lengths.md, heatmap_*.png, lengths_by_length.png"
    )
    return 0


def _suite(args: argparse.Namespace) -> int:
    from grokscope.figures import write_figures
    from grokscope.lengths.study import parse_seeds
    from grokscope.lengths.suite import SuiteSpec, run_suite

    if args.config or args.train_lengths or args.test_lengths:
        raise GrokscopeError(
            "--suite sets each task's config and lengths itself; drop the config and --*-lengths"
        )
    split = lambda text: [p.strip() for p in text.split(",") if p.strip()] if text else None  # noqa: E731
    spec = SuiteSpec(
        suite=args.suite,
        seeds=parse_seeds(args.seeds),
        overrides=args.set,
        tasks=split(args.tasks),
        pes=split(args.pe) if args.pe_given else None,
        n_per_cell=args.n_per_cell,
    )
    out = Path(args.out) if args.out else Path("runs") / f"suite_{args.suite}"
    md = run_suite(spec, out, workers=args.workers, progress=not args.quiet)
    for task in spec.selected():
        if (out / task.name / "lengths_summary.csv").is_file():
            write_figures(out / task.name, "lengths", force=True)
    write_figures(out, "lengths", force=True)
    print(md, end="")
    print(f"tables and figure: {out}/suite.csv, suite.md, suite.png; each task's study under {out}/<task>/")
    return 0


class _PeAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        namespace.pe = values
        namespace.pe_given = True


def register(sub) -> None:
    p = sub.add_parser(
        "lengths",
        help="length generalization: train positional encodings on short problems, test on longer ones",
        description=__doc__,
    )
    p.add_argument(
        "config",
        nargs="?",
        metavar="PRESET|CONFIG_FILE",
        help="an addition or sequence-task config, e.g. addition_lengths or rasp_count",
    )
    p.add_argument("--suite", help="run every task of a suite instead (zhou2023) and write one table")
    p.add_argument("--tasks", help="with --suite: only these tasks, comma-separated (e.g. count,parity)")
    p.add_argument(
        "--pe",
        default="learned,none,rope,alibi,abacus",
        action=_PeAction,
        help="model.pos values, comma-separated (with --suite: a subset of each task's encodings)",
    )
    p.set_defaults(pe_given=False)
    p.add_argument("--seeds", default="3", help="a count (3 -> 0,1,2), a list (0,4,7) or one seed (5,)")
    p.add_argument(
        "--train-lengths",
        "--train-digits",
        dest="train_lengths",
        help="lengths trained on (operand digits for addition; default 1-5, or the preset's min_len-max_len)",
    )
    p.add_argument(
        "--test-lengths",
        "--test-digits",
        dest="test_lengths",
        help="lengths of the test grid (default 1-12 digits, or 1 to twice the preset's max_len)",
    )
    p.add_argument(
        "--n-per-cell", type=int, default=100, help="problems per length (per (len a, len b) cell)"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting of every run"
    )
    p.add_argument("--out", help="study folder (default runs/lengths); re-run the same command to resume")
    p.add_argument("--workers", type=int, help="runs in parallel, one thread each (default: all cores)")
    p.add_argument(
        "--device",
        help="train.device of every run: auto, cpu, cuda, cuda:N or mps (the grids are read on the CPU)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_lengths)
