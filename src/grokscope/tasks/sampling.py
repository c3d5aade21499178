"""Seeded, vectorized sampling of addition operands: lengths, digits, planted carries, distinct sets.

Operands are column-indexed digit tensors (`A[:, c]` = digit of 10**c) with a length per number;
a number of length L > 1 has a non-zero leading digit, and length 1 covers 0..9.
"""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError


def count_numbers(length: int) -> int:
    """How many numbers have exactly `length` digits (0 counts as a 1-digit number)."""
    return 10 if length == 1 else 9 * 10 ** (length - 1)


def length_probs(lo: int, hi: int, sampling: str, short_weight: float) -> torch.Tensor:
    """Probability of each operand length lo..hi (float64).

    `uniform`: proportional to how many numbers have that length (uniform over numbers);
    `balanced`: equal per length, so every (len a, len b) cell is equally likely.
    `short_weight` then multiplies every length below `hi` (upsampling short operands).
    """
    lengths = range(lo, hi + 1)
    if sampling == "uniform":
        w = torch.tensor([float(count_numbers(L)) for L in lengths], dtype=torch.float64)
    else:
        w = torch.ones(len(lengths), dtype=torch.float64)
    w[:-1] *= short_weight
    return w / w.sum()


def sample_lengths(g: torch.Generator, n: int, lo: int, probs: torch.Tensor) -> torch.Tensor:
    return lo + torch.multinomial(probs, n, replacement=True, generator=g)


def random_digits(g: torch.Generator, lengths: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Uniform digits for numbers of the given lengths (leading digit 1..9 when length > 1)."""
    n = len(lengths)
    D = torch.randint(0, 10, (n, n_cols), generator=g)
    lead = torch.randint(1, 10, (n,), generator=g)
    cols = torch.arange(n_cols)
    is_top = (cols == (lengths - 1)[:, None]) & (lengths[:, None] > 1)
    D = torch.where(is_top, lead[:, None], D)
    return torch.where(cols >= lengths[:, None], 0, D)


def digit_bounds(lengths: torch.Tensor, n_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest digit allowed in each column of numbers with these lengths."""
    cols = torch.arange(n_cols)
    inside = cols < lengths[:, None]
    lo = ((cols == (lengths - 1)[:, None]) & (lengths[:, None] > 1)).long()
    hi = torch.where(inside, 9, 0)
    return torch.where(inside, lo, 0), hi


def plant(
    g: torch.Generator,
    A: torch.Tensor,
    B: torch.Tensor,
    la: torch.Tensor,
    lb: torch.Tensor,
    where: torch.Tensor,
    target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Set columns `where` [n, M] so that a_c + b_c == target[n, M], where the lengths allow it.

    Columns where no digit pair within the operands' bounds reaches the target keep their digits.
    """
    n_cols = A.shape[1]
    alo, ahi = digit_bounds(la, n_cols)
    blo, bhi = digit_bounds(lb, n_cols)
    lo = torch.maximum(alo, target - bhi)
    hi = torch.minimum(ahi, target - blo)
    ok = where & (lo <= hi)
    u = torch.rand(A.shape, generator=g, dtype=torch.float64)
    a_new = lo + (u * (hi - lo + 1).clamp(min=1)).long().clamp(max=(hi - lo).clamp(min=0))
    return torch.where(ok, a_new, A), torch.where(ok, target - a_new, B)


def carry_heavy(
    g: torch.Generator, A: torch.Tensor, B: torch.Tensor, la: torch.Tensor, lb: torch.Tensor, frac: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite a fraction `frac` of examples so that about half their columns sum to 9 and a
    quarter make a carry (sum 10..18): many cascades, which uniform sampling rarely shows."""
    n, M = A.shape
    chosen = torch.rand(n, generator=g) < frac
    u = torch.rand(n, M, generator=g)
    gen_sum = torch.randint(10, 19, (n, M), generator=g)
    target = torch.where(u < 0.5, 9, gen_sum)
    return plant(g, A, B, la, lb, chosen[:, None] & (u < 0.75), target)


# ----------------------------------------------------------------------------- identity of examples

_P1, _P2 = 2_147_483_647, 2_147_483_629


def _multipliers(width: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(20230112)
    return (
        torch.randint(1, _P1, (width,), generator=g),
        torch.randint(1, _P2, (width,), generator=g),
    )


def example_keys(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A 62-bit fingerprint of each (a, b) pair, for de-duplication and train/test exclusion.

    Two independent modular hashes; distinct pairs collide with probability ~2**-62, and a collision
    can only make a split more conservative (an example treated as already taken).
    """
    return row_keys(torch.cat([A, B], 1))


def row_keys(D: torch.Tensor) -> torch.Tensor:
    """A 62-bit fingerprint of each row of a small-integer tensor [n, width] (values < 1000, width < 10**5)."""
    D = D.long()
    r1, r2 = _multipliers(D.shape[1])
    h1 = (D * r1).sum(1) % _P1
    h2 = (D * r2).sum(1) % _P2
    return h1 * (1 << 31) + h2


def first_occurrences(keys: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the first occurrence of each distinct key, in draw order, skipping `exclude`."""
    uniq, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((len(uniq),), len(keys), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(keys)), reduce="amin")
    idx = first.sort().values
    if exclude is not None and len(exclude):
        idx = idx[~torch.isin(keys[idx], exclude)]
    return idx


def draw_distinct(draw, n: int, g: torch.Generator, exclude: torch.Tensor | None = None, rounds: int = 12):
    """`n` distinct examples from `draw(g, m) -> (A, B, la, lb)`, first occurrences in draw order."""
    parts: list[tuple[torch.Tensor, ...]] = []
    keys = torch.empty(0, dtype=torch.long)
    m = max(64, int(n * 1.2))
    for _ in range(rounds):
        A, B, la, lb = draw(g, m)
        parts.append((A, B, la, lb))
        keys = torch.cat([keys, example_keys(A, B)])
        idx = first_occurrences(keys, exclude)
        if len(idx) >= n:
            A, B, la, lb = (torch.cat(t) for t in zip(*parts, strict=True))
            idx = idx[:n]
            return A[idx], B[idx], la[idx], lb[idx]
        m *= 2
    raise GrokscopeError(
        f"bad config: could not draw {n} distinct addition examples from this sampling distribution; "
        "lower task.n_train / task.n_test or widen the digit range"
    )
