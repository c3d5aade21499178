"""`grokscope sweep` and `grokscope summarize`: verbs for running and reading many trials at once."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_sweep(args: argparse.Namespace) -> int:
    from grokscope.sweep.runner import run_sweep
    from grokscope.sweep.spec import load_spec

    if args.list:
        return _list_presets()
    if not args.spec:
        from grokscope.errors import GrokscopeError

        raise GrokscopeError(
            "give a sweep spec: a preset name (see `grokscope sweep --list`) or a .toml file"
        )
    seeds = None
    if args.seeds is not None:
        seeds = args.seeds
    extra = [*args.set, *([f"train.device={args.device}"] if args.device else [])]
    spec = load_spec(args.spec, extra_set=extra, base=args.base, seeds=seeds)
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / spec.name
    if args.dry_run:
        for trial in spec.trials:
            print(f"{trial.name}: {' '.join(trial.override_args()) or '(base config)'}")
        print(f"{len(spec.trials)} trials -> {out}")
        return 0
    result = run_sweep(
        spec,
        out,
        workers=args.workers,
        engine=args.engine,
        address=args.address,
        progress=not args.quiet,
        pack=not args.no_pack,
    )
    done, failed = result.names("done"), result.names("failed")
    print(
        f"{out}: {len(done)}/{len(spec.trials)} trials finished ({len(result.skipped)} already were), "
        f"{len(failed)} failed, {result.wall_s:.1f} s; table: {out / 'trials.csv'}"
    )
    for name in failed:
        print(
            f"  failed: {name}: {result.rows[name].get('error', '')} (log: {out / 'logs' / (name + '.log')})"
        )
    return 1 if failed else 0


def _list_presets() -> int:
    from grokscope.sweep.spec import sweep_preset_names, sweep_preset_summary

    names = sweep_preset_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {sweep_preset_summary(name)}")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from grokscope.errors import GrokscopeError
    from grokscope.figures.sweeps import plot_summary, slug
    from grokscope.sweep.folder import SweepFolder
    from grokscope.sweep.summarize import write_summary

    folder = SweepFolder(args.sweep_dir)
    path, rows = write_summary(folder.path, args.out)
    print(f"wrote {path} ({len(rows)} trials)")
    x = args.x
    if x is None:
        swept = folder.manifest().get("swept_keys", [])
        if len(swept) == 1:
            x = swept[0]
        elif args.y or args.plot:
            raise GrokscopeError(f"choose the x axis with --x (one of: {', '.join(swept) or 'seed'})")
    if x is not None:
        y = args.y or "grok_step"
        plot = args.plot or folder.path / f"{slug(y)}_vs_{slug(x)}.png"
        plot_summary(rows, x, y, plot, by=args.by, title=folder.manifest().get("name", ""), log_y=args.log_y)
        print(f"wrote {plot}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a sweep (grid / list of overrides x seeds) in parallel; re-run to resume",
        description="Run every trial of a sweep spec; finished trials are skipped, stopped ones resume.",
    )
    p.add_argument("spec", nargs="?", metavar="SPEC", help="a sweep preset name or a sweep spec .toml file")
    p.add_argument("--out", help="sweep folder (default runs/sweeps/<name>)")
    p.add_argument("--workers", type=int, help="trials at once (default: the CPU cores; ray: cluster CPUs)")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address (ray engine; default: start a local one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every trial")
    p.add_argument("--base", help="replace the spec's base preset or config file")
    p.add_argument("--device", help="train.device of every trial: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seeds", type=int, help="replace the spec's seeds with 0..N-1")
    p.add_argument("--dry-run", action="store_true", help="list the trials and stop")
    p.add_argument(
        "--no-pack",
        action="store_true",
        help="one process per trial (default, local engine: trials differing only in seed, lr, weight "
        "decay, grokfast, frac_train, ... are trained stacked, one process per worker; docs/stacked.md)",
    )
    p.add_argument("--list", action="store_true", help="list the sweep presets")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser(
        "summarize",
        help="one CSV of a sweep's trials and headline figures, plus a plot",
        description="Write SWEEP_DIR/summary.csv and a plot of --y against --x with spread over seeds.",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--out", help="CSV path (default SWEEP_DIR/summary.csv)")
    p.add_argument("--x", help="override on the x axis, e.g. task.frac_train (default: the only swept key)")
    p.add_argument("--y", help="figure on the y axis (default grok_step), e.g. final_test_loss")
    p.add_argument("--by", help="one line per value of this override")
    p.add_argument("--plot", help="PNG path (default SWEEP_DIR/<y>_vs_<x>.png)")
    p.add_argument("--log-y", action="store_true", help="log scale on the y axis")
    p.set_defaults(handler=cmd_summarize)
