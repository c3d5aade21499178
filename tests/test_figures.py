"""The figures package and the report: backend policy, figures made from files (and only when stale),
phases written by the analysis, and report sections built from every study's outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grokscope.cli import main
from tests import analysis_fixtures

analysed_tiny = analysis_fixtures.analysed_tiny  # the shared fixture

SRC = str(Path(__file__).parents[1] / "src")


def test_importing_and_rendering_leave_the_matplotlib_backend_alone(tmp_path):
    """In a fresh interpreter with a non-Agg backend chosen (as a notebook chooses inline), importing
    grokscope.figures, loading the registry and saving a figure neither switch it nor import pyplot."""
    code = f"""
import sys, matplotlib
before = matplotlib.get_backend()
import grokscope.figures
from grokscope.registry import FIGURES
from grokscope.figures.progress import loss_and_accuracy
from grokscope.figures.render import save_png
import numpy as np
names = FIGURES.names()
pr = {{"step": np.arange(3), "train_loss": np.ones(3), "test_loss": np.ones(3),
      "train_acc": np.ones(3), "test_acc": np.ones(3)}}
save_png(loss_and_accuracy(pr), __import__("pathlib").Path({str(tmp_path / "f.png")!r}))
print(before, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, len(names))
"""
    env = {**os.environ, "PYTHONPATH": SRC, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    before, after, pyplot, n = out.stdout.split()
    assert before == after == "svg" and pyplot == "False" and int(n) >= 20
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_every_figure_is_registered_with_a_study_and_its_input_files():
    from grokscope.figures import STUDIES, figure_specs

    specs = figure_specs()
    assert {s.study for s in specs} == set(STUDIES)
    for s in specs:
        assert s.title and s.explanation and s.inputs and s.output.endswith(".png")
    assert [s.name for s in figure_specs("progress")][:2] == ["loss_accuracy", "progress_measures"]


def test_analyze_without_figures_still_writes_phases_and_the_snapshot(tiny_run, tmp_path, capsys):
    from grokscope.analysis import load_analysis, run_phases
    from grokscope.analysis.snapshot import read_snapshot
    from grokscope.run import Run

    path = tmp_path / "tiny"
    shutil.copytree(tiny_run, path, ignore=shutil.ignore_patterns("analysis", "figures", "report.html"))
    assert main(["analyze", str(path), "--quiet", "--no-figures"]) == 0
    assert "phases" in capsys.readouterr().out
    phases = json.loads((path / "analysis" / "phases.json").read_text())
    # the rule on the run's densest curves: metrics.jsonl (every evaluation), not only the checkpoints
    assert phases == run_phases(Run.open(path).read_metrics(), load_analysis(path).progress).to_dict()
    assert phases["memorization_end"] is not None and phases["source"] == "metrics"
    snap = read_snapshot(path / "analysis" / "snapshot.safetensors")
    assert snap.step == load_analysis(path).steps[-1] and snap.attn_to_a.shape[1:] == (snap.p, snap.p)
    assert snap.neurons.shape == (snap.p**2, len(snap.neuron_ids))
    assert not (path / "figures").exists()


def test_a_second_report_renders_only_figures_whose_inputs_changed(analysed_tiny):
    path, _ = analysed_tiny
    assert main(["report", str(path), "--quiet"]) == 0
    figures = path / "figures"

    def stamps():
        return {p.name: p.stat().st_mtime_ns for p in figures.glob("*.png")}

    first = stamps()
    assert len(first) == 12  # 11 progress-measure figures + stability.png (figures/stability.py)
    assert main(["report", str(path), "--quiet"]) == 0  # analysis re-run: nothing new, nothing rewritten
    assert stamps() == first
    # a newer key_frequencies.json: exactly the figures made from it are made again
    key = path / "analysis" / "key_frequencies.json"
    newer = max(first.values()) + 1_000_000_000
    os.utime(key, ns=(newer, newer))
    assert main(["report", str(path), "--quiet", "--no-analyze"]) == 0
    from grokscope.figures import figure_specs

    uses_key = {
        f"{s.name}.png" for s in figure_specs("progress") if "analysis/key_frequencies.json" in s.inputs
    }
    changed = {name for name, t in stamps().items() if t != first[name]}
    assert changed == uses_key and "loss_accuracy.png" not in changed


@pytest.fixture(scope="module")
def addition_run(tmp_path_factory) -> Path:
    """A tiny five-digit-addition run (fixed width, 1 layer), trained for a few steps."""
    from grokscope.train import train
    from tests.conftest import make_config

    cfg = make_config(
        "five_digit_addition",
        "model.d_model=32",
        "model.d_head=8",
        "model.d_mlp=64",
        "train.steps=30",
        "train.batch_size=64",
        "train.eval.every=10",
        "train.eval.dense_until=0",
        "train.checkpoint.every=30",
        "task.n_test=100",
        "task.n_stress=5",
        "train.threads=1",
    )
    out = tmp_path_factory.mktemp("addition") / "five"
    train(cfg, out, progress=False)
    return out


def test_report_of_an_addition_run_after_eval_has_its_tables_and_figures(addition_run, capsys):
    assert main(["eval", str(addition_run)]) == 0
    assert main(["eval", str(addition_run), "--digits", "3-5", "--n-per-cell", "3"]) == 0
    assert main(["report", str(addition_run), "--quiet"]) == 0
    page = (addition_run / "report.html").read_text()
    assert "<h2>Addition: accuracy by operand length</h2>" in page
    assert "<h2>Progress measures</h2>" not in page  # not a modular run
    table = (addition_run / "analysis" / "accuracy_by_length.csv").read_text().splitlines()
    cell = next(line for line in table if line.startswith("test,cell,5,5"))
    assert "<tr>" + "".join(f"<td>{c}</td>" for c in cell.split(",")) + "</tr>" in page
    grid = (addition_run / "analysis" / "exact_by_length_3-5.csv").read_text().splitlines()
    assert "".join(f"<td>{c}</td>" for c in grid[-1].split(",")) in page  # the 5+5 cell
    for title in ("Exact match by operand lengths", "Loss per answer position over training"):
        assert f"<h3>{title}</h3>" in page
    # the two addition figures, and the numerical-stability figure every run has (figures/stability.py)
    assert page.count("data:image/png;base64,") == 3
    assert "<h2>Numerical stability</h2>" in page
    assert (addition_run / "figures" / "loss_by_position.png").is_file()
    labels = json.loads((addition_run / "analysis" / "position_labels.json").read_text())
    assert labels[0] == "digit x10^5" and len(labels) == 6


def test_interp_figures_are_made_from_the_tables_and_tensors_the_verbs_wrote(tiny_run, tmp_path):
    path = tmp_path / "tiny"
    shutil.copytree(tiny_run, path, ignore=shutil.ignore_patterns("analysis", "figures", "report.html"))
    hook = "blocks.0.hook_resid_post"
    assert main(["pca", str(path), "--step", "every:20"]) == 0
    assert main(["embspace", str(path)]) == 0
    assert main(["lens", str(path), "--hook", hook, "--max-examples", "100", "--no-tuned"]) == 0
    a = path / "analysis"
    for data in ("pca/W_E_pca.safetensors", "pca/circles.safetensors", "embspace/L0.safetensors"):
        assert (a / data).is_file(), data
    pngs = ["pca/W_E_pca.png", "pca/W_E_explained.png", "pca/circles.png", "embspace/L0_qk.png"]
    pngs += ["embspace/L0_ov.png", "embspace/L0_neurons.png", "lens/lens.png"]
    for png in pngs:
        assert (a / png).read_bytes()[:4] == b"\x89PNG", png
    (a / "pca" / "W_E_pca.png").unlink()  # made again by the report, from the tensors
    assert main(["report", str(path), "--quiet", "--no-analyze"]) == 0
    page = (path / "report.html").read_text()
    for heading in ("PCA across checkpoints", "Embedding-space views", "Logit lens and tuned lens"):
        assert f"<h2>{heading}</h2>" in page
    for title in ("PCA across checkpoints (W_E)", "Key-frequency circles", "Query-key token table (L0)"):
        assert f"<h3>{title}</h3>" in page
    assert "data:image/gif;base64," in page  # the PCA animation the verb saved
    # and the numerical-stability figure every run has (figures/stability.py, made from metrics.jsonl)
    assert page.count("data:image/png;base64,") == len(pngs) + 1
    stamps = {p: (a / p).stat().st_mtime_ns for p in pngs}
    assert main(["report", str(path), "--quiet", "--no-analyze"]) == 0
    assert {p: (a / p).stat().st_mtime_ns for p in pngs} == stamps
