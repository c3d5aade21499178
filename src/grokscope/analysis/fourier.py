"""The real Fourier basis over Z_p and the few transforms the progress measures need.

Row 0 of the basis is the constant vector, rows 2k-1 and 2k are cos(2πkx/p) and sin(2πkx/p)
for k = 1..(p-1)/2, each scaled to unit norm, so the p x p matrix is orthonormal (odd p).
Frequency k of a p-vector is the pair of rows (2k-1, 2k); its "group" in 2D is {const, cos k, sin k}².
"""

from __future__ import annotations

import math

import torch

from grokscope.errors import GrokscopeError


def check_odd_prime(p: int) -> None:
    from grokscope.tasks.modular import is_prime

    if p < 3 or p % 2 == 0 or not is_prime(p):
        raise GrokscopeError(f"the Fourier progress measures need an odd prime p; this run has p = {p}")


def n_freqs(p: int) -> int:
    """Number of non-constant frequencies, (p-1)/2."""
    return (p - 1) // 2


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:  # [basis=p, x=p]
    """Orthonormal [p, p] matrix; row i is basis vector i over x = 0..p-1 (see module docstring):
    row 0 the constant, rows 2k-1 and 2k cos and sin of frequency k."""
    x = torch.arange(p, dtype=torch.float64)
    k = torch.arange(1, n_freqs(p) + 1, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * x[None, :] / p
    rows = torch.empty(p, p, dtype=torch.float64)
    rows[0] = 1.0
    rows[1::2] = torch.cos(angle)
    rows[2::2] = torch.sin(angle)
    return (rows / rows.norm(dim=1, keepdim=True)).to(dtype)


def basis_names(p: int) -> list[str]:
    """Labels of the basis rows: 'const', 'cos 1', 'sin 1', ..."""
    names = ["const"]
    for k in range(1, n_freqs(p) + 1):
        names += [f"cos {k}", f"sin {k}"]
    return names


def fourier_2d(x: torch.Tensor, p: int) -> torch.Tensor:  # [..., a=p, b=p] -> [..., basis=p, basis=p]
    """Basis applied on both of the last two axes: B x Bᵀ (coefficients, same norm)."""
    B = fourier_basis(p, x.dtype).to(x.device)
    return B @ x @ B.T


def group_energy_2d(x: torch.Tensor) -> torch.Tensor:  # [..., a=p, b=p] -> [..., K+1, K+1] float64
    """Energy of x in each 2D frequency block: out[..., g, h] = ‖x in {g-rows}⊗{h-cols}‖².

    Block g = 0 is the constant, block g >= 1 the pair (cos g, sin g). Computed from the real FFT
    (O(p² log p) per map instead of the O(p³) of B x Bᵀ): for real x, the energy of the real basis
    block (g, h) is the summed |DFT|² at (±g, ±h), divided by p² (Parseval).
    """
    p = x.shape[-1]
    K = n_freqs(p)
    power = torch.fft.rfft2(x.double()).abs().square()  # [..., p, K+1]: rows u=0..p-1, cols v=0..K
    col_weight = torch.full((K + 1,), 2.0, dtype=power.dtype, device=power.device)
    col_weight[0] = 1.0  # column v>0 stands for both v and -v (conjugate symmetry)
    group = torch.minimum(torch.arange(p), p - torch.arange(p)).to(power.device)  # row u -> freq
    onehot = torch.nn.functional.one_hot(group, K + 1).to(power.dtype)  # [p, K+1]
    return (onehot.T @ power * col_weight) / p**2


def gini(x: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of non-negative values along the last axis (Hurley & Rickard 2009).

    0 for a flat vector, → 1 when all the mass sits in one entry: a sparsity measure.
    """
    x = x.double().abs().sort(dim=-1).values
    n = x.shape[-1]
    k = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    share = x / x.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return 1 - 2 * (share * (n - k + 0.5) / n).sum(dim=-1)
