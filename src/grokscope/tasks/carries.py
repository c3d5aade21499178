"""Column arithmetic of multi-digit addition: sum digits, carries, sum-9 columns, cascades.

Everything works on *column-indexed* digit tensors: `A[:, c]` is the digit of 10**c (column 0 =
units), so numbers of 20+ digits never pass through int64. Definitions (checked against Python
integers in tests/test_addition.py):

- `carry_in[c]`  carry entering column c (0 for the units column); `carry_out[c] = carry_in[c+1]`.
- `sum_is_9[c]`  a_c + b_c == 9: the column passes an incoming carry on without making one.
- `ripple[c]`    how many sum-9 columns the carry entering c has rippled through (0 when it came
  straight from the column that made it, or when there is no carry into c).
- `cascade_len[c]` the ripple count of the whole cascade (chain "column making a carry -> sum-9
  columns passing it on -> column receiving it") that the carry entering c belongs to; equal for
  every column the chain's carry enters, 0 for columns no carry enters.
- `max_cascade` the longest cascade of an example; `carry_class` S0..S5: 0 no carry at all,
  1 carries but none ripples through a sum-9 column, 2..5 a cascade through 1, 2, 3, >= 4 columns.
"""

from __future__ import annotations

import torch

N_CLASSES = 6  # S0..S5


def column_sums(A: torch.Tensor, B: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sum digits and carry metadata of A + B; inputs [n, M] -> outputs over M + 1 columns."""
    n, M = A.shape
    zero = torch.zeros(n, 1, dtype=A.dtype)
    Ap, Bp = torch.cat([A, zero], 1), torch.cat([B, zero], 1)
    pair = Ap + Bp
    S = torch.empty_like(pair)
    carry_in = torch.zeros_like(pair)
    carry = torch.zeros(n, dtype=A.dtype)
    for c in range(M + 1):  # a loop over columns (<= ~60), never over examples
        carry_in[:, c] = carry
        total = pair[:, c] + carry
        S[:, c] = total % 10
        carry = total // 10
    carry_out = torch.cat([carry_in[:, 1:], carry[:, None]], 1)
    sum_is_9 = pair == 9
    ripple = torch.zeros_like(pair)
    for c in range(1, M + 1):
        passed = (carry_in[:, c] == 1) & sum_is_9[:, c - 1]
        ripple[:, c] = torch.where(passed, ripple[:, c - 1] + 1, 0)
    cascade_len = torch.zeros_like(pair)
    for c in range(M, -1, -1):
        passes_on = (carry_in[:, c] == 1) & sum_is_9[:, c]
        later = cascade_len[:, c + 1] if c < M else torch.zeros_like(carry)
        cascade_len[:, c] = torch.where(passes_on, later, torch.where(carry_in[:, c] == 1, ripple[:, c], 0))
    max_cascade = ripple.max(dim=1).values
    any_carry = carry_out.any(dim=1)
    carry_class = torch.where(any_carry, (1 + max_cascade).clamp(max=N_CLASSES - 1), 0)
    return {
        "sum_digits": S,
        "carry_in": carry_in,
        "carry_out": carry_out,
        "sum_is_9": sum_is_9,
        "ripple": ripple,
        "cascade_len": cascade_len,
        "max_cascade": max_cascade,
        "carry_class": carry_class,
    }


def number_lengths(D: torch.Tensor) -> torch.Tensor:
    """Digits in each (column-indexed) number without leading zeros; 0 has length 1."""
    cols = torch.arange(1, D.shape[1] + 1)
    return (torch.where(D != 0, cols, 0)).max(dim=1).values.clamp(min=1)


def digits_to_int(row) -> int:
    """Column-indexed digits -> Python int (for text dumps and tests; not a hot path)."""
    return int("".join(str(int(d)) for d in reversed(list(row))) or "0")


def int_to_digits(value: int, n_columns: int) -> list[int]:
    """Python int -> column-indexed digits (units first), zero-padded to `n_columns`."""
    text = str(value)[::-1]
    if len(text) > n_columns:
        raise ValueError(f"{value} has more than {n_columns} digits")
    return [int(ch) for ch in text] + [0] * (n_columns - len(text))
