"""Sweeps: spec parsing and its errors, failing trials, resume after a crash, summary, Ray engine."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.files import read_tensors
from grokscope.run import Run
from grokscope.sweep.folder import SweepFolder
from grokscope.sweep.runner import run_sweep
from grokscope.sweep.spec import load_spec, trial_name
from grokscope.sweep.summarize import run_figures, write_summary
from grokscope.train import train

# Few steps, few evaluations: the trials of these tests spend their time starting Python.
FAST = '["train.eval.dense_until=0", "train.eval.every=20"]'


def write_spec(tmp_path: Path, body: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


# ----------------------------------------------------------------------------- spec


def test_grid_times_seeds_names_and_configs(tmp_path):
    spec = load_spec(
        str(
            write_spec(
                tmp_path,
                """
[sweep]
name = "s"
base = "tiny"
seeds = 2
set = ["train.steps=60"]
[grid.task]
frac_train = [0.3, 0.5]
[grid]
"train.lr" = [1e-3, 5e-3]
""",
            )
        )
    )
    assert len(spec.trials) == 8
    assert spec.swept_keys == ["task.frac_train", "train.lr"]
    first = spec.trials[0]
    assert first.name == "frac_train=0.3__lr=0.001__seed=0"
    assert first.config["task"]["frac_train"] == 0.3 and first.config["train"]["lr"] == 1e-3
    assert first.config["train"]["steps"] == 60 and first.config["seed"] == 0
    assert first.config["name"] == first.name
    assert len({t.name for t in spec.trials}) == 8


def test_list_entries_cli_overrides_and_presets(tmp_path):
    path = write_spec(
        tmp_path,
        """
[sweep]
base = "tiny"
[[trials]]
"model.pos" = "none"
[[trials]]
model = { pos = "learned", d_model = 32 }
name = "small"
""",
    )
    spec = load_spec(str(path), extra_set=["train.steps=5"], seeds=[3])
    assert [t.name for t in spec.trials] == ["pos=none__seed=3", "small"]
    assert spec.trials[1].config["model"]["d_model"] == 32
    assert all(t.config["train"]["steps"] == 5 and t.config["seed"] == 3 for t in spec.trials)
    frac = load_spec("frac_train_sweep")
    assert len(frac.trials) == 10 and frac.trials[0].config["task"]["p"] == 113
    assert len(load_spec("seeds", seeds=3, base="mainline").trials) == 3


def test_names_use_full_keys_where_last_parts_clash():
    name = trial_name(
        {"train.eval.every": 5, "train.checkpoint.every": 7},
        None,
        ["train.eval.every", "train.checkpoint.every"],
    )
    assert name == "train.eval.every=5__train.checkpoint.every=7"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[sweep]\nbase = "tiny"\n[grid]\n"train.lrr" = [1, 2]', "unknown key `train.lrr`"),
        ('[sweep]\nbase = "tiny"\n[grid]\n"task.frac_train" = [2.0]', "frac_train must be in (0, 1)"),
        ('[sweep]\nbase = "tiny"\nsedes = 3', "did you mean `sweep.seeds`"),
        ('[sweep]\nbase = "tiny"\n[grid]\n', "[grid] is empty"),
        ('[sweep]\nbase = "tiny"\n[grid]\n"train.lr" = []', "grid.train.lr is an empty list"),
        ('[sweep]\nbase = "tiny"\n[grid]\n"train.lr" = 0.1', "must be a list"),
        ('trials = []\n[sweep]\nbase = "tiny"', "trials is empty"),
        ('[sweep]\nbase = "tiny"\ntrials = []', "unknown key `sweep.trials`"),
        (
            '[sweep]\nbase = "tiny"\n[[trials]]\n"train.lr" = 1e-3\n[[trials]]\n"train.lr" = 0.001',
            "share the folder name",
        ),
        (
            '[sweep]\nbase = "tiny"\n[[trials]]\nname = "a"\n[[trials]]\nname = "a"\n"train.lr" = 0.1',
            "share the folder name",
        ),
        ('[sweep]\nbase = "tiny"\nseeds = 0', "sweep.seeds must be >= 1"),
        ('[sweep]\nbase = "tiny"\nseeds = [1, 1]', "repeated seed"),
        ('[sweep]\nbase = "tiny"\nseeds = 2\n[grid]\nseed = [1, 2]', "also given as sweep.seeds"),
        ("[sweep]\nname = 'x'", "missing sweep.base"),
        ('[sweep]\nbase = "no_such_preset"', "unknown preset"),
        ('[sweep]\nbase = "tiny"\nset = ["train.lr"]', "expected KEY=VALUE"),
        ('[sweeep]\nbase = "tiny"', "unknown key `sweeep`"),
        ('[sweep]\nbase = "tiny"\n[[trials]]\nname = "a/b"', "trial name"),
        ('[sweep]\nbase = "tiny"\nname = "my sweep"', "sweep.name must be a folder name"),
    ],
)
def test_spec_errors(tmp_path, body, message):
    with pytest.raises(GrokscopeError) as err:
        load_spec(str(write_spec(tmp_path, body)))
    assert message in str(err.value)


def test_unknown_spec_file_or_preset():
    with pytest.raises(GrokscopeError, match="unknown sweep preset"):
        load_spec("no_such_sweep")
    with pytest.raises(GrokscopeError, match="no such sweep spec file"):
        load_spec("missing/spec.toml")


# ----------------------------------------------------------------------------- running


def _table(sweep_dir: Path) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="") as f:
        return {r["trial"]: r for r in csv.DictReader(f)}


def _finished(run_dir: Path) -> bool:
    state = Run(run_dir).load_state() if (run_dir / "config.toml").is_file() else None
    return bool(state and state[1]["finished_reason"])


@pytest.mark.slow
def test_failing_trial_is_recorded_and_the_rest_complete(tmp_path):
    spec = load_spec(
        str(
            write_spec(
                tmp_path,
                f"""
