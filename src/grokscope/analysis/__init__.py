"""Analysis of run folders: the progress measures of Nanda et al. (2023) for modular arithmetic.

`analyze_run(dir)` writes the per-checkpoint tables; `grokscope.analysis.progress` has one function
per measure for a model in memory; `detect_phases` locates memorization / circuit formation / cleanup.
"""

from grokscope.analysis.key_frequencies import KeyFrequencies, key_frequencies, model_key_frequencies
from grokscope.analysis.phases import Phases, detect_phases
from grokscope.analysis.run_analysis import RunAnalysis, analyze_run, load_analysis

__all__ = [
    "KeyFrequencies",
    "Phases",
    "RunAnalysis",
    "analyze_run",
    "detect_phases",
    "key_frequencies",
    "load_analysis",
    "model_key_frequencies",
]
