"""The Run object: one reader of a run folder, whose saved split is the truth for every verb."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from grokscope.errors import GrokscopeError
from grokscope.run import Run, RunNote
from grokscope.tasks import build_task
from grokscope.tasks.induction import InductionConfig


def _copy_last_checkpoint(src, dst):
    """A copy of run `src` with only its last checkpoint (so analysis stays quick)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("analysis", "figures", "report.html"))
    steps = Run.open(dst).checkpoint_steps()
    for step in steps[:-1]:
        Run(dst).checkpoint_path(step).unlink()
    return dst


def test_analysis_reads_the_saved_split_not_a_fresh_draw(tiny_run, tmp_path):
    from grokscope.analysis import analyze_run

    same = _copy_last_checkpoint(tiny_run, tmp_path / "same")
    swapped = _copy_last_checkpoint(tiny_run, tmp_path / "swapped")
    split = load_file(str(swapped / "split.safetensors"))
    save_file({"train": split["test"], "test": split["train"]}, str(swapped / "split.safetensors"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = analyze_run(same).progress
        b = analyze_run(swapped).progress
    notes = [str(w.message) for w in caught if issubclass(w.category, RunNote)]
    assert len(notes) == 1 and "swapped" in notes[0] and "using the saved split" in notes[0]
    # the train set is now the old test set: losses and accuracies swap with it
    assert b["train_loss"][-1] == pytest.approx(a["test_loss"][-1], rel=1e-9)
    assert b["test_loss"][-1] == pytest.approx(a["train_loss"][-1], rel=1e-9)
    assert a["train_loss"][-1] != pytest.approx(a["test_loss"][-1], rel=1e-3)
    assert b["excluded_loss_train"][-1] == pytest.approx(a["excluded_loss_test"][-1], rel=1e-9)


def test_run_task_and_models(tiny_run):
    run = Run.open(tiny_run)
    assert run.task is run.task  # built once
    saved = run.read_split()
    assert np.array_equal(run.task.train_idx.numpy(), saved["train"])
    steps = run.checkpoint_steps()
    seen = [(step, model.embed.W_E.sum().item()) for step, model in run.models(steps[-2:])]
    assert [s for s, _ in seen] == steps[-2:]
    assert seen[-1][1] == pytest.approx(run.model().embed.W_E.sum().item())
    assert not run.model().training


def test_an_invalid_saved_split_is_one_clear_error(tiny_run, tmp_path):
    bad = _copy_last_checkpoint(tiny_run, tmp_path / "bad")
    save_file({"train": np.array([0, 1, 2]), "test": np.array([2, 3])}, str(bad / "split.safetensors"))
    with pytest.raises(GrokscopeError, match="is not a split of this run's task.*appears twice"):
        _ = Run.open(bad).task
    assert (bad / "split.safetensors").is_file()  # nothing changed


def test_generated_tasks_rebuild_exactly_from_their_saved_split():
    cfg = InductionConfig(vocab=20, seq_len=16, sub_len=4, n_train=60, n_test=30)
    a, b = build_task(cfg, 0), build_task(cfg, 1)
    assert b.use_split(a.split_arrays()) is True
    for name in ("train", "test"):
        x, y = a.eval_sets()[name], b.eval_sets()[name]
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.targets, y.targets)
        assert torch.equal(x.mask, y.mask) and x.meta.keys() == y.meta.keys()
        assert all(torch.equal(x.meta[k], y.meta[k]) for k in x.meta)
    assert torch.equal(a.train_batch(3, 8, 0).tokens, b.train_batch(3, 8, 0).tokens)
    # an older file (tokens only) of the very split drawn here is accepted as it is
    tokens_only = {k: v for k, v in a.split_arrays().items() if k.endswith("_tokens")}
    assert build_task(cfg, 0).use_split(tokens_only) is False
    with pytest.raises(GrokscopeError, match="only the test tokens"):
        build_task(cfg, 1).use_split(tokens_only)


def test_resume_refuses_a_folder_with_checkpoints_but_no_state(tiny_run, tmp_path):
    run_dir = _copy_last_checkpoint(tiny_run, tmp_path / "nostate")
    shutil.rmtree(run_dir / "state")
    before = (run_dir / "metrics.jsonl").read_bytes()
    from grokscope.train import resume

    with pytest.raises(GrokscopeError, match="no training state"):
        resume(run_dir, steps=3000, progress=False)
    assert (run_dir / "metrics.jsonl").read_bytes() == before
    assert Run.open(run_dir).checkpoint_steps() == [2000]
