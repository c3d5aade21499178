"""Key frequencies: the few k whose cos/sin the MLP neurons are built from (Nanda et al. 2023, §4).

For each neuron: center its activation over the p² inputs, and measure what fraction of its variance
lies in the 2D Fourier block {const, cos k, sin k}² (rows: a, columns: b). Its frequency is the k with
the largest fraction; it *counts* if that fraction is >= `threshold` (0.85).

Rules (`rule`; docs/key_frequencies.md compares them on models where they differ):
- `threshold` (grokscope's earlier rule): a key frequency is one that at least `min_share` (2%) of the
  neurons, and at least one, count for.
- `carried` (the default): the `threshold` rule's frequencies, plus any frequency that is the best
  frequency of at least `carry_share` (5%) of the neurons with a fraction >= `carry_floor` (0.5).
  Many neurons explained at 0.75 by one frequency carry it, even if none reaches 0.85; a frequency
  that a handful of neurons hold is not added (it barely moves the restricted loss).
- `original` (the original code's): every neuron's best frequency counts, whatever its fraction.
`key_frequencies` also records each rule's set, and `analyze` the restricted loss each gives.

Vectorized over neurons, frequencies and any leading axes (checkpoints): one real FFT per neuron,
no Python loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from grokscope.analysis.fourier import group_energy_2d, n_freqs
from grokscope.analysis.options import CARRY_FLOOR, CARRY_SHARE, KEY_RULES, MIN_SHARE, THRESHOLD
from grokscope.errors import GrokscopeError


def neuron_freq_fractions(
    neurons: torch.Tensor,  # [..., batch=p², d_mlp] over the grid, row-major (a, b)
    p: int,
) -> torch.Tensor:  # [..., d_mlp, K] float64, K = (p-1)/2
    """The fraction of each neuron's centered variance in the 2D frequency block k = 1..K.

    The block {const, cos k, sin k}² of a map X[a, b] holds the 2D DFT entries (±k, 0), (0, ±k),
    (±k, ±k). Each is a 1D DFT of a p-vector of sums: X̂[k, 0] of the row sums, X̂[0, k] of the column
    sums, X̂[k, k] of X summed over a+b ≡ m and X̂[k, -k] of X summed over a-b ≡ m. So the fractions
    cost four O(p²N) binning passes and four tiny [K, p] x [p, N] products: no O(p³N) 2D transform,
    no FFT (slow for prime p). Centering only changes the constant term, i.e. only the denominator.
    """
    N = neurons.shape[-1]
    x = neurons.reshape(*neurons.shape[:-2], p, p, N)  # [..., a, b, d_mlp]
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    sums = [x.sum(dim=-2), x.sum(dim=-3)]  # over b (a function of a), over a (a function of b)
    for m in ((a + b) % p, (a - b) % p):
        binned = torch.zeros(*neurons.shape[:-2], p, N, dtype=neurons.dtype, device=neurons.device)
        sums.append(binned.index_add_(-2, m.to(neurons.device), neurons))
    k = torch.arange(1, n_freqs(p) + 1, dtype=torch.float64)[:, None] * torch.arange(p, dtype=torch.float64)
    C, S = torch.cos(2 * math.pi * k / p), torch.sin(2 * math.pi * k / p)  # [K, p]
    power = sum((C @ v.double()).square() + (S @ v.double()).square() for v in sums)  # [..., K, d_mlp]
    inside = 2 * power / p**2
    # centered energy Σx² − (Σx)²/p², from two fast reductions (torch.var is several times slower)
    total = neurons.square().sum(dim=-2).double() - sums[0].double().sum(dim=-2).square() / p**2
    return (inside / total[..., None, :].clamp_min(torch.finfo(torch.float64).tiny)).transpose(-1, -2)


def neuron_freq_fractions_fft(
    neurons: torch.Tensor,  # [..., batch=p², d_mlp]
    p: int,
) -> torch.Tensor:  # [..., d_mlp, K]
    """Same as `neuron_freq_fractions`, from all 2D block energies (real FFT); a cross-check."""
    x = neurons.double()
    x = x - x.mean(dim=-2, keepdim=True)
    maps = x.movedim(-1, -2).reshape(*x.shape[:-2], x.shape[-1], p, p)  # [..., d_mlp, a, b]
    energy = group_energy_2d(maps)  # [..., d_mlp, K+1, K+1]
    total = energy.sum(dim=(-2, -1))
    diag = energy.diagonal(dim1=-2, dim2=-1)
    inside = energy[..., 0, 1:] + energy[..., 1:, 0] + diag[..., 1:] + energy[..., :1, 0]
    return inside / total[..., None].clamp_min(torch.finfo(torch.float64).tiny)


def neuron_frequencies(
    neurons: torch.Tensor,  # [..., batch=p², d_mlp]
    p: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # [..., d_mlp] long, [..., d_mlp] float64
    """Each neuron's best frequency (1..K) and the fraction of its variance that frequency explains."""
    frac, idx = neuron_freq_fractions(neurons, p).max(dim=-1)
    return idx + 1, frac


