"""The verbs ablate, patch and circuit end to end on a trained tiny modular run (a copy of it)."""

from __future__ import annotations

import json
import shutil

import pytest

from grokscope.cli import main
from grokscope.interp.io import read_csv


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("interv") / "tiny"
    shutil.copytree(tiny_run, out)
    return out


@pytest.mark.slow
def test_ablate_key_frequency_directions_against_random(run_dir, capsys):
    rc = main(["ablate", str(run_dir), "--hook", "hook_embed", "--positions", "0,1", "--directions", "key_freqs",
               "--controls", "3", "--n", "300"])  # fmt: skip
    assert rc == 0
    (row,) = read_csv(run_dir / "analysis/interventions/ablation.csv")
    assert row["clean_acc"] > 0.99
    assert row["acc"] < 0.3  # the key-frequency subspace of W_E carries the answer ...
    assert row["control_acc"] > 0.9  # ... random subspaces of the same dimension do not
    assert "6-dim subspace" in capsys.readouterr().out


@pytest.mark.slow
def test_patch_and_circuit_with_formation(run_dir):
    assert main(["patch", str(run_dir), "--n", "64"]) == 0
    d = run_dir / "analysis/interventions"
    rows = read_csv(d / "patching.csv")
    assert {r["mode"] for r in rows} == {"denoising", "noising"}
    # changing a only reaches the answer through position 0: patching resid_pre0 there restores it all
    den = {(r["node"], r["position"]): r["exact_effect"] for r in rows if r["mode"] == "denoising"}
    assert den[("resid_pre0", 0)] == pytest.approx(1.0, abs=1e-6)
    assert den[("resid_pre0", 1)] == pytest.approx(0.0, abs=1e-6)
    summary = json.loads((d / "patching_summary.json").read_text())
    assert all(-1 <= s["node_corr"] <= 1 and -1 <= s["edge_corr"] <= 1 for s in summary["rows"])
    assert (d / "patching.png").is_file()

    assert main(["circuit", str(run_dir), "--n", "64", "--random-circuits", "2", "--all-checkpoints",
                 "--max-checkpoints", "4"]) == 0  # fmt: skip
    c = json.loads((d / "circuit.json").read_text())
    assert c["faithfulness"] >= 0.9 and 0 < c["size"] <= c["n_edges"]
    assert all(e.split("->")[0] in c["senders"] for e in c["edges"])
    steps = {r["step"] for r in read_csv(d / "formation.csv")}
    assert len(steps) == 4
    assert (d / "circuit.png").is_file() and (d / "formation.png").is_file()

    from grokscope.report import build_report

    html = build_report(run_dir)
    assert "Interventions: what the model uses" in html and "Circuit formation across checkpoints" in html


def test_user_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["ablate", str(run_dir)]) == 2
    assert "name a hook to ablate" in capsys.readouterr().err
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"clean": [1, 2]}\n')
    assert main(["patch", str(run_dir), "--pairs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "Traceback" not in err
    assert main(["ablate", str(run_dir), "--hook", "blocks.0.hook_mlp_outt"]) == 2
    assert "did you mean" in capsys.readouterr().err
