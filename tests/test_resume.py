"""Exact resume: stopped by Ctrl-C, SIGTERM or kill -9 at any moment, a run ends bit-identical."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grokscope.run import Run
from grokscope.train import resume, train
from tests.conftest import make_config, wait_for_step

STEPS = 400
# One thread so that the subprocess and this process compute matmuls identically.
OVERRIDES = ("train.threads=1", "train.checkpoint.every=100", "train.eval.every=20")


def _final_weights(path: Path) -> dict[str, torch.Tensor]:
    return Run.open(path).load_checkpoint(STEPS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "run"
    train(make_config("tiny", f"train.steps={STEPS}", *OVERRIDES), out, progress=False)
    return _final_weights(out)


def _start(out: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "grokscope",
        "train",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        "--steps",
        str(STEPS),
    ]
    for o in (*OVERRIDES, *extra):
        args += ["--set", o]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_same(weights, reference):
    assert weights.keys() == reference.keys()
    for name in reference:
        assert torch.equal(weights[name], reference[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_state_and_resume_is_bit_exact(tmp_path, reference, sig):
    out = tmp_path / "run"
    proc = _start(out)
    wait_for_step(out, 100)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "state saved" in err and "grokscope resume" in err and "Traceback" not in err
    stopped_at = Run(out).load_state()[1]["step"]
    assert 100 <= stopped_at < STEPS
    resume(out, progress=False)
    _assert_same(_final_weights(out), reference)
    steps = [r["step"] for r in Run(out).read_metrics()]
    assert steps == sorted(set(steps)), "metrics rows are neither duplicated nor out of order"


@pytest.mark.slow
def test_kill_9_mid_write_then_resume_is_bit_exact(tmp_path, reference):
    """state_every_s=0 writes state every step, so SIGKILL lands during writes; twice."""
    out = tmp_path / "run"
    for kill_after in (0.8, 1.5):
        proc = _start(out, "train.state_every_s=0.0") if not out.exists() else None
        if proc is None:
            args = [sys.executable, "-m", "grokscope", "resume", str(out), "--quiet"]
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_step(out, 20)
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert Run(out).load_state()[1]["step"] < STEPS
    resume(out, progress=False)  # a temp file left by the kill never breaks a resume
    _assert_same(_final_weights(out), reference)


def test_resume_extends_a_finished_run(tmp_path, reference):
    out = tmp_path / "run"
    train(make_config("tiny", "train.steps=150", *OVERRIDES), out, progress=False)
    result = resume(out, steps=STEPS, progress=False)
    assert result.step == STEPS
    _assert_same(_final_weights(out), reference)
    assert Run(out).config.train.steps == STEPS


def test_resuming_a_finished_run_does_nothing(tmp_path):
    out = tmp_path / "run"
    train(make_config("tiny", "train.steps=30"), out, progress=False)
    before = (out / "metrics.jsonl").read_text()
    result = resume(out, progress=False)
    assert result.step == 30 and result.reason == "steps"
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_continues_past_an_early_stop_to_the_asked_steps(tmp_path):
    # the demo's case: trained until a stop_at threshold, then `resume --steps N` where N is the
    # config's own step budget must still train on to N, not report the early stop again
    out = tmp_path / "run"
    first = train(make_config("tiny", "train.stop_at_test_acc=0.5"), out, progress=False)
    assert first.reason == "stop_at_test_acc" and first.step < 2000
    result = resume(out, steps=2000, progress=False)
    assert result.step == 2000 and result.reason == "steps"
    assert resume(out, progress=False).step == 2000
