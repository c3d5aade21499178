"""Task families. Each registers itself in `grokscope.registry.TASKS` under its `task.kind`."""

from __future__ import annotations

from typing import Any

from grokscope.registry import TASKS
from grokscope.tasks.addition import AdditionTask
from grokscope.tasks.base import Batch, Task, all_true
from grokscope.tasks.induction import InductionTask
from grokscope.tasks.modular import ModularTask
from grokscope.tasks.rasp import CopyTask, CountTask, ModeTask, ParityTask, SortTask
from grokscope.tasks.sequence import SequenceConfig, SequenceTask
from grokscope.tasks.skip_trigram import SkipTrigramTask


def build_task(task_config: Any, seed: int) -> Task:
    """The task `task_config.kind` names, built from its config and the run's seed."""
    return TASKS.get(task_config.kind)(task_config, seed)


__all__ = [
    "AdditionTask",
    "Batch",
    "CopyTask",
    "CountTask",
    "InductionTask",
    "ModeTask",
    "ModularTask",
    "ParityTask",
    "SequenceConfig",
    "SequenceTask",
    "SkipTrigramTask",
    "SortTask",
    "Task",
    "all_true",
    "build_task",
]
