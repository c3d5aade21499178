"""Command-line flags made from a library options dataclass, so that every default and every help
text lives once, on the dataclass field (as tuned-lens keeps them): the field's annotation gives the
flag's type, the string literal under the field is its help.

```python
@dataclass
class AnalyzeOptions:
    threshold: float = 0.85
    \"\"\"Fraction of a neuron's variance a frequency must explain for it to count.\"\"\"
```
becomes `--threshold FLOAT` (default 0.85); a `bool` field defaulting to False becomes `--flag`,
one defaulting to True becomes `--no-flag`; `list[int]` reads `1,2,3`; `list[str]` is a flag to
repeat (`--hook A --hook B`); `field(metadata={"choices": ...})` limits the values.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from typing import Any

#: the help of every `--device` flag a verb adds by hand (the options dataclasses carry their own)
DEVICE_HELP = "where the model runs: auto, cpu, cuda, cuda:N or mps (default: %(default)s)"


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: the string literal written under it} for a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _comma_list(item: type):
    def parse(text: str) -> list:
        try:
            return [item(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {item.__name__} values, got {text!r}"
            ) from None

    parse.__name__ = f"{item.__name__} list"
    return parse


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def add_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the options dataclass `cls` (fields in `skip` are left to the caller)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        doc = docs.get(f.name, "")
        hint = _strip_optional(hints[f.name])
        if hint is bool:
            if default:
                parser.add_argument(
                    "--no-" + f.name.replace("_", "-"),
                    dest=f.name,
                    action="store_false",
                    help=f"turn off: {doc}",
                )
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", help=doc)
            continue
        shown = "" if default in (None, [], "") else f" (default {default})"
        if hint == list[str]:  # repeat the flag: --hook A --hook B
            parser.add_argument(
                flag, dest=f.name, action="append", default=None, metavar=f.name.upper(), help=doc
            )
            continue
        if typing.get_origin(hint) is list:
            (item,) = typing.get_args(hint)
            kind, metavar = _comma_list(item), f"{item.__name__.upper()},..."
        else:
            kind, metavar = hint, hint.__name__.upper()
        choices = f.metadata.get("choices")
        parser.add_argument(
            flag, dest=f.name, type=kind, default=default, metavar=metavar, choices=choices, help=doc + shown
        )


def options_from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """The options dataclass filled from parsed flags (and `given` values for skipped fields)."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if hasattr(args, f.name) and getattr(args, f.name) is not None
    }
    return cls(**{**values, **given})
