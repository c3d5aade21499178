"""`grokscope <verb>`: a thin shell over the Python API. User errors print one line, no traceback.

One module per family of verbs (train, analysis, evaluation, interp, interventions, lengths, sweep,
imports); each handler parses, calls one library function with an options dataclass, saves and prints a summary. The
library never imports this package."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

from grokscope.errors import GrokscopeError

Handler = Callable[[argparse.Namespace], int | None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grokscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    for register in _verb_families():
        register(sub)
    return parser


def _verb_families() -> list[Callable]:
    """One module per family of verbs; each `register(sub)` adds its parsers."""
    from grokscope.cli import analysis, evaluation, imports, interp, interventions, lengths, sweep, train

    return [
        train.register,
        analysis.register,
        sweep.register,
        interp.register,
        interventions.register,
        evaluation.register,
        lengths.register,
        imports.register,
    ]


_shown: set[str] = set()


def _show_note(message, category, filename, lineno, file=None, line=None) -> None:
    """Notes about a run folder (`run.RunNote`) print as one line; other warnings as Python would."""
    from grokscope.run import RunNote

    if issubclass(category, RunNote):
        if str(message) not in _shown:  # several readers of one folder: say it once
            _shown.add(str(message))
            print(f"grokscope: note: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_note
    try:
        return args.handler(args) or 0
    except GrokscopeError as e:
        from grokscope.train import Interrupted

        print(f"grokscope: {e}", file=sys.stderr)
        return 130 if isinstance(e, Interrupted) else 2
    except KeyboardInterrupt:
        print("grokscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
