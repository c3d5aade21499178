"""Accuracy of an addition model per (len a, len b) cell and per carry class, on train and test.

One row per group: `split` (train, test, or a stress set S0..S5 / edge), `group` (`cell`,
`carry_class`, `all`), the group's key, its size, teacher-forced exact match, teacher-forced
per-digit accuracy (answer digits only, EOS excluded) and greedy-generation exact match.
"""

from __future__ import annotations

import csv
import io

import torch

from grokscope.errors import GrokscopeError
from grokscope.evaluation.generate import greedy_generate
from grokscope.scoring import score
from grokscope.tasks.addition import AdditionTask
from grokscope.tasks.base import Batch

COLUMNS = ["split", "group", "len_a", "len_b", "carry_class", "n", "exact", "digit_acc", "gen_exact"]


@torch.no_grad()
def example_scores(model, task: AdditionTask, batch: Batch, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Per example: teacher-forced exact, correct/total answer digits, greedy exact."""
    scores = score(model, batch, task.loss_positions, chunk=chunk)
    ok = scores.correct
    digit = batch.mask & (batch.meta["answer_column"] >= 0)
    _, gen_exact = greedy_generate(model, task, batch)
    return {
        "exact": scores.exact,
        "digits_right": (ok & digit).sum(1),
        "digits": digit.sum(1),
        "gen_exact": gen_exact,
    }


def _row(split: str, group: str, scores: dict[str, torch.Tensor], sel: torch.Tensor, **key) -> dict:
    n = int(sel.sum())
    return {
        "split": split,
        "group": group,
        "len_a": key.get("len_a", ""),
        "len_b": key.get("len_b", ""),
        "carry_class": key.get("carry_class", ""),
        "n": n,
        "exact": scores["exact"][sel].double().mean().item(),
        "digit_acc": (scores["digits_right"][sel].sum() / scores["digits"][sel].sum().clamp(min=1)).item(),
        "gen_exact": scores["gen_exact"][sel].double().mean().item(),
    }


def accuracy_rows(model, task: AdditionTask, sets: dict[str, Batch]) -> list[dict]:
    """Rows for every eval set: overall; per length cell and carry class for train and test."""
    rows = []
    for split, batch in sets.items():
        scores = example_scores(model, task, batch)
        everything = torch.ones(len(batch), dtype=torch.bool)
        rows.append(_row(split, "all", scores, everything))
        if split not in ("train", "test"):
            continue
        la, lb = batch.meta["len_a"], batch.meta["len_b"]
        for a in range(task.config.min_digits, task.M + 1):
            for b in range(task.config.min_digits, task.M + 1):
                sel = (la == a) & (lb == b)
                if sel.any():
                    rows.append(_row(split, "cell", scores, sel, len_a=a, len_b=b))
        cls = batch.meta["carry_class"]
        for k in range(int(cls.max()) + 1):
            sel = cls == k
            if sel.any():
                rows.append(_row(split, "carry_class", scores, sel, carry_class=f"S{k}"))
    return rows


def eval_sets_for_table(task: AdditionTask, n_train_max: int = 5000, seed: int = 12345) -> dict[str, Batch]:
    """The task's eval sets, with a finite train set's table read on up to `n_train_max` of its
    examples (a seeded random subset)."""
    sets = dict(task.eval_sets())
    if task.train_ops is not None:
        n = len(task.train_ops.la)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_train_max]
        sets["train"] = task.encode(task.train_ops.select(idx.sort().values))
    return sets


def evaluate_run(run, step: int | None = None) -> list[dict]:
    """The `eval` study of one addition run: the rows of `accuracy_rows` at checkpoint `step`,
    written to `analysis/accuracy_by_length.csv` (and the answer positions' labels beside it)."""
    import json

    from grokscope.evaluation.positions import position_labels
    from grokscope.files import atomic_write_text

    task = run.task
    if not isinstance(task, AdditionTask):
        raise GrokscopeError(
            f"{run.path}: `grokscope eval` reads addition runs; this is task.kind = {run.config.task.kind!r}"
        )
    rows = accuracy_rows(run.model(step), task, eval_sets_for_table(task))
    atomic_write_text(run.analysis_dir / "accuracy_by_length.csv", rows_to_csv(rows))
    atomic_write_text(run.analysis_dir / "position_labels.json", json.dumps(position_labels(task)) + "\n")
    return rows


def rows_to_csv(rows: list[dict], extra: dict | None = None) -> str:
    out = io.StringIO()
    cols = ([*extra] if extra else []) + COLUMNS
    w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {**(extra or {}), **{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()}}
        )
    return out.getvalue()


def cell_grid(
    rows: list[dict], split: str, metric: str = "gen_exact"
) -> tuple[list[int], list[int], torch.Tensor, torch.Tensor]:
    """(len_a values, len_b values, metric [A, B] (nan where empty), counts [A, B]) for one split."""
    cells = [r for r in rows if r["split"] == split and r["group"] == "cell"]
    if not cells:
        return [], [], torch.empty(0, 0), torch.empty(0, 0)
    every = [r for r in rows if r["group"] == "cell"]  # one axis range for all splits
    lengths = [r["len_a"] for r in every] + [r["len_b"] for r in every]
    la = lb = list(range(min(lengths), max(lengths) + 1))
    grid = torch.full((len(la), len(lb)), float("nan"), dtype=torch.float64)
    counts = torch.zeros((len(la), len(lb)), dtype=torch.long)
    for r in cells:
        i, j = la.index(r["len_a"]), lb.index(r["len_b"])
        grid[i, j] = r[metric]
        counts[i, j] = r["n"]
    return la, lb, grid, counts
