"""The learning-rate schedule: warm-up, then constant, cosine or linear decay."""

import math
import signal

import pytest

from grokscope.config import TrainConfig
from grokscope.errors import GrokscopeError
from grokscope.run import Run
from grokscope.train import resume, train
from grokscope.train.optim import lr_at
from tests.conftest import make_config, wait_for_step
from tests.test_resume import OVERRIDES, STEPS, _assert_same, _final_weights, _start


def _cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(steps=1100, lr=1e-3, warmup_steps=100, **kw)
    cfg.validate()
    return cfg


def test_warmup_then_constant_is_the_papers_default():
    cfg = _cfg()
    assert [lr_at(s, cfg) for s in (0, 50, 100, 1100)] == [0.0, 5e-4, 1e-3, 1e-3]


def test_cosine_and_linear_decay_from_lr_to_lr_min_over_the_run():
    cos, lin = _cfg(lr_schedule="cosine", lr_min=1e-4), _cfg(lr_schedule="linear")
    assert lr_at(50, cos) == pytest.approx(5e-4)  # the warm-up is shared
    assert lr_at(100, cos) == pytest.approx(1e-3)
    assert lr_at(600, cos) == pytest.approx(1e-4 + 9e-4 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_at(350, cos) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(1100, cos) == pytest.approx(1e-4)
    assert lr_at(5000, cos) == pytest.approx(1e-4)  # past the end (a resume that extends): lr_min
    assert [lr_at(s, lin) for s in (100, 600, 1100)] == pytest.approx([1e-3, 5e-4, 0.0])


def test_bad_schedule_settings_are_refused():
    with pytest.raises(GrokscopeError, match="lr_min must be in"):
        _cfg(lr_schedule="cosine", lr_min=2e-3)


def test_a_cosine_run_stopped_and_resumed_matches_an_uninterrupted_one(tmp_path):
    """The schedule is a function of the step, so a resume lands on the very same weights."""
    cosine = ("train.lr_schedule=cosine", "train.lr_min=1e-4")
    reference = tmp_path / "whole"
    train(make_config("tiny", f"train.steps={STEPS}", *OVERRIDES, *cosine), reference, progress=False)
    out = tmp_path / "run"
    proc = _start(out, *cosine)
    wait_for_step(out, 100)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert 100 <= Run(out).load_state()[1]["step"] < STEPS
    resume(out, progress=False)
    _assert_same(_final_weights(out), _final_weights(reference))
    assert Run(out).read_metrics()[-1]["lr"] == pytest.approx(1e-4)
