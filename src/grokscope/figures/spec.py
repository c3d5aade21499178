"""A registered figure: what it shows, which files of a run (or sweep) folder it is made from, and
where its PNG goes; made again only when the PNG is missing or older than its inputs.

A spec with `keys` stands for one figure per key (one per probed label, one per positional encoding,
...): `{key}` in its inputs and output is replaced by each key in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grokscope.figures.render import save_png
from grokscope.registry import FIGURES

#: the studies, in the order the report shows them
STUDIES = ("progress", "interp", "interventions", "addition", "lengths", "sweeps")


@dataclass(frozen=True)
class FigureSpec:
    name: str  # the registry name
    title: str
    explanation: str  # one line (or a short paragraph) for the report and the notebook
    study: str  # one of STUDIES
    inputs: tuple[str, ...]  # files it is made from, relative to the folder; may contain {key}
    output: str  # its PNG, relative to the folder; may contain {key}
    make: Callable  # make(folder: Path, key: str | None) -> Figure, or None where it does not apply
    keys: Callable[[Path], list[str]] | None = None  # folder -> the keys present (None: one figure)

    def instances(self, folder: str | Path) -> list[FigureInstance]:
        """The figures of this spec that `folder` has every input file for."""
        folder = Path(folder)
        keys = self.keys(folder) if self.keys is not None else [None]
        out = []
        for key in keys:
            inputs = tuple(folder / (p.format(key=key) if key is not None else p) for p in self.inputs)
            if all(p.is_file() for p in inputs):
                output = folder / (self.output.format(key=key) if key is not None else self.output)
                out.append(FigureInstance(self, folder, key, inputs, output))
        return out


@dataclass(frozen=True)
class FigureInstance:
    spec: FigureSpec
    folder: Path
    key: str | None
    inputs: tuple[Path, ...]
    output: Path

    @property
    def title(self) -> str:
        return self.spec.title + (f" ({self.key})" if self.key is not None else "")

    def stale(self) -> bool:
        """Whether the PNG is missing or older than one of its inputs."""
        if not self.output.is_file():
            return True
        made = self.output.stat().st_mtime_ns
        return any(p.stat().st_mtime_ns > made for p in self.inputs)

    def render(self, force: bool = False) -> Path | None:
        """The PNG, made (again) if stale or `force`; None where the figure does not apply."""
        if not force and not self.stale():
            return self.output
        fig = self.spec.make(self.folder, self.key)
        if fig is None:
            return None
        return save_png(fig, self.output)


def register_figure(spec: FigureSpec) -> FigureSpec:
    if spec.study not in STUDIES:
        raise ValueError(f"figure {spec.name!r}: unknown study {spec.study!r}; known: {', '.join(STUDIES)}")
    FIGURES.register(spec.name, spec)
    return spec


def figure_specs(study: str | None = None) -> list[FigureSpec]:
    """The registered figures (of one study), in registration order."""
    return [s for _, s in FIGURES.items() if study is None or s.study == study]


@dataclass
class WrittenFigure:
    name: str
    path: Path
    title: str
    explanation: str


def write_figures(folder: str | Path, study: str | None = None, force: bool = False) -> list[WrittenFigure]:
    """Every registered figure (of `study`) whose inputs `folder` has: its PNG, rendered only where
    missing or older than its inputs (always with `force`)."""
    written = []
    for spec in figure_specs(study):
        for inst in spec.instances(folder):
            path = inst.render(force)
            if path is not None:
                written.append(WrittenFigure(spec.name, path, inst.title, spec.explanation))
    return written


def render_figure(name: str, folder: str | Path, key: str | None = None, force: bool = True) -> Path | None:
    """Render one registered figure of `folder` (e.g. right after a verb wrote its inputs)."""
    spec = FIGURES.get(name)
    for inst in spec.instances(folder):
        if inst.key == key:
            return inst.render(force)
    return None


def glob_keys(pattern: str, exclude_suffix: str | None = None) -> Callable[[Path], list[str]]:
    """keys(folder): the part `*` matches in `pattern`, over the files present, sorted."""
    head, tail = pattern.split("*")

    def keys(folder: Path) -> list[str]:
        out = []
        for p in sorted(folder.glob(pattern)):
            rel = p.relative_to(folder).as_posix()
            key = rel[len(head) : len(rel) - len(tail)] if tail else rel[len(head) :]
            if exclude_suffix is None or not key.endswith(exclude_suffix):
                out.append(key)
        return out

    return keys
