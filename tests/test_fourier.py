"""Fourier basis, Gini, and neuron key-frequency fractions against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from grokscope.analysis.fourier import (
    basis_names,
    check_odd_prime,
    fourier_2d,
    fourier_basis,
    gini,
    group_energy_2d,
)
from grokscope.analysis.key_frequencies import (
    key_frequencies,
    neuron_freq_fractions,
    neuron_freq_fractions_fft,
    select_key_freqs,
)
from grokscope.errors import GrokscopeError


@pytest.mark.parametrize("p", [3, 7, 31])
def test_basis_is_orthonormal_with_named_rows(p):
    B = fourier_basis(p)
    assert torch.allclose(B @ B.T, torch.eye(p, dtype=torch.float64), atol=1e-12)
    names = basis_names(p)
    assert names[:3] == ["const", "cos 1", "sin 1"] and names[-1] == f"sin {(p - 1) // 2}"
    x = torch.arange(p, dtype=torch.float64)
    k = 2 if p > 3 else 1
    cos_k = torch.cos(2 * math.pi * k * x / p)
    assert torch.allclose(B[2 * k - 1], cos_k / cos_k.norm())  # row 2k-1 is cos k (not sin)


@pytest.mark.parametrize("p", [1, 2, 9, 15])
def test_non_odd_prime_is_a_clear_error(p):
    with pytest.raises(GrokscopeError, match="odd prime"):
        check_odd_prime(p)


def test_gini_matches_pairwise_definition():
    torch.manual_seed(0)
    x = torch.rand(5, 40, dtype=torch.float64)
    n = x.shape[-1]
    pairwise = (x[:, :, None] - x[:, None, :]).abs().sum((1, 2)) / (2 * n * x.sum(-1))
    assert torch.allclose(gini(x), pairwise, atol=1e-12)
    assert gini(torch.ones(10)).item() == pytest.approx(0.0, abs=1e-12)
    assert gini(torch.eye(10)[3]).item() == pytest.approx(1 - 1 / 10)


def _direct_fractions(acts: torch.Tensor, p: int) -> torch.Tensor:
    """The original's loop: 2D transform of each centered neuron, block {0, cos k, sin k}² over total."""
    B = fourier_basis(p)
    out = torch.zeros(acts.shape[1], (p - 1) // 2, dtype=torch.float64)
    for n in range(acts.shape[1]):
        x = acts[:, n].double().reshape(p, p)
        y = B @ (x - x.mean()) @ B.T
        for k in range(1, (p - 1) // 2 + 1):
            idx = [0, 2 * k - 1, 2 * k]
            out[n, k - 1] = y[idx][:, idx].square().sum() / y.square().sum()
    return out


@pytest.mark.parametrize("p", [5, 11])
def test_neuron_fractions_match_direct_loop_and_fft(p):
    torch.manual_seed(1)
    acts = torch.randn(p * p, 9).relu() + 0.3
    direct = _direct_fractions(acts, p)
    assert torch.allclose(neuron_freq_fractions(acts, p), direct, atol=1e-6)
    assert torch.allclose(neuron_freq_fractions_fft(acts, p), direct, atol=1e-10)
    # leading (checkpoint) axes are vectorized too
    batched = neuron_freq_fractions(torch.stack([acts, 2 * acts]), p)
    assert torch.allclose(batched[1], direct, atol=1e-6)


def test_group_energy_matches_explicit_transform():
    p = 7
    x = torch.randn(3, p, p, dtype=torch.float64)
    y = fourier_2d(x, p).square()
    g = (torch.arange(p) + 1) // 2
    explicit = torch.zeros(3, 4, 4, dtype=torch.float64)
    for u in range(p):
        for v in range(p):
            explicit[:, g[u], g[v]] += y[:, u, v]
    assert torch.allclose(group_energy_2d(x), explicit, atol=1e-10)


def test_key_frequencies_of_hand_built_neurons():
    p = 13
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    w = 2 * math.pi / p
    cols = [torch.cos(w * 3 * (a + b)), torch.sin(w * 3 * (a + b)) + 0.2 * torch.cos(w * 3 * a)]
    cols += [torch.cos(w * 5 * (a + b)) + 0.5, torch.cos(w * 2 * a) * torch.cos(w * 4 * b)]  # last: mixed
    acts = torch.stack(cols, dim=1)
    kf = key_frequencies(acts, p, threshold=0.85, min_share=0.02)
    assert kf.neuron_freq[:3] == [3, 3, 5]
    assert kf.neuron_frac[0] == pytest.approx(1.0) and kf.neuron_frac[2] == pytest.approx(1.0)
    assert kf.neuron_frac[3] < 0.85  # cos 2a · cos 4b is not a single-frequency neuron
    assert kf.key_freqs == [3, 5]
    # a frequency needs at least min_share of the neurons
    assert select_key_freqs(torch.tensor([3, 3, 5, 7]), torch.ones(4), 0.85, 0.5) == [3]


def _neurons_of(p: int, plan: list[tuple[int, float, int]], seed: int = 0) -> torch.Tensor:
    """[p², d_mlp] neurons: for each (frequency, fraction, count), `count` neurons whose best
    frequency is `frequency`, explaining about `fraction` of their variance (the rest noise)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    cols = []
    for k, fraction, count in plan:
        for _ in range(count):
            phase = float(torch.rand(1, generator=g)) * 2 * math.pi
            wave = torch.cos(2 * math.pi * k * (a + b) / p + phase)
            noise = torch.randn(p * p, generator=g, dtype=torch.float64)
            noise = noise - noise.mean()
            scale = math.sqrt((1 - fraction) / fraction * wave.var().item() / noise.var().item())
            cols.append(wave + scale * noise)
    return torch.stack(cols, dim=1)


def test_carried_rule_adds_a_frequency_many_neurons_hold_below_the_cut_and_not_a_few():
    p = 31
    # frequency 4: clean (0.95); 7: 60 of 200 neurons at ~0.75 (none passes 0.85); 11: 4 neurons at 0.75
    plan = [(4, 0.95, 100), (7, 0.75, 60), (11, 0.75, 4), (2, 0.2, 36)]
    kf = key_frequencies(_neurons_of(p, plan), p)
    frac = torch.tensor(kf.neuron_frac)
    assert kf.neuron_freq[100:160] == [7] * 60 and 0.65 < frac[100:160].median() < 0.85
    assert (frac[100:160] < 0.85).all()
    assert kf.by_rule["threshold"]["key_freqs"] == [4]  # the earlier rule misses 7
    assert kf.rule == "carried" and kf.key_freqs == [4, 7]  # 11 (2% of neurons) is not added
    assert 2 in kf.by_rule["original"]["key_freqs"]  # every best frequency counts there, noise too
    assert key_frequencies(_neurons_of(p, plan), p, rule="threshold").key_freqs == [4]
