"""Shared fixtures: one trained `tiny` run per test session, reused read-only by many tests."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from grokscope.config import apply_overrides, from_dict
from grokscope.presets import load_preset_or_file
from grokscope.run import Run
from grokscope.train import train


def pytest_configure(config) -> None:
    # The test models are tiny: one thread is as fast as two on an idle machine and far faster
    # on a busy one (oversubscribed intra-op threads spin). Results do not depend on it.
    torch.set_num_threads(1)


def make_config(spec: str = "tiny", *overrides: str):
    return from_dict(apply_overrides(load_preset_or_file(spec), list(overrides)))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The `tiny` preset trained to the end (groks); treat as read-only."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(make_config("tiny"), out, progress=False)
    return out


def wait_for_step(out: Path, step: int, timeout: float = 120) -> None:
    """Wait until the run in `out` (trained by a subprocess) has logged `step`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = Run(out).read_metrics() if (out / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"training never reached step {step}")
