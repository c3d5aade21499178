"""Per-example labels a probe can read: the task's metadata plus the tokens and answers themselves.

A label spec is `NAME` or `NAME.INDEX`: `carry_out.3` is column 3 of the task's `carry_out`
metadata, `token.0` the first input token, `target.2` the answer at the third loss position. A
multi-column label without an index gives one probe per column.
"""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError
from grokscope.tasks import Batch


def label_table(batch: Batch) -> dict[str, torch.Tensor]:
    """name -> [N, K] tensor of every label this batch offers."""
    table = {"token": batch.tokens, "target": batch.targets}
    for name, value in batch.meta.items():
        if value.shape[:1] == batch.tokens.shape[:1] and value.dim() in (1, 2):
            value = value.long() if value.dtype == torch.bool else value
            table[name] = value if value.dim() == 2 else value[:, None]
    return table


def resolve_label(batch: Batch, spec: str) -> tuple[list[str], torch.Tensor]:
    """(column names, [N, K] values) for a label spec; integer values -> classes, floats -> regression."""
    table = label_table(batch)
    name, _, index = spec.partition(".")
    if name not in table:
        raise GrokscopeError(f"unknown label {name!r}; this task offers: {', '.join(sorted(table))}")
    values = table[name]
    if index == "":
        cols = list(range(values.shape[1]))
    else:
        try:
            cols = [int(index)]
        except ValueError:
            raise GrokscopeError(f"bad label {spec!r}: the part after '.' must be a column number") from None
        if not -values.shape[1] <= cols[0] < values.shape[1]:
            raise GrokscopeError(f"label {name!r} has columns 0..{values.shape[1] - 1}, not {cols[0]}")
        cols = [cols[0] % values.shape[1]]
    names = [f"{name}.{c}" if values.shape[1] > 1 or index else name for c in cols]
    return names, values[:, cols]


def is_classification(values: torch.Tensor) -> bool:
    """Integer and boolean labels are classes; floating-point labels are regressed."""
    return not values.is_floating_point()


def control_labels(values: torch.Tensor, seed: int) -> torch.Tensor:
    """Each column's labels shuffled across examples: the same class frequencies, no relation to inputs.

    A probe that scores well on these is memorising, not reading; `acc - control_acc` is its selectivity
    (after Hewitt & Liang 2019).
    """
    g = torch.Generator().manual_seed(seed)
    cols = [values[torch.randperm(values.shape[0], generator=g), k] for k in range(values.shape[1])]
    return torch.stack(cols, dim=1)


# Column labels whose value is consumed by a later answer column: the carry out of column c is what
# the answer digit of column c + 1 needs. Every other column label belongs to its own column.
CONSUMED_BY_NEXT = ("carry_out",)


def aligned_positions(batch: Batch, names: list[str], loss_positions: list[int]) -> dict[str, int]:
    """label column -> the loss position whose answer needs it (tasks with `answer_column` metadata).

    `carry_in.c`, `sum_digits.c`, `sum_is_9.c` ... align with the position that predicts answer column
    c; `carry_out.c` with the one that predicts column c + 1. Columns no position predicts are left out.
    The most common position over the batch is used (fixed formats: the same for every example).
    """
    col = batch.meta.get("answer_column")
    if col is None or col.dim() != 2 or col.shape[1] != len(loss_positions):
        return {}
    out = {}
    for name in names:
        base, _, index = name.partition(".")
        if not index.isdigit():
            continue
        want = int(index) + (1 if base in CONSUMED_BY_NEXT else 0)
        hits = (col == want).sum(0)
        if hits.max() > 0:
            out[name] = loss_positions[int(hits.argmax())]
    return out
