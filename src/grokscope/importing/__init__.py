"""Runs trained elsewhere: `import_run(format, src, out)` turns another code's checkpoints into a
grokscope run folder (config.toml with `[meta] imported`, the split, checkpoints, metrics.jsonl),
which every study then reads like a native run.

One module per source layout, each registered in `grokscope.registry.IMPORT_FORMATS`:
`progress_measures` (the original progress-measures code's `.pth`), `tl` (a TransformerLens
`HookedTransformer` state dict), `native` (grokscope's own names, registered as `safetensors`).
`source` reads files safely and finds checkpoints; `core` builds the folder. See docs/import.md.
"""

from __future__ import annotations

import importlib

# the formats register themselves on import (registry.IMPORT_FORMATS loads this package)
from grokscope.importing.native import NATIVE
from grokscope.importing.progress_measures import PROGRESS_MEASURES
from grokscope.importing.tl import TL

_EXPORTS = {
    "ImportOptions": "options",
    "ImportResult": "core",
    "import_run": "core",
    "read_source_file": "source",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"grokscope.importing.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'grokscope.importing' has no attribute {name!r}")


__all__ = [*_EXPORTS, "NATIVE", "PROGRESS_MEASURES", "TL"]
