"""Modular arithmetic: labels, split determinism, bad values."""

import numpy as np
import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.tasks.modular import ModularConfig, ModularTask


@pytest.mark.parametrize(
    ("op", "fn"),
    [
        ("add", lambda a, b, p: (a + b) % p),
        ("subtract", lambda a, b, p: (a - b) % p),
        ("quad", lambda a, b, p: (a * a + a * b + b * b) % p),
    ],
)
def test_labels_match_python_arithmetic(op, fn):
    p = 13
    task = ModularTask(ModularConfig(p=p, op=op, frac_train=0.3), seed=0)
    for i, (a, b, eq) in enumerate(task.tokens.tolist()):
        assert (a, b, eq) == (i // p, i % p, p)
        assert task.labels[i].item() == fn(a, b, p)


def test_random_table_is_fixed_by_seed_and_covers_classes():
    t1 = ModularTask(ModularConfig(p=11, op="random"), seed=3)
    t2 = ModularTask(ModularConfig(p=11, op="random"), seed=3)
    t3 = ModularTask(ModularConfig(p=11, op="random"), seed=4)
    assert torch.equal(t1.labels, t2.labels)
    assert not torch.equal(t1.labels, t3.labels)
    assert set(t1.labels.tolist()) == set(range(11))


def test_split_is_deterministic_disjoint_and_complete():
    cfg = ModularConfig(p=23, frac_train=0.3)
    a, b = ModularTask(cfg, seed=0), ModularTask(cfg, seed=0)
    assert torch.equal(a.train_idx, b.train_idx)
    assert len(a.train_idx) == int(0.3 * 23 * 23)
    both = np.concatenate([a.train_idx.numpy(), a.test_idx.numpy()])
    assert sorted(both.tolist()) == list(range(23 * 23))
    other = ModularTask(cfg, seed=1)
    assert not torch.equal(a.train_idx, other.train_idx)
    assert a.use_split(b.split_arrays()) is False  # the same split: nothing changes
    assert a.use_split(other.split_arrays()) is True  # another one: taken as saved
    assert torch.equal(a.train_idx, other.train_idx) and torch.equal(a.test_idx, other.test_idx)
    assert torch.equal(a.eval_sets()["train"].tokens, other.eval_sets()["train"].tokens)
    bad = other.split_arrays()
    bad["test"] = bad["train"][:5]
    with pytest.raises(GrokscopeError, match="appears twice"):
        a.use_split(bad)
    with pytest.raises(GrokscopeError, match="past the largest"):
        a.use_split({"train": np.array([0, 23 * 23]), "test": np.array([1])})


def test_train_batch_is_a_pure_function_of_step():
    task = ModularTask(ModularConfig(p=23, frac_train=0.5), seed=0)
    full = task.train_batch(5, 0, seed=0)
    assert len(full) == len(task.train_idx)
    mb1, mb2 = task.train_batch(7, 32, seed=0), task.train_batch(7, 32, seed=0)
    assert torch.equal(mb1.tokens, mb2.tokens)
    assert not torch.equal(mb1.tokens, task.train_batch(8, 32, seed=0).tokens)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"p": 1}, "task.p must be >= 2"),
        ({"frac_train": 0.0}, "frac_train must be in"),
        ({"frac_train": 1.5}, "frac_train must be in"),
        ({"p": 2, "frac_train": 0.1}, "empty split"),
    ],
)
def test_bad_values_are_rejected(kw, message):
    with pytest.raises(GrokscopeError, match=message):
        ModularConfig(**kw).validate()
