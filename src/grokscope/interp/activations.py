"""Activations of named hooks at chosen positions over a task's examples, in bounded memory.

Everything in `grokscope.interp` starts here: the model runs in chunks with a `names_filter`, so only
the requested hooks are kept and only at the requested positions; with many checkpoints, one
checkpoint is loaded at a time.
"""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError
from grokscope.model import Transformer
from grokscope.model.positional import position_ids
from grokscope.scoring import Scores, device_of, score
from grokscope.tasks import Batch, Task

# Hooks whose dimension 1 is not the sequence: attention patterns are [B, H, query, key].
_QUERY_DIM2 = ("hook_pattern", "hook_attn_scores")


def check_hooks(model: Transformer, hooks: list[str]) -> None:
    """A clear error naming close hook names when one does not exist."""
    import difflib

    for name in hooks:
        if name not in model.hook_dict:
            close = difflib.get_close_matches(name, list(model.hook_dict), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise GrokscopeError(f"the model has no hook named {name!r}{hint} (see model.hook_dict)")


def parse_positions(spec: str | list[int] | None, n_ctx: int, loss_positions: list[int]) -> list[int]:
    """'all', 'loss' (the task's answer positions), or a comma list of ints (negative counts from the end)."""
    if spec is None or spec == "all":
        return list(range(n_ctx))
    if spec == "loss":
        return list(loss_positions)
    if isinstance(spec, str):
        try:
            values = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise GrokscopeError(
                f"bad --position {spec!r}: use 'all', 'loss' or a comma list of integers"
            ) from None
    else:
        values = list(spec)
    out = []
    for v in values:
        if not -n_ctx <= v < n_ctx:
            raise GrokscopeError(f"position {v} is outside the context (n_ctx = {n_ctx})")
        out.append(v % n_ctx)
    if not out:
        raise GrokscopeError("no positions given")
    return out


def _at_positions(name: str, act: torch.Tensor, positions: list[int], computed: list[int]) -> torch.Tensor:
    """[batch, pos, ...] -> [batch, len(positions), features] (attention patterns by query position).

    The forward ran its last block at the query positions `computed` only, so a hook there holds
    len(computed) positions where the others hold all of them."""
    dim = 2 if name.endswith(_QUERY_DIM2) else 1
    index = positions
    if act.shape[dim] == len(computed) and computed != list(range(len(computed))):
        where = {p: i for i, p in enumerate(computed)}
        index = [where[p] for p in positions]
    if dim == 2:
        act = act[:, :, index].transpose(1, 2)  # [batch, P, head_index, key]
        act = torch.nan_to_num(act, neginf=0.0)  # masked scores are -inf for every example alike
    else:
        act = act[:, index]
    return act.reshape(act.shape[0], len(positions), -1)


def _forward_cached(model: Transformer, part: Batch, hooks: list[str], computed: list[int]):
    """(logits [batch, len(computed), d_vocab_out], cache): one forward whose last block runs at the
    `computed` query positions only (all a hook read there, or a loss there, needs)."""
    return model.run_with_cache(
        part.tokens, names_filter=hooks, positions=computed, pos_ids=position_ids(model, part)
    )


@torch.no_grad()
def collect_and_score(
    model: Transformer,
    batch: Batch,
    hooks: list[str],
    positions: list[int],
    loss_positions: list[int],
    chunk: int = 2048,
) -> tuple[dict[str, torch.Tensor], Scores]:
    """One forward per chunk gives both: {hook: [batch, len(positions), features] float32} and the
    model's own `Scores` at the task's `loss_positions` (through the one scorer)."""
    check_hooks(model, hooks)
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    computed = sorted({*positions, *loss_positions})
    at_loss = torch.tensor([computed.index(p) for p in loss_positions])

    def forward(part: Batch) -> torch.Tensor:  # [batch, n_loss, d_vocab_out]
        logits, cache = _forward_cached(model, part, hooks, computed)
        for h in hooks:  # activations come back to the CPU, beside the batch's labels
            parts[h].append(_at_positions(h, cache[h], positions, computed).float().cpu())
        return logits[:, at_loss.to(logits.device)]

    scores = score(model, batch, loss_positions, chunk=chunk, forward=forward)
    return {h: torch.cat(v) for h, v in parts.items()}, scores


@torch.no_grad()
def collect(
    model: Transformer,
    batch: Batch,
    hooks: list[str],
    positions: list[int],
    chunk: int = 2048,
) -> dict[str, torch.Tensor]:
    """{hook: [batch, len(positions), features] float32} over a batch's examples, `chunk` per forward."""
    check_hooks(model, hooks)
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    computed = sorted(set(positions))
    for start in range(0, len(batch), chunk):
        part = batch.select(torch.arange(start, min(start + chunk, len(batch)))).to(device_of(model))
        _, cache = _forward_cached(model, part, hooks, computed)
        for h in hooks:
            parts[h].append(_at_positions(h, cache[h], positions, computed).float().cpu())
    return {h: torch.cat(v) for h, v in parts.items()}


def parse_steps(spec: str | None, available: list[int], max_steps: int | None = None) -> list[int]:
    """'last' (default), 'all', 'every:N' (about N evenly spaced), or a comma list of steps."""
    if not available:
        raise GrokscopeError("the run has no checkpoints yet")
    if spec is None or spec == "last":
        return [available[-1]]
    if spec == "all":
        steps = list(available)
    elif spec.startswith("every:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise GrokscopeError(f"bad --step {spec!r}: use every:N with an integer N") from None
        if n < 1:
            raise GrokscopeError("--step every:N needs N >= 1")
        idx = torch.linspace(0, len(available) - 1, min(n, len(available))).round().long().unique()
        steps = [available[i] for i in idx.tolist()]
    else:
        try:
            steps = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            steps = []
        if not steps:
            raise GrokscopeError(
                f"bad --step {spec!r}: use 'last', 'all', 'every:N' or a comma list of steps"
            )
        missing = [s for s in steps if s not in available]
        if missing:
            raise GrokscopeError(
                f"no checkpoint at step {missing[0]}; the run has steps {available[0]}..{available[-1]} "
                f"({len(available)} checkpoints)"
            )
    if max_steps is not None and len(steps) > max_steps:
        idx = torch.linspace(0, len(steps) - 1, max_steps).round().long().unique()
        steps = [steps[i] for i in idx.tolist()]
    return steps


def example_sets(
    task: Task, fit: str = "train", score: str = "test", max_examples: int = 20000, seed: int = 0
) -> tuple[Batch, Batch]:
    """The examples a probe (or tuned lens) is fitted on and scored on.

    Two different eval sets (default: the model's train and test examples) are used as they are;
    the same name twice is split 70/30 at random. `sample:N` draws N fresh examples from the training
    distribution (tasks with a `sample` method, e.g. addition; held-out test examples are skipped).
    Each side keeps at most `max_examples`.
    """
    sets = dict(task.eval_sets())
    for name in (fit, score):
        if name.startswith("sample:"):
            sets[name] = _sample(task, name, seed)
        elif name not in sets:
            raise GrokscopeError(
                f"the task has no example set {name!r}; it has {', '.join(sets)}"
                + (
                    " and sample:N (N fresh training-distribution examples)"
                    if hasattr(task, "sample")
                    else ""
                )
            )
    g = torch.Generator().manual_seed(seed)
    if fit == score:
        data = sets[fit]
        order = torch.randperm(len(data), generator=g)
        n_fit = int(0.7 * len(data))
        fit_b, score_b = data.select(order[:n_fit].sort().values), data.select(order[n_fit:].sort().values)
    else:
        fit_b, score_b = sets[fit], sets[score]
    if fit_b.tokens.shape[1] != score_b.tokens.shape[1]:
        raise GrokscopeError(
            f"example sets {fit!r} and {score!r} have different lengths; probe within one length"
        )

    def cap(b: Batch) -> Batch:
        if len(b) <= max_examples:
            return b
        return b.select(torch.randperm(len(b), generator=g)[:max_examples].sort().values)

    fit_b, score_b = cap(fit_b), cap(score_b)
    if len(fit_b) < 2 or len(score_b) < 1:
        raise GrokscopeError(f"too few examples to fit and score ({len(fit_b)} and {len(score_b)})")
    return fit_b, score_b


def _sample(task: Task, name: str, seed: int) -> Batch:
    """`sample:N`: N fresh examples from the training distribution (tasks with infinite data)."""
    if not hasattr(task, "sample"):
        raise GrokscopeError(f"{name!r}: this task cannot draw fresh examples; use one of its example sets")
    try:
        n = int(name.split(":", 1)[1])
    except ValueError:
        raise GrokscopeError(f"bad example set {name!r}: use sample:N with an integer N") from None
    if n < 2:
        raise GrokscopeError("sample:N needs N >= 2")
    return task.sample(n, seed=10_007 + seed)
