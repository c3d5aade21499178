"""Options of `grokscope import`: a plain dataclass (no torch), so the CLI builds its flags from it."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("auto", "original", "config")


@dataclass
class ImportOptions:
    """How `import_run` reads the source (`grokscope import` flags)."""

    step: int | None = None
    """The training step of a single source file (a folder's files take theirs from their names)."""
    split: str = "auto"
    """`original`: the original code's split rule (random.seed(seed); random.shuffle of the p² pairs);
    `config`: the split the grokscope config draws; `auto`: the indices saved in the file, else
    `original` for progress-measures, else `config`."""
    source_config: str | None = None
    """A JSON file with the source code's own config (the original Config fields, or a TransformerLens
    HookedTransformerConfig); a plain `config` dict inside the file is read the same way."""
    curve_every: int | None = None
    """Steps between the saved test-loss points (default: inferred from the two curves' lengths);
    when both curves have one length, the steps between the points of both."""
    overwrite: bool = False
    """Replace an existing grokscope run folder at --out."""
