"""Verbs `train`, `resume`, `presets` and `demo`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _config_from_args(spec: str, overrides: list[str], steps: int | None, device: str | None = None):
    from grokscope.config import apply_overrides, from_dict
    from grokscope.presets import load_preset_or_file

    data = load_preset_or_file(spec)
    if steps is not None:
        overrides = [*overrides, f"train.steps={steps}"]
    if device is not None:
        overrides = [*overrides, f"train.device={device}"]
    return from_dict(apply_overrides(data, overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from grokscope.train import train

    config = _config_from_args(args.config, args.set, args.steps, args.device)
    if args.seeds is not None:
        from grokscope.train.stacked import parse_seeds, seed_configs, seed_folders, train_stacked

        configs = seed_configs(config, parse_seeds(args.seeds))
        results = train_stacked(
            configs,
            seed_folders(configs, args.out),
            args.overwrite,
            not args.quiet,
            args.stack_mode,
        )
        for result in results:
            _print_result(result)
        return 0
    out = Path(args.out) if args.out else Path("runs") / config.name
    result = train(config, out, overwrite=args.overwrite, progress=not args.quiet)
    _print_result(result)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from grokscope.train import resume

    if len(args.dir) > 1:
        from grokscope.train.stacked import resume_stacked

        results = resume_stacked(
            args.dir, args.steps, not args.quiet, args.accept_config_change, args.stack_mode, args.device
        )
        for result in results:
            _print_result(result)
        return 0
    result = resume(
        args.dir[0],
        steps=args.steps,
        progress=not args.quiet,
        accept_config_change=args.accept_config_change,
        device=args.device,
    )
    _print_result(result)
    return 0


def _print_result(result) -> None:
    row = result.last_metrics
    summary = ", ".join(f"{k} {row[k]:.4g}" for k in ("train_loss", "test_loss", "test_acc") if k in row)
    print(f"{result.run.path}: step {result.step} ({result.reason}); {summary}")


def cmd_presets(args: argparse.Namespace) -> int:
    from grokscope.presets import preset_names, preset_summary

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {preset_summary(name)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from grokscope.demo import run_demo

    run_demo(Path(args.out), preset=args.preset, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _stack_mode(p) -> None:
    p.add_argument(
        "--stack-mode",
        choices=("auto", "vmap", "loop"),
        default="auto",
        help="several models: one vmapped forward (vmap), one after another (loop), or auto "
        "(loop at full batch, vmap for minibatches; docs/stacked.md)",
    )


def register(sub) -> None:
    p = sub.add_parser("train", help="train a preset or a TOML config into a run folder")
    p.add_argument("config", metavar="PRESET|CONFIG_FILE")
    p.add_argument("--out", help="run folder (default runs/<name>); with --seeds, the parent folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--steps", type=int, help="total training steps")
    p.add_argument("--device", help="train.device: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--seeds",
        metavar="0-7|0,3,5",
        help="train one model per seed, stacked in this process, into <out or runs>/<name>-s<seed>",
    )
    _stack_mode(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("resume", help="continue a stopped run from its saved state")
    p.add_argument("dir", nargs="+", help="a run folder; several are continued stacked in one process")
    p.add_argument("--steps", type=int, help="continue to this many total steps")
    p.add_argument(
        "--device",
        help="continue on this device (default: the config's train.device); another device than the "
        "state was saved on works, but is not bit-exact",
    )
    p.add_argument(
        "--accept-config-change",
        action="store_true",
        help="go on although config.toml was edited since the state was saved (recorded in the folder)",
    )
    p.add_argument("--quiet", action="store_true")
    _stack_mode(p)
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("presets", help="list the named configurations")
    p.set_defaults(handler=cmd_presets)

    p = sub.add_parser(
        "demo", help="train the mainline run until it groks (99%% test accuracy), then write its report"
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--preset", default="mainline")
    p.add_argument("--overwrite", action="store_true", help="start again even if the folder exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_demo)
