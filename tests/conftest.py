"""Shared fixtures: one trained `tiny` run per test session, reused read-only by many tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from grokscope.config import apply_overrides, from_dict
from grokscope.presets import load_preset_or_file
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