def select_key_freqs(
    freq: torch.Tensor,  # [d_mlp] each neuron's best frequency
    frac: torch.Tensor,  # [d_mlp] the fraction of its variance that frequency explains
    threshold: float = THRESHOLD,
    min_share: float = MIN_SHARE,
    rule: str = "carried",
    carry_floor: float = CARRY_FLOOR,
    carry_share: float = CARRY_SHARE,
) -> list[int]:
    """The key frequencies under `rule` (see the module's doc)."""
    if rule not in KEY_RULES:
        raise GrokscopeError(f"key_rule must be one of {', '.join(KEY_RULES)}; got {rule!r}")
    need = max(1.0, min_share * freq.numel())
    if rule == "original":
        return _held(freq, need)
    keys = set(_held(freq[frac >= threshold], need))
    if rule == "carried":
        keys |= set(_held(freq[frac >= carry_floor], max(need, carry_share * freq.numel())))
    return sorted(keys)


def _held(freq: torch.Tensor, need: float) -> list[int]:
    """Frequencies that at least `need` of the entries of `freq` are."""
    if freq.numel() == 0:
        return []
    ks, counts = torch.unique(freq, return_counts=True)
    return [int(k) for k, c in zip(ks, counts, strict=True) if c >= need]


@dataclass
class KeyFrequencies:
    """The rule's result at one checkpoint, as stored in `analysis/key_frequencies.json`."""

    step: int | None
    key_freqs: list[int]
    threshold: float
    min_share: float
    neuron_freq: list[int]
    neuron_frac: list[float]
    source: str = "detected"  # or "user"
    rule: str = (
        "threshold"  # the rule that chose key_freqs (files written before rules were named: threshold)
    )
    carry_floor: float = CARRY_FLOOR
    carry_share: float = CARRY_SHARE
    by_rule: dict = field(
        default_factory=dict
    )  # rule -> its key set (and, from analyze, its restricted loss)
    restricted_loss_train: float | None = None  # with key_freqs, at this checkpoint (from analyze)
    model_loss_train: float | None = None  # the model's own train loss there, on the same p classes

    @property
    def frac_neurons_explained(self) -> float:
        return sum(f >= self.threshold for f in self.neuron_frac) / max(1, len(self.neuron_frac))

    def to_dict(self) -> dict:
        return asdict(self)


def key_frequencies(
    neurons: torch.Tensor,  # [batch=p², d_mlp] over the grid, row-major (a, b)
    p: int,
    threshold: float = THRESHOLD,
    min_share: float = MIN_SHARE,
    step: int | None = None,
    rule: str = "carried",
    carry_floor: float = CARRY_FLOOR,
    carry_share: float = CARRY_SHARE,
) -> KeyFrequencies:
    """Apply the rule to one checkpoint's neuron activations over the p x p grid (every rule's set
    is kept in `by_rule`, for comparison)."""
    freq, frac = neuron_frequencies(neurons, p)
    by_rule = {
        r: {"key_freqs": select_key_freqs(freq, frac, threshold, min_share, r, carry_floor, carry_share)}
        for r in KEY_RULES
    }
    if rule not in by_rule:
        raise GrokscopeError(f"key_rule must be one of {', '.join(KEY_RULES)}; got {rule!r}")
    return KeyFrequencies(
        step=step,
        key_freqs=list(by_rule[rule]["key_freqs"]),
        threshold=threshold,
        min_share=min_share,
        neuron_freq=freq.tolist(),
        neuron_frac=[round(float(f), 6) for f in frac],
        rule=rule,
        carry_floor=carry_floor,
        carry_share=carry_share,
        by_rule=by_rule,
    )


def model_key_frequencies(
    model, task, threshold: float = THRESHOLD, min_share: float = MIN_SHARE, rule: str = "carried"
):
    """The rule applied to a model in memory (its last MLP's neurons at the final position)."""
    from grokscope.analysis.modular_view import check_task, modular_outputs

    check_task(task)
    neurons = modular_outputs(model, task).neurons
    if neurons is None:
        from grokscope.errors import GrokscopeError

        raise GrokscopeError("key frequencies come from MLP neurons; this model has no MLP")
    return key_frequencies(neurons, task.p, threshold, min_share, rule=rule)
