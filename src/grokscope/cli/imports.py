"""Verb `import`: a run folder from checkpoints trained by other code (docs/import.md)."""

from __future__ import annotations

import argparse


def cmd_import(args: argparse.Namespace) -> int:
    from grokscope.cli.options import options_from_args
    from grokscope.importing import ImportOptions, import_run

    result = import_run(
        args.format, args.src, args.out, args.config, args.set, options_from_args(ImportOptions, args)
    )
    f = result.final
    numbers = ", ".join(
        f"{k} {f[k]:.4g}" for k in ("train_loss", "test_loss", "train_acc", "test_acc") if k in f
    )
    steps = result.steps
    print(
        f"{result.run.path}: imported {len(steps)} checkpoint{'s' if len(steps) != 1 else ''} "
        f"(step{'s' if len(steps) != 1 else ''} {steps[0]}{f'–{steps[-1]}' if len(steps) > 1 else ''}) "
        f"from {args.format}; split from {result.split}; {result.n_metrics} metrics rows; last checkpoint: {numbers}"
    )
    return 0


def register(sub) -> None:
    from grokscope.cli.options import add_options
    from grokscope.importing.options import ImportOptions

    p = sub.add_parser(
        "import",
        help="make a run folder from checkpoints trained elsewhere (progress-measures, tl, safetensors)",
    )
    p.add_argument("format", metavar="FORMAT", help="progress-measures, tl or safetensors")
    p.add_argument("src", metavar="SRC", help="a checkpoint file, a folder of them, or a quoted glob")
    p.add_argument("--out", required=True, help="the new run folder")
    p.add_argument(
        "--config",
        metavar="PRESET|CONFIG_FILE",
        help="the task and settings (default: modular, p from the weights)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    add_options(p, ImportOptions)
    p.set_defaults(handler=cmd_import)