[sweep]
name = "fails"
base = "tiny"
set = {FAST[:-1]}, "train.steps=40"]
[[trials]]
"task.frac_train" = 0.5
[[trials]]
"model.n_ctx" = 2
name = "broken"
[[trials]]
"task.frac_train" = 0.6
""",
            )
        )
    )
    out = tmp_path / "sweep"
    result = run_sweep(spec, out, workers=2, progress=False)
    table = _table(out)
    assert result.names("failed") == ["broken"]
    assert table["broken"]["status"] == "failed" and "n_ctx" in table["broken"]["error"]
    assert "n_ctx" in (out / "logs" / "broken.log").read_text()
    for name in ("frac_train=0.5", "frac_train=0.6"):
        assert table[name]["status"] == "done" and table[name]["step"] == "40"
        assert _finished(out / "runs" / name)

    # the summary lists every trial, the failed one with its error and no figures
    path, rows = write_summary(out)
    by_name = {r["trial"]: r for r in rows}
    assert by_name["broken"]["status"] == "failed" and "final_step" not in by_name["broken"]
    assert by_name["frac_train=0.5"]["final_step"] == 40
    assert path.read_text().splitlines()[0].startswith("trial,task.frac_train,model.n_ctx,seed,status")

    # the CLI says so in its exit code; the finished trials are skipped, the broken one retried
    from grokscope.cli import main

    spec_file = tmp_path / "spec.toml"
    assert main(["sweep", str(spec_file), "--out", str(out), "--quiet"]) == 1


@pytest.mark.slow
def test_resume_after_killing_the_sweep_finishes_exactly_the_missing_trials(tmp_path):
    """Kill driver and trials at once (a crash); the re-run skips finished, resumes partial ones."""
    spec_file = write_spec(
        tmp_path,
        f"""
