"""The three phases of grokking (Nanda et al. 2023, §5), located from the progress table.

The rule, on the per-checkpoint train accuracy and test loss (log10 scale):

1. **Memorization** runs from step 0 to the first checkpoint where train accuracy >= 99%.
2. **Circuit formation** runs from there to the first checkpoint, after the highest test loss seen
   since memorization ended, where log10(test loss) has come down 10% of the way from that peak to
   its final minimum (the minimum over the last 10% of checkpoints). Test loss is still near its
   peak all through this phase, while restricted loss falls and excluded loss rises.
3. **Cleanup** runs from there until log10(test loss) has come down 90% of the way. After it the
   network has grokked and the measures are flat.

Cleanup (and hence the end of circuit formation) is only located when test loss falls by at least a
factor of 10 from its peak; otherwise the run has not grokked and those boundaries are None.
`grok_step` is the first checkpoint with test accuracy >= 99%, a headline number.

The curves the rule reads (`run_phases`): the dense ones in metrics.jsonl when it has at least two
rows with both losses (native runs evaluate more often than they checkpoint; an imported run may
have one checkpoint and its whole loss curve), else the per-checkpoint progress table. Where a curve
has losses but no accuracies (the original code logged losses only), accuracy is bounded from the
loss: a wrong answer costs at least ln 2, so accuracy >= 1 - loss / ln 2, and the 99% marks are
read from that bound (never earlier than the truth). With neither curve (one checkpoint, no
metrics) the phases are unknown (`source = "none"`), not "not grokked".
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np

#: train accuracy at which the training set counts as fitted (memorization is over)
FIT_ACC = 0.99
#: test accuracy at which a run counts as grokked (`grok_step`, the report's and sweeps' headline)
GROK_ACC = 0.99
START_FRAC = 0.1
END_FRAC = 0.9
MIN_DROP_DECADES = 1.0


@dataclass
class Phases:
    memorization_end: int | None  # = start of circuit formation
    cleanup_start: int | None  # = end of circuit formation
    cleanup_end: int | None
    grok_step: int | None
    last_step: int
    source: str = "checkpoints"  # the curves read: "metrics" (metrics.jsonl), "checkpoints", "none"

    @property
    def known(self) -> bool:
        return self.source != "none"

    def spans(self) -> list[tuple[str, int, int]]:
        """(name, start, end) for each phase that was located, for shading plots."""
        out = []
        if not self.known:
            return out
        if self.memorization_end is not None:
            out.append(("memorization", 0, self.memorization_end))
            if self.cleanup_start is not None:
                out.append(("circuit formation", self.memorization_end, self.cleanup_start))
                out.append(("cleanup", self.cleanup_start, self.cleanup_end or self.last_step))
            else:
                out.append(("circuit formation?", self.memorization_end, self.last_step))
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _first(steps: np.ndarray, mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(steps[hits[0]]) if hits.size else None


def detect_phases(progress: dict[str, np.ndarray]) -> Phases:
    """Apply the rule above to columns `step`, `train_acc`, `test_acc`, `test_loss`."""
    steps = np.asarray(progress["step"])
    train_acc = np.asarray(progress["train_acc"])
    test_acc = np.asarray(progress["test_acc"])
    log_test = np.log10(np.maximum(np.asarray(progress["test_loss"]), 1e-300))
    last = int(steps[-1])
    grok = _first(steps, test_acc >= GROK_ACC)
    mem_end = _first(steps, train_acc >= FIT_ACC)
    if mem_end is None:
        return Phases(None, None, None, grok, last)
    after = np.flatnonzero(steps >= mem_end)
    peak_i = after[np.argmax(log_test[after])]
    tail = max(1, len(steps) // 10)
    low = log_test[-tail:].min()
    drop = log_test[peak_i] - low
    if drop < MIN_DROP_DECADES:
        return Phases(mem_end, None, None, grok, last)
    later = np.arange(len(steps)) > peak_i
    start = _first(steps, later & (log_test <= log_test[peak_i] - START_FRAC * drop))
    end = _first(steps, later & (log_test <= log_test[peak_i] - END_FRAC * drop))
    return Phases(mem_end, start, end, grok, last)


def accuracy_bound(loss: np.ndarray) -> np.ndarray:
    """The least accuracy a mean cross-entropy `loss` allows: each wrong answer costs >= ln 2."""
    return np.clip(1 - np.asarray(loss, dtype=np.float64) / np.log(2), 0.0, 1.0)


def metrics_curve(rows: list[dict]) -> dict[str, np.ndarray] | None:
    """Columns step, train_loss, test_loss, train_acc, test_acc from metrics.jsonl rows that hold
    both losses (accuracies missing from a row: `accuracy_bound`); None with fewer than two rows."""
    rows = [r for r in rows if _number(r.get("train_loss")) and _number(r.get("test_loss"))]
    if len(rows) < 2:
        return None
    rows = sorted(rows, key=lambda r: r["step"])
    out = {"step": np.array([r["step"] for r in rows], dtype=np.int64)}
    for split in ("train", "test"):
        loss = np.array([r[f"{split}_loss"] for r in rows], dtype=np.float64)
        bound = accuracy_bound(loss)
        acc = [r.get(f"{split}_acc") for r in rows]
        out[f"{split}_loss"] = loss
        out[f"{split}_acc"] = np.array([a if _number(a) else b for a, b in zip(acc, bound, strict=True)])
    return out


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def run_phases(metrics: list[dict], progress: dict[str, np.ndarray] | None) -> Phases:
    """The phases from the densest curves a run has (see the module's doc): metrics.jsonl, else the
    progress table (one row per checkpoint), else unknown."""
    curve = metrics_curve(metrics)
    if curve is not None:
        return dataclasses.replace(detect_phases(curve), source="metrics")
    if progress is not None and len(progress["step"]) >= 2:
        return detect_phases(progress)
    last = int(progress["step"][-1]) if progress is not None and len(progress["step"]) else 0
    return Phases(None, None, None, None, last, source="none")
