"""Names of a task's loss positions, for figures and tables: the answer digit each one predicts."""

from __future__ import annotations


def position_labels(task) -> list[str]:
    """Names of the loss positions: the answer digit (power of ten) each predicts, when fixed."""
    from grokscope.tasks.addition import AdditionTask

    if isinstance(task, AdditionTask) and task.fixed:
        cols = range(task.n_columns) if task.config.reverse_answer else range(task.M, -1, -1)
        if task.index_hints:  # each answer digit is preceded by its hint token
            return [f"{kind} x10^{c}" for c in cols for kind in ("hint", "digit")]
        return [f"digit x10^{c}" for c in cols]
    return [f"pos {p + 1}" for p in task.loss_positions]
