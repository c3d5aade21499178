"""`grokscope eval DIR [DIR ...]` (accuracy by operand length) and `grokscope data` (examples as JSONL)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from grokscope.cli.options import DEVICE_HELP
from grokscope.errors import GrokscopeError


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="addition accuracy per (len a, len b) cell and carry class -> DIR/analysis/accuracy_by_length.*",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders (several: e.g. one per seed)")
    p.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    p.add_argument(
        "--out", help="folder for the across-runs table and plot (default: the runs' common parent)"
    )
    p.add_argument(
        "--digits",
        metavar="LO-HI",
        help="instead: greedy exact match on a (len a, len b) grid of these operand lengths, past the "
        "training range too -> DIR/analysis/exact_by_length_LO-HI.csv",
    )
    p.add_argument(
        "--n-per-cell", type=int, default=100, help="problems per cell with --digits (default 100)"
    )
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser(
        "data", help="write N examples exactly as they enter the model, one JSON object per line"
    )
    p.add_argument("config", metavar="PRESET|CONFIG_FILE")
    p.add_argument("--n", type=int, default=20, help="how many examples (default 20)")
    p.add_argument("--out", required=True, metavar="FILE.jsonl")
    p.add_argument(
        "--split", default="train", help="train (default), test, or another eval set (S0..S5, edge)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.set_defaults(handler=cmd_data)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.digits:
        return cmd_eval_digits(args)
    from grokscope.devices import resolve_device
    from grokscope.evaluation.by_length import evaluate_run, rows_to_csv
    from grokscope.figures import render_figure
    from grokscope.files import atomic_write_text
    from grokscope.run import Run

    tables: dict[str, list[dict]] = {}
    for d in args.dirs:
        run = Run.open(d)
        run.device = resolve_device(args.device)
        rows = evaluate_run(run, args.step)
        render_figure("accuracy_by_length", run.path)
        render_figure("loss_by_position", run.path)  # where metrics have per-position losses
        tables[str(run.path)] = rows
        overall = {r["split"]: r for r in rows if r["group"] == "all"}
        summary = ", ".join(
            f"{s} exact {overall[s]['exact']:.4f} (generated {overall[s]['gen_exact']:.4f}, n={overall[s]['n']})"
            for s in ("train", "test")
            if s in overall
        )
        print(f"{run.path}: {summary} -> {run.analysis_dir / 'accuracy_by_length.csv'}")
    if len(tables) > 1:
        out = (
            Path(args.out)
            if args.out
            else Path(os.path.commonpath([str(Path(d).resolve()) for d in args.dirs]))
        )
        out.mkdir(parents=True, exist_ok=True)
        parts = [rows_to_csv(rows, {"run": name}) for name, rows in tables.items()]
        text = parts[0] + "".join(part.split("\n", 1)[1] for part in parts[1:])  # one header
        atomic_write_text(out / "accuracy_by_length_runs.csv", text)
        render_figure("accuracy_by_length_runs", out)
        print(
            f"{len(tables)} runs -> {out / 'accuracy_by_length_runs.csv'}, {out / 'accuracy_by_length_runs.png'}"
        )
    return 0


def cmd_eval_digits(args: argparse.Namespace) -> int:
    """Each run's exact match on a grid of operand lengths; prints the diagonal len a = len b (a
    sequence task: its exact match per length)."""
    from grokscope.devices import resolve_device
    from grokscope.files import atomic_write_text
    from grokscope.lengths.grid import length_grid
    from grokscope.lengths.study import GRID_SEED, parse_range, untrained_abacus_note
    from grokscope.run import Run

    lo, hi = parse_range(args.digits, "--digits")
    lengths = list(range(lo, hi + 1))
    print("| run (len a = len b) | " + " | ".join(str(n) for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    notes = {}
    for d in args.dirs:
        run = Run.open(d)
        run.device = resolve_device(args.device)
        config = run.config
        model = run.model(args.step)
        grid = length_grid(model, config.task, lengths, n=args.n_per_cell, seed=GRID_SEED)
        if grid.ndim == 1:  # a sequence task: one accuracy per length
            rows = ["length,n,exact"] + [
                f"{a},{args.n_per_cell},{grid[i]:.4f}" for i, a in enumerate(lengths)
            ]
            atomic_write_text(
                run.subdir("analysis") / f"exact_by_length_{lo}-{hi}.csv", "\n".join(rows) + "\n"
            )
            print(f"| {run.path} | " + " | ".join(f"{v:.2f}" for v in grid) + " |")
            continue
        rows = ["len_a,len_b,n,exact"] + [
            f"{a},{b},{args.n_per_cell},{grid[i, j]:.4f}"
            for i, a in enumerate(lengths)
            for j, b in enumerate(lengths)
        ]
        atomic_write_text(run.subdir("analysis") / f"exact_by_length_{lo}-{hi}.csv", "\n".join(rows) + "\n")
        print(f"| {run.path} | " + " | ".join(f"{grid[i, i]:.2f}" for i in range(len(lengths))) + " |")
        m = config.model
        note = untrained_abacus_note([m.pos], config.task.max_digits, hi, m.abacus_max_offset)
        if note:
            notes.setdefault(note, []).append(str(run.path))
    for note, paths in notes.items():
        print(f"\n{', '.join(paths)}: {note}")
    print(f"\ngrids: DIR/analysis/exact_by_length_{lo}-{hi}.csv")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from grokscope.config import apply_overrides, from_dict
    from grokscope.evaluation.examples import example_records, examples
    from grokscope.files import atomic_write_text
    from grokscope.presets import load_preset_or_file
    from grokscope.tasks import build_task

    if args.n < 1:
        raise GrokscopeError("--n must be >= 1")
    config = from_dict(apply_overrides(load_preset_or_file(args.config), args.set))
    task = build_task(config.task, config.seed)
    batch = examples(task, args.split, args.n, config.seed)
    lines = [json.dumps(obj) for obj in example_records(task, batch)]
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        raise GrokscopeError(f"no such folder: {out.parent}")
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} {args.split} examples to {out}")
    return 0
