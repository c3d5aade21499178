"""Options of the analysis verbs: plain dataclasses (no torch), so the CLI builds its flags from them
without loading the analysis code. Defaults live here once."""

from __future__ import annotations

from dataclasses import dataclass

#: a neuron counts as explained when its best frequency holds this fraction of its variance
THRESHOLD = 0.85
#: a frequency is key when it holds at least this share of the neurons
MIN_SHARE = 0.02
#: the `carried` rule also counts neurons whose best frequency explains at least this fraction...
CARRY_FLOOR = 0.5
#: ...when at least this share of all the neurons have that best frequency so
CARRY_SHARE = 0.05
#: how key frequencies are chosen (analysis/key_frequencies.py; docs/key_frequencies.md)
KEY_RULES = ("carried", "threshold", "original")


@dataclass
class AnalyzeOptions:
    """How `analyze_run` computes the progress tables (`grokscope analyze` flags)."""

    key_freqs: list[int] | None = None
    """Use these key frequencies instead of the ones detected on the final checkpoint."""
    per_checkpoint: bool = False
    """Restricted/excluded loss with the key frequencies detected at each checkpoint."""
    threshold: float = THRESHOLD
    """Fraction of a neuron's variance its best frequency must explain for the neuron to count."""
    min_share: float = MIN_SHARE
    """Share of the neurons a frequency must hold to be a key frequency."""
    key_rule: str = "carried"
    """`carried` (threshold rule, plus frequencies carried by many neurons explained below the
    threshold), `threshold` (grokscope's earlier rule) or `original` (the original code's: every
    neuron's best frequency counts)."""
    carry_floor: float = CARRY_FLOOR
    """`carried`: the fraction explained above which a neuron still carries its best frequency."""
    carry_share: float = CARRY_SHARE
    """`carried`: the share of the neurons that must carry a frequency below the threshold."""
    chunk: int = 1
    """Checkpoints computed as one batch (1 measured fastest on a 2-core CPU; larger suits a GPU)."""
    recompute: bool = False
    """Ignore the cached tables and compute every checkpoint again."""
    threads: int | None = 1
    """Torch threads while analysing (1: the work is memory-bound, extra threads slow a busy CPU)."""
    device: str = "cpu"
    """Where the model runs: cpu (the default, and the tested path), auto, cuda, cuda:N or mps."""
