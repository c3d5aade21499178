"""Every bad input ends in one clear message, a non-zero exit, no traceback, and nothing lost."""

import errno
import subprocess
import sys

import pytest
import tomli_w

from grokscope import files as files_module
from grokscope.cli import main
from grokscope.errors import GrokscopeError
from grokscope.run import Run
from grokscope.train import resume, train
from tests.conftest import make_config


@pytest.fixture
def small_run(tmp_path):
    out = tmp_path / "run"
    train(make_config("tiny", "train.steps=20", "train.checkpoint.every=10"), out, progress=False)
    return out


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_cli_reports_a_bad_key_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "grokscope", "train", "tiny", "--set", "train.lrr=1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "grokscope: bad config: unknown key `train.lrr` (did you mean `train.lr`?)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nope"], "unknown preset 'nope'"),
        (["train", "tiny", "--set", "task.p=1"], "task.p must be >= 2"),
        (["train", "tiny", "--set", "train.lr=abc"], "`train.lr` must be float"),
        (["resume", "/nonexistent/run"], "no such run folder"),
    ],
)
def test_cli_messages(capsys, argv, message):
    code, err = _cli(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_existing_output_folder_is_refused_and_kept(small_run, capsys):
    before = (small_run / "metrics.jsonl").read_text()
    code, err = _cli(capsys, "train", "tiny", "--out", str(small_run), "--steps", "5")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (small_run / "metrics.jsonl").read_text() == before
    code, _ = _cli(capsys, "train", "tiny", "--out", str(small_run), "--steps", "5", "--overwrite", "--quiet")
    assert code == 0 and Run.open(small_run).checkpoint_steps()[-1] == 5


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    code, err = _cli(capsys, "train", "tiny", "--out", str(tmp_path), "--overwrite")
    assert code == 2 and "not a grokscope run folder" in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_not_a_run_folder(tmp_path):
    with pytest.raises(GrokscopeError, match="not a grokscope run folder"):
        Run.open(tmp_path)


def test_run_folder_from_another_version(small_run):
    raw = Run(small_run).raw_config()
    raw["meta"]["format_version"] = 99
    (small_run / "config.toml").write_text(tomli_w.dumps(raw))
    with pytest.raises(GrokscopeError, match="format 99"):
        Run.open(small_run)


def test_missing_and_corrupt_checkpoints(small_run):
    run = Run.open(small_run)
    with pytest.raises(GrokscopeError, match="no checkpoint at step 7"):
        run.load_checkpoint(7)
    path = run.checkpoint_path(10)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GrokscopeError, match="corrupt"):
        Run.open(small_run).model(10)
    path.write_bytes(b"\x80\x04pickle-looking junk" * 10)
    with pytest.raises(GrokscopeError, match="corrupt"):
        run.load_checkpoint(10)


def test_checkpoint_of_another_model(small_run, tmp_path):
    other = tmp_path / "other"
    train(make_config("tiny", "train.steps=1", "model.d_model=32"), other, progress=False)
    src = Run(other).checkpoint_path(1)
    Run(small_run).checkpoint_path(10).write_bytes(src.read_bytes())
    with pytest.raises(GrokscopeError, match="has shape"):
        Run.open(small_run).model(10)


def test_corrupt_state_file(small_run):
    state = small_run / "state" / "state.safetensors"
    state.write_bytes(b"garbage")
    with pytest.raises(GrokscopeError, match="corrupt"):
        resume(small_run, steps=40, progress=False)


def test_full_disk_loses_nothing(small_run, monkeypatch):
    run = Run.open(small_run)
    before = run.checkpoint_path(10).read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", full)
    with pytest.raises(GrokscopeError, match="disk full"):
        run.save_checkpoint(10, {"x": __import__("torch").zeros(3)})
    assert run.checkpoint_path(10).read_bytes() == before
    assert not list(small_run.rglob(".*.tmp"))


def test_resume_to_fewer_steps_than_done(small_run):
    with pytest.raises(GrokscopeError, match="already at step 20"):
        resume(small_run, steps=10, progress=False)
