"""Nothing a user types loses data: validate first, swap folders whole, one writer, finite weights."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grokscope.cli import main
from grokscope.config import apply_overrides, from_dict
from grokscope.errors import GrokscopeError
from grokscope.presets import load_preset_or_file
from grokscope.run import Run
from grokscope.train import resume, train

TINY = ["train.steps=20", "train.checkpoint.every=10", "train.eval.every=10", "train.eval.dense_until=0"]


def _config(*overrides):
    return from_dict(apply_overrides(load_preset_or_file("tiny"), [*TINY, *overrides]))


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def small_run(tmp_path) -> Path:
    out = tmp_path / "run"
    train(_config(), out, progress=False)
    return out


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "config.toml").write_text("[task]\nkind = 'modular'\n")
    (tmp_path / "thesis.tex").write_text("chapter one")
    code = main(["train", "tiny", "--steps", "5", "--out", str(tmp_path), "--overwrite", "--quiet"])
    assert code == 2 and "not a grokscope run folder" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "chapter one"


def test_overwrite_with_a_late_failure_leaves_the_old_run_untouched(small_run, monkeypatch):
    before = _hashes(small_run)

    def fail(self, arrays):
        raise GrokscopeError("disk full while writing the split (simulated)")

    monkeypatch.setattr(Run, "write_split", fail)
    with pytest.raises(GrokscopeError, match="simulated"):
        train(_config("seed=3"), small_run, overwrite=True, progress=False)
    assert _hashes(small_run) == before
    assert not [p for p in small_run.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_overwrite_replaces_a_run_whole(small_run):
    (small_run / "analysis").mkdir()
    (small_run / "analysis" / "old.csv").write_text("x")
    train(_config("seed=3", "train.steps=10"), small_run, overwrite=True, progress=False)
    run = Run.open(small_run)
    assert run.config.seed == 3 and run.checkpoint_steps() == [0, 10]
    assert not (small_run / "analysis").exists()


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", "..", "", "bad\0name"])
def test_a_run_name_is_one_folder_name(name):
    with pytest.raises(GrokscopeError, match="single folder name"):
        _config(f"name={json.dumps(name)}")


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.weight_decay=inf", "finite"),
        ("train.momentum=nan", "finite"),
        ("train.state_every_s=-1", "state_every_s"),
        ("train.stop_at_test_loss=-1", "stop_at_test_loss"),
        ("seed=9223372036854775808", "64 bits"),
        ("train.momentum=-1", "momentum"),
        ("task.p=10007", "GB"),
        ("model.d_model=1000000000000", "GB"),
    ],
)
def test_impossible_values_are_refused_before_any_work(override, needle):
    with pytest.raises(GrokscopeError, match=needle):
        _config(override)


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(small_run):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (small_run / ".lock").write_text(str(sleeper.pid))
        before = _hashes(small_run)
        with pytest.raises(
            GrokscopeError, match=f"in use by another grokscope process \\(pid {sleeper.pid}\\)"
        ):
            resume(small_run, steps=30, progress=False)
        with pytest.raises(GrokscopeError, match="in use"):
            train(_config(), small_run, overwrite=True, progress=False)
        assert _hashes(small_run) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    # the process is gone: its lock is stale
    resume(small_run, steps=30, progress=False)
    assert Run.open(small_run).checkpoint_steps()[-1] == 30
    assert not (small_run / ".lock").exists()


def test_a_diverging_run_stops_on_finite_weights(tmp_path):
    out = tmp_path / "nan"
    config = _config("train.optimizer=sgd", "train.lr=1e30", "train.momentum=0.0", "train.warmup_steps=0")
    with pytest.raises(GrokscopeError, match="not finite at step"):
        train(config, out, progress=False)
    run = Run.open(out)
    tensors, info = run.load_state()
    assert all(torch.isfinite(t).all() for t in tensors.values())
    for step in run.checkpoint_steps():
        assert all(torch.isfinite(t).all() for t in run.load_checkpoint(step).values())
    # skipping instead: the run goes to the end, counting what it skipped, weights finite
    skip = _config(
        "train.optimizer=sgd",
        "train.lr=1e30",
        "train.momentum=0.0",
        "train.warmup_steps=0",
        "train.nonfinite='skip'",
    )
    result = train(skip, tmp_path / "skip", progress=False)
    assert result.step == 20 and result.last_metrics["skipped_steps"] > 0
    assert all(torch.isfinite(t).all() for t in Run.open(tmp_path / "skip").load_checkpoint(20).values())


def test_resume_refuses_an_edited_config_unless_accepted(tmp_path, capsys):
    out = tmp_path / "edited"
    train(_config("train.steps=10"), out, progress=False)
    text = (out / "config.toml").read_text()
    (out / "config.toml").write_text(text.replace("lr = 0.005\n", "lr = 0.0005\n"))
    before = _hashes(out)
    assert main(["resume", str(out), "--steps", "20", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.005 -> 0.0005" in err and "--accept-config-change" in err
    assert _hashes(out) == before
    assert main(["resume", str(out), "--steps", "20", "--quiet", "--accept-config-change"]) == 0
    change = json.loads((out / "config_changes.jsonl").read_text().splitlines()[0])
    assert change["step"] == 10 and change["changes"]["train.lr"] == [0.005, 0.0005]


def test_damaged_metrics_are_named_and_resume_keeps_a_copy(small_run, capsys):
    path = small_run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    damaged = "\n".join([lines[0], "\x00\xff junk", '{"no_step": 1}', *lines[1:]]) + "\n"
    path.write_text(damaged)
    with pytest.warns(UserWarning, match="line 2 is not a metrics row.*and 1 more"):
        rows = Run.open(small_run).read_metrics()
    assert [r["step"] for r in rows] == [int(json.loads(x)["step"]) for x in lines]
    resume(small_run, steps=30, progress=False)
    assert (small_run / "metrics.jsonl.damaged").read_text() == damaged
    assert [r["step"] for r in Run.open(small_run).read_metrics()] == [0, 10, 20, 30]


def test_a_checkpoint_linked_to_a_device_is_refused(small_run):
    target = Run(small_run).checkpoint_path(10)
    target.unlink()
    os.symlink("/dev/zero", target)
    with pytest.raises(GrokscopeError, match="not a regular file"):
        Run.open(small_run).model(10)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_ends_in_one_message_and_resume_finishes_bit_exact(small_disk, tmp_path, capsys):
    overrides = [
        "train.steps=60",
        "train.checkpoint.every=5",
        "train.eval.every=5",
        "train.eval.dense_until=0",
    ]
    args = [a for o in overrides for a in ("--set", o)]
    assert main(["train", "tiny", "--out", str(tmp_path / "reference"), "--quiet", *args]) == 0
    out = small_disk / "run"
    assert main(["train", "tiny", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "Traceback" not in err
    run = Run.open(out)
    tensors, info = run.load_state()  # the last state written is whole
    assert 0 <= info["step"] < 60
    for step in run.checkpoint_steps():
        run.load_checkpoint(step)  # every checkpoint present is whole
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert main(["resume", str(out), "--quiet"]) == 0
    reference = Run.open(tmp_path / "reference").load_checkpoint(60)
    resumed = Run.open(out).load_checkpoint(60)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_a_damaged_checkpoint_is_skipped_by_studies_and_named_by_resume(small_run, capsys):
    Run(small_run).checkpoint_path(10).write_bytes(b"\x00" * 40)
    assert main(["analyze", str(small_run), "--quiet", "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint at step 10 cannot be read" in err and "skipping" in err
    import csv

    with open(small_run / "analysis" / "progress.csv") as f:
        assert [int(float(r["step"])) for r in csv.DictReader(f)] == [0, 20]
    assert main(["resume", str(small_run), "--steps", "30", "--quiet"]) == 0
    assert "checkpoints at step 10 cannot be read" in capsys.readouterr().out
