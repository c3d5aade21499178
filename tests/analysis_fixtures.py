"""A copy of the session's `tiny_run`, analysed once, shared by the progress and report tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def analysed_tiny(request, tmp_path_factory):
    """(run folder, RunAnalysis): the tiny run (copied: tiny_run stays read-only) after `analyze_run`.

    GROKSCOPE_TINY_RUN=DIR reuses an already trained `tiny` run instead (a shortcut when iterating).
    """
    from grokscope.analysis import analyze_run

    given = os.environ.get("GROKSCOPE_TINY_RUN")
    source = Path(given) if given else request.getfixturevalue("tiny_run")
    path = tmp_path_factory.mktemp("analysed") / "tiny"
    shutil.copytree(source, path, ignore=shutil.ignore_patterns("analysis", "figures", "report.html"))
    return path, analyze_run(path)
