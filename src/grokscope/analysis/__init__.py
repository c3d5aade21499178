"""Analysis of run folders: the progress measures of Nanda et al. (2023) for modular arithmetic.

`analyze_run(dir)` writes the per-checkpoint tables; `grokscope.analysis.progress` has one function
per measure for a model in memory; `detect_phases` locates memorization / circuit formation / cleanup.
Names are imported lazily so that `grokscope --help` does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "KeyFrequencies": "key_frequencies",
    "key_frequencies": "key_frequencies",
    "model_key_frequencies": "key_frequencies",
    "Phases": "phases",
    "detect_phases": "phases",
    "run_phases": "phases",
    "AnalyzeOptions": "options",
    "RunAnalysis": "run_analysis",
    "applies_to": "run_analysis",
    "analyze_run": "run_analysis",
    "load_analysis": "run_analysis",
    "load_phases": "run_analysis",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"grokscope.analysis.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'grokscope.analysis' has no attribute {name!r}")


__all__ = list(_EXPORTS)