[sweep]
name = "crash"
base = "tiny"
set = {FAST}
[[trials]]
"train.steps" = 40
[[trials]]
"train.steps" = 1000
[[trials]]
"train.steps" = 41
""",
    )
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "grokscope", "sweep", str(spec_file), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    long_run = out / "runs" / "steps=1000"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until the short trial finished and the long one saved a state
            state = Run(long_run).load_state() if (long_run / "state/state.safetensors").is_file() else None
            if _finished(out / "runs" / "steps=40") and state and state[1]["step"] >= 100:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the sweep did not get far enough in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every trial, no chance to save anything
        proc.wait()
    finished_before = {p.name for p in (out / "runs").iterdir() if _finished(p)}
    assert "steps=40" in finished_before and "steps=1000" not in finished_before
    stamp = (out / "runs" / "steps=40" / "state" / "state.safetensors").stat().st_mtime_ns

    spec = load_spec(str(spec_file))
    result = run_sweep(spec, out, workers=2, progress=False)
    assert sorted(result.skipped) == sorted(finished_before)
    assert all(r["status"] == "done" for r in result.rows.values())
    assert all(_finished(out / "runs" / t.name) for t in spec.trials)
    assert (out / "runs" / "steps=40" / "state" / "state.safetensors").stat().st_mtime_ns == stamp
    steps = [r["step"] for r in Run(long_run).read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 1000  # no duplicated or missing evaluations

    # resuming retraced the uninterrupted run exactly
    from grokscope.config import from_dict

    fresh = tmp_path / "fresh"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, as the sweep ran its trials
    try:
        train(from_dict(spec.trials[1].config), fresh, progress=False)
    finally:
        torch.set_num_threads(threads)
    a = read_tensors(Run(fresh).checkpoint_path(1000))
    b = read_tensors(Run(long_run).checkpoint_path(1000))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """`tiny` trained for 40 steps (a finished run folder in a second or two)."""
    from tests.conftest import make_config

    out = tmp_path_factory.mktemp("short") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine, more threads than cores crawl
    try:
        train(make_config("tiny", "train.steps=40", "name=short"), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def test_existing_folder_with_another_config_is_refused(tmp_path, short_run):
    out = tmp_path / "sweep"
    shutil.copytree(short_run, out / "runs" / "short")
    (out / "sweep.json").write_text("{}")
    body = '[sweep]\nbase = "tiny"\nset = ["train.steps=50"]\n[[trials]]\nname = "short"'
    spec = load_spec(str(write_spec(tmp_path, body)))
    with pytest.raises(GrokscopeError, match="train.steps: 40 there, 50 now"):
        run_sweep(spec, out, progress=False)
    with pytest.raises(GrokscopeError, match="not a sweep folder"):
        run_sweep(spec, tmp_path / "sweep" / "runs", progress=False)


def test_finished_trials_are_skipped_and_summarized(tmp_path, short_run):
    """A sweep whose only trial is already trained: nothing runs; the summary reads the run."""
    out = tmp_path / "sweep"
    body = '[sweep]\nname = "one"\nbase = "tiny"\nset = ["train.steps=40"]\n[[trials]]\nname = "short"'
    spec = load_spec(str(write_spec(tmp_path, body)))
    run_dir = out / "runs" / "short"
    shutil.copytree(short_run, run_dir)
    (out / "sweep.json").write_text("{}")
    result = run_sweep(spec, out, progress=False)
    assert result.skipped == ["short"] and result.rows["short"]["status"] == "done"
    assert SweepFolder(out).manifest()["trials"] == [{"name": "short", "overrides": {}, "seed": None}]
    assert _table(out)["short"]["status"] == "done"

    # headline figures, on metrics written by hand so that every number is known
    rows = [
        {"step": 0, "train_loss": 4.0, "test_loss": 4.0, "train_acc": 0.0, "test_acc": 0.0},
        {"step": 10, "train_loss": 0.01, "test_loss": 9.0, "train_acc": 1.0, "test_acc": 0.2},
        {"step": 20, "train_loss": 0.02, "test_loss": 0.05, "train_acc": 1.0, "test_acc": 0.995},
        {"step": 30, "train_loss": 0.03, "test_loss": 0.08, "train_acc": 1.0, "test_acc": 0.99},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "analysis").mkdir(exist_ok=True)
    from grokscope.analysis.phases import Phases

    phases = Phases(memorization_end=10, cleanup_start=15, cleanup_end=20, grok_step=20, last_step=30)
    (run_dir / "analysis" / "phases.json").write_text(json.dumps(phases.to_dict()))
    (run_dir / "analysis" / "key_frequencies.json").write_text(json.dumps({"key_freqs": [4, 11], "step": 30}))
    figures = run_figures(run_dir)
    assert (
        figures["grok_step"] == 20 and figures["fit_step"] == 10 and figures["test_loss_below_0.1_step"] == 20
    )
    assert (
        figures["final_step"] == 30
        and figures["final_test_acc"] == 0.99
        and figures["best_test_acc"] == 0.995
    )
    assert figures["best_train_loss"] == 0.01 and figures["final_train_loss"] == 0.03
    assert figures["best_test_loss"] == 0.05 and figures["final_test_loss"] == 0.08
    assert figures["key_frequencies"] == "4 11"
    assert (figures["memorization_end"], figures["cleanup_start"], figures["cleanup_end"]) == (10, 15, 20)
    (run_dir / "analysis" / "phases.json").write_text("{not json")
    assert "cleanup_end" not in run_figures(run_dir)

    from grokscope.cli import main

    assert main(["summarize", str(out), "--x", "seed", "--y", "best_test_loss"]) == 0
    assert (out / "summary.csv").is_file() and (out / "best_test_loss_vs_seed.png").is_file()


def test_summary_plot_against_an_override(tmp_path):
    from grokscope.figures.sweeps import plot_summary

    rows = [
        {"trial": f"f{f}s{s}", "task.frac_train": f, "seed": s, "grok_step": g}
        for f, s, g in [(0.3, 0, 900), (0.3, 1, 1100), (0.5, 0, 400), (0.5, 1, None)]
    ]
    path = plot_summary(rows, "task.frac_train", "grok_step", tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(GrokscopeError, match="--y 'grokk_step' is not a column"):
        plot_summary(rows, "task.frac_train", "grokk_step", tmp_path / "q.png")


def test_report_of_a_sweep_has_its_summary_table_and_plot(tmp_path, short_run):
    """`grokscope report SWEEP_DIR`: the summary (written first) as a table, the default plot."""
    out = tmp_path / "sweep"
    trials = []
    grok = {"f0.3": 20, "f0.5": None}
    for name, frac in (("f0.3", 0.3), ("f0.5", 0.5)):
        shutil.copytree(short_run, out / "runs" / name)
        rows = [
            {"step": 0, "train_loss": 4.0, "test_loss": 4.5, "train_acc": 0.0, "test_acc": 0.0},
            {
                "step": 20,
                "train_loss": 0.0125,
                "test_loss": 0.0375 if grok[name] else 7.25,
                "train_acc": 1.0,
                "test_acc": 0.995 if grok[name] else 0.5,
            },
        ]
        (out / "runs" / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        trials.append({"name": name, "overrides": {"task.frac_train": frac}, "seed": 0})
    manifest = {
        "name": "fracs",
        "base": "tiny",
        "set": [],
        "swept_keys": ["task.frac_train"],
        "trials": trials,
    }
    (out / "sweep.json").write_text(json.dumps(manifest))
    from grokscope.cli import main

    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<h1>grokscope report: sweep fracs</h1>" in page
    assert "<h2>Sweep</h2>" in page and "<h2>Sweep summary</h2>" in page
    with open(out / "summary.csv", newline="") as f:
        summary = {r["trial"]: r for r in csv.DictReader(f)}
    assert summary["f0.3"]["grok_step"] == "20" and summary["f0.5"]["grok_step"] == ""
    for row in summary.values():  # every row of the table, its numbers as in summary.csv
        cells = [row[k] for k in ("trial", "task.frac_train", "seed", "final_test_loss", "best_test_acc")]
        assert all(f"<td>{c}</td>" in page for c in cells)
    assert "<td>0.0375</td>" in page and "<td>7.25</td>" in page
    assert "<h3>Grokking step against the swept setting (task_frac_train)</h3>" in page
    plot = out / "grok_step_vs_task_frac_train.png"
    assert plot.read_bytes()[:4] == b"\x89PNG" and page.count("data:image/png;base64,") == 1
    made = plot.stat().st_mtime_ns
    assert main(["report", str(out)]) == 0  # nothing changed: summary.csv and the plot stay
    assert plot.stat().st_mtime_ns == made


# ----------------------------------------------------------------------------- ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_cluster_on_loopback_gives_the_same_run_folders_as_local(tmp_path):
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.is_file():
        pytest.skip("the ray command is not installed beside this Python")
    spec = load_spec(
        str(
            write_spec(
                tmp_path,
                f'[sweep]\nname = "r"\nbase = "tiny"\nseeds = 2\nset = {FAST[:-1]}, "train.steps=50"]',
            )
        )
    )
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:  # wait until the head answers
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert head.poll() is None and time.time() < deadline, "ray start --head failed"
                time.sleep(0.5)
        result = run_sweep(spec, tmp_path / "ray", engine="ray", address=address, progress=False)
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
    assert all(r["status"] == "done" for r in result.rows.values()), result.rows
    run_sweep(spec, tmp_path / "local", workers=2, progress=False)
    for trial in spec.trials:
        a, b = (
            Run(tmp_path / "ray" / "runs" / trial.name),
            Run(tmp_path / "local" / "runs" / trial.name),
        )
        assert a.checkpoint_steps() == b.checkpoint_steps() == [0, 50]
        for step in a.checkpoint_steps():
            ta, tb = a.load_checkpoint(step), b.load_checkpoint(step)
            assert all(torch.equal(ta[k], tb[k]) for k in ta)
        drop = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
        assert drop(a.read_metrics()) == drop(b.read_metrics())
        assert a.config.to_dict() == b.config.to_dict()
