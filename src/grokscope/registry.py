"""Named registries for the things users pick by name: tasks, positional encodings, figures, report
sections, import formats. A leaf module (it imports nothing of grokscope's but errors), so any layer may register
into it without an import cycle, as SAELens keeps its registry.

A registry knows which package holds its built-in entries and imports it on first lookup, so
`config.py` can resolve `task.kind = "addition"` without importing `grokscope.tasks` itself.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from grokscope.errors import GrokscopeError

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> entry, in registration order; lookups of unknown names end in a clear error."""

    def __init__(self, what: str, builtins: tuple[str, ...] = ()):
        self.what = what  # how a user writes the choice, e.g. "task.kind"
        self._builtins = builtins
        self._loaded = not builtins
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """`REG.register("x", thing)`, or `@REG.register("x")` above a class or function."""
        if entry is None:
            return lambda e: self.register(name, e)
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)

    def get(self, name: object) -> T:
        self._load()
        if not isinstance(name, str) or name not in self._entries:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GrokscopeError(
                f"bad config: unknown {self.what} {name!r}{hint}; known: {', '.join(self._entries)}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())


#: task.kind -> the task class (its `config_class` attribute is the config dataclass)
TASKS: Registry = Registry("task.kind", builtins=("grokscope.tasks",))
#: model.pos part -> the PositionalEncoding class (combinations `abacus+X` are built from parts)
POSITIONAL: Registry = Registry("model.pos", builtins=("grokscope.model.positional",))
#: figure name -> FigureSpec (grokscope.figures.spec): study, input files, output PNG; the report walks these
FIGURES: Registry = Registry("figure", builtins=("grokscope.figures",))
#: report section name -> ReportSection (grokscope.report): a builder for run or sweep folders
REPORT_SECTIONS: Registry = Registry("report section", builtins=("grokscope.report",))
#: `grokscope import` format -> ImportFormat (grokscope.importing.format): how another code's files read
IMPORT_FORMATS: Registry = Registry("import format", builtins=("grokscope.importing",))
