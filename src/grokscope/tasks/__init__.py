"""Task families, looked up by the config's `task.kind`."""

from __future__ import annotations

from typing import Any

from grokscope.errors import GrokscopeError
from grokscope.tasks.addition import AdditionConfig, AdditionTask
from grokscope.tasks.base import Batch, Task, all_true
from grokscope.tasks.induction import InductionConfig, InductionTask
from grokscope.tasks.modular import ModularConfig, ModularTask
from grokscope.tasks.skip_trigram import SkipTrigramConfig, SkipTrigramTask

# kind -> (config dataclass, task class); later task families register here.
TASKS: dict[str, tuple[type, type]] = {
    "modular": (ModularConfig, ModularTask),
    "addition": (AdditionConfig, AdditionTask),
    "induction": (InductionConfig, InductionTask),
    "skip_trigram": (SkipTrigramConfig, SkipTrigramTask),
}


def task_config_class(kind: Any) -> type:
    if kind not in TASKS:
        raise GrokscopeError(f"bad config: unknown task.kind {kind!r}; known: {', '.join(TASKS)}")
    return TASKS[kind][0]


def build_task(task_config: Any, seed: int) -> Task:
    return TASKS[task_config.kind][1](task_config, seed)


__all__ = ["Batch", "Task", "all_true", "TASKS", "build_task", "task_config_class"]
