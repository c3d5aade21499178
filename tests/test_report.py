"""The one-file report, the analyze/report verbs, and the notebook (executed so that it never rots)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grokscope.cli import main
from tests import analysis_fixtures

FIGURES = [
    "loss_accuracy",
    "stability",  # figures/stability.py, with the progress figures
    "progress_measures",
    "fourier_W_E",
    "fourier_W_L",
    "attention",
    "neurons",
    "logit_fourier",
    "neuron_frequencies",
    "cos_coefficients",
    "excluded_by_freq",
    "embedding_over_training",
]

analysed_tiny = analysis_fixtures.analysed_tiny  # the shared fixture


@pytest.mark.slow
def test_report_is_self_contained_with_every_figure(analysed_tiny, capsys):
    path, res = analysed_tiny
    assert main(["report", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "0 computed now" in out  # analysis was cached
    html = (path / "report.html").read_text()
    assert sorted(p.stem for p in (path / "figures").glob("*.png")) == sorted(FIGURES)
    assert html.count("data:image/png;base64,") == len(FIGURES)
    # opens offline: nothing is fetched (no external src/href, no scripts)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<script" not in html
    for text in ("Key frequencies".lower(), "memorization", "circuit formation", "cleanup", "config.toml"):
        assert text in html.lower()
    assert ", ".join(map(str, res.key.key_freqs)) in html
    assert (path / "analysis" / "phases.json").is_file()


def test_report_sections_can_be_added_and_skip_when_absent(analysed_tiny):
    from grokscope import report

    path, _ = analysed_tiny

    def probes(ctx):
        return "<h2>Probes</h2>" if (ctx.path / "analysis" / "probes.csv").is_file() else None

    def extra(ctx):
        return "<h2>Extra section</h2>"

    html = report.build_report(path, sections=[report.section_config, report.section_training, probes, extra])
    assert "Extra section" in html and "Probes" not in html
    assert "Headline numbers" in html


def test_analyze_verb_and_clear_errors(analysed_tiny, tmp_path, capsys):
    path, _ = analysed_tiny
    assert main(["analyze", str(path), "--quiet", "--no-figures"]) == 0
    assert "progress.csv" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["analyze", str(path), "--key-freqs", "99", "--quiet"]) == 2
    assert "key frequencies must be" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_runs_on_the_tiny_run(analysed_tiny):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    path, _ = analysed_tiny
    nb_path = Path(__file__).parents[1] / "notebooks" / "progress_measures.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    assert nb.cells[0].source.startswith("RUN = ")
    nb.cells[0].source = f"RUN = {str(path)!r}"
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = "".join(str(o) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "key frequencies" in outputs and "image/png" in outputs
