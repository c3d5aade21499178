"""From a config or a run folder to a ready task and model."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from grokscope.config import ModelConfig, RunConfig
from grokscope.errors import GrokscopeError
from grokscope.model import Transformer
from grokscope.tasks import Task, build_task

if TYPE_CHECKING:
    from grokscope.train.run_folder import RunFolder


def resolve_model_config(model: ModelConfig, task: Task) -> ModelConfig:
    """Fill vocabulary and context sizes left at 0 from the task; check explicit ones fit it."""
    resolved = dataclasses.replace(
        model,
        d_vocab=model.d_vocab or task.d_vocab,
        d_vocab_out=model.d_vocab_out or task.d_vocab_out,
        n_ctx=model.n_ctx or task.n_ctx,
    )
    for name in ("d_vocab", "d_vocab_out", "n_ctx"):
        if getattr(resolved, name) < getattr(task, name):
            raise GrokscopeError(
                f"bad config: model.{name} = {getattr(resolved, name)} is smaller than the task needs "
                f"({getattr(task, name)}); leave it at 0 to take it from the task"
            )
    return resolved


def build(config: RunConfig) -> tuple[Task, Transformer]:
    task = build_task(config.task, config.seed)
    model = Transformer(resolve_model_config(config.model, task), seed=config.seed)
    return task, model


def load_weights(model: Transformer, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load weights by name, with a clear error when they do not belong to this model."""
    expected = dict(model.named_parameters())
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise GrokscopeError(
            f"{source} does not match the run's model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise GrokscopeError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}"
            )
    with torch.no_grad():
        for name, p in expected.items():
            p.copy_(weights[name])


def load_run(path, step: int | None = None) -> tuple[RunFolder, RunConfig, Task, Transformer]:
    """Open a run folder and return its config, task, and model at `step` (default: last checkpoint)."""
    from grokscope.train.run_folder import RunFolder

    run = RunFolder.open(path)
    config = run.config()
    task, model = build(config)
    step = run.checkpoint_steps()[-1] if step is None and run.checkpoint_steps() else step
    load_weights(model, run.load_checkpoint(step), f"checkpoint step {step} of {run.path}")
    model.eval()
    return run, config, task, model
