"""`grokscope lengths`: train each positional encoding x seed on short operands, read exact match
on longer ones, write the table and figures."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_lengths(args: argparse.Namespace) -> int:
    from grokscope.figures import write_figures
    from grokscope.lengths.study import StudySpec, parse_range, parse_seeds, run_study

    spec = StudySpec(
        config=args.config,
        pes=[p.strip() for p in args.pe.split(",") if p.strip()],
        seeds=parse_seeds(args.seeds),
        train_digits=parse_range(args.train_digits, "--train-digits"),
        test_digits=parse_range(args.test_digits, "--test-digits"),
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


def register(sub) -> None:
    p = sub.add_parser(
        "lengths",
        help="length generalization: train positional encodings on short additions, test on longer ones",
        description=__doc__,
    )
    p.add_argument("config", metavar="PRESET|CONFIG_FILE", help="an addition config, e.g. addition_lengths")
    p.add_argument("--pe", default="learned,none,rope,alibi,abacus", help="model.pos values, comma-separated")
    p.add_argument("--seeds", default="3", help="a count (3 -> 0,1,2), a list (0,4,7) or one seed (5,)")
    p.add_argument("--train-digits", default="1-5", help="operand lengths trained on (default 1-5)")
    p.add_argument("--test-digits", default="1-12", help="operand lengths of the test grid (default 1-12)")
    p.add_argument("--n-per-cell", type=int, default=100, help="problems per (len a, len b) cell")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting of every run"
    )
    p.add_argument("--out", help="study folder (default runs/lengths); re-run the same command to resume")
    p.add_argument("--workers", type=int, help="runs in parallel, one thread each (default: all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_lengths)
