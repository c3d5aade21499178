"""Examples exactly as they enter the model, as JSON-ready records (`grokscope data`)."""

from __future__ import annotations

from grokscope.errors import GrokscopeError


def examples(task, split: str, n: int, seed: int):
    """The first `n` examples of a split: the training stream's step-0 batch, or an eval set."""
    import torch

    if split == "train" and getattr(task, "train_ops", None) is None:
        return task.train_batch(0, n, seed)  # infinite data (or a task without a stored train set)
    sets = task.eval_sets()
    if split not in sets:
        raise GrokscopeError(f"unknown --split {split!r}; this task has: {', '.join(sets)}")
    batch = sets[split]
    return batch.select(torch.arange(min(n, len(batch))))


def example_records(task, batch) -> list[dict]:
    """One JSON-ready dict per example: text, token ids, targets, mask and every metadata field."""
    from grokscope.tasks.carries import digits_to_int

    decode = getattr(task, "decode", None)
    names = task.token_names()
    texts = (
        decode(batch.tokens) if decode else [" ".join(names[i] for i in row) for row in batch.tokens.tolist()]
    )
    records = []
    for i in range(len(batch)):
        rec = {
            "text": texts[i],
            "tokens": batch.tokens[i].tolist(),
            "loss_positions": list(task.loss_positions),
            "targets": batch.targets[i].tolist(),
            "mask": batch.mask[i].tolist(),
        }
        for key, value in batch.meta.items():
            rec[key] = (
                value[i].long().tolist() if value.dtype.is_floating_point is False else value[i].tolist()
            )
        if "a_digits" in batch.meta and "a" not in batch.meta:  # operands too long for int64
            for name, key in (("a", "a_digits"), ("b", "b_digits"), ("sum", "sum_digits")):
                rec[name] = str(digits_to_int(batch.meta[key][i].tolist()))
        records.append(rec)
    return records
