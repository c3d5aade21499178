"""Stacked training: many models in one process, each folder as if trained alone."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.run import Run
from grokscope.train import resume, train
from grokscope.train.stacked import (
    StackedTrainer,
    check_stackable,
    parse_seeds,
    resume_stacked,
    seed_configs,
    seed_folders,
    train_stacked,
)
from tests.conftest import make_config, wait_for_step

STEPS = 100
# one thread: the subprocesses below and this process then compute matmuls identically
BASE = ("train.threads=1", f"train.steps={STEPS}", "train.eval.every=10", "train.checkpoint.every=50")
SEEDS = [0, 1, 2, 3]


def _config(*overrides: str):
    return make_config("tiny", *BASE, *overrides)


def _assert_rows_close(stacked: Path, single: Path, rel: float = 1e-5) -> None:
    a, b = Run.open(stacked).read_metrics(), Run.open(single).read_metrics()
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key, want in rb.items():
            if key == "elapsed_s" or not isinstance(want, float):
                continue
            assert abs(ra[key] - want) <= rel * max(abs(want), 1e-12), (stacked, ra["step"], key)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def singles(tmp_path_factory) -> dict[int, Path]:
    """Seeds 0-3 of tiny at batch 64, each trained alone by the single-model trainer."""
    root = tmp_path_factory.mktemp("singles")
    out = {}
    for seed in SEEDS:
        out[seed] = root / f"s{seed}"
        train(_config(f"seed={seed}", "train.batch_size=64"), out[seed], progress=False)
    return out


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_stacked_seeds_match_single_runs(tmp_path, singles, mode, monkeypatch):
    monkeypatch.setattr(StackedTrainer, "vmap_chunk", 3)  # 4 models: a chunk of 3 and one of 1
    configs = seed_configs(_config("train.batch_size=64"), SEEDS)
    outs = seed_folders(configs, tmp_path)
    assert [p.name for p in outs] == [f"tiny-s{s}" for s in SEEDS]
    results = train_stacked(configs, outs, progress=False, mode=mode)
    assert [r.step for r in results] == [STEPS] * 4 and {r.reason for r in results} == {"steps"}
    for seed, out in zip(SEEDS, outs, strict=True):
        _assert_rows_close(out, singles[seed])
        run = Run.open(out)
        assert run.config.seed == seed and run.checkpoint_steps() == [0, 50, 100]
        single = Run.open(singles[seed]).load_checkpoint(STEPS)
        for name, w in run.load_checkpoint(STEPS).items():
            torch.testing.assert_close(w, single[name], rtol=1e-5, atol=1e-6)
    # an ordinary folder: the analysis verbs read it
    from grokscope.analysis.run_analysis import analyze_run

    analyze_run(outs[1])
    assert (outs[1] / "analysis").is_dir()


def test_per_model_settings_match_their_single_runs(tmp_path):
    """lr, weight decay, Grokfast and the training fraction differ within one stack."""
    variants = [
        ("seed=0", "train.lr=0.003"),
        ("seed=1", "train.weight_decay=0.1"),
        ("seed=2", "task.frac_train=0.3"),
        ("seed=3", "train.grokfast.enabled=true", "train.grokfast.lamb=1.0"),
    ]
    for batch, mode in (("train.batch_size=64", "vmap"), ("train.batch_size=0", "vmap")):
        # at full batch the training sets differ in size (frac_train): padded, scored per model
        configs = [_config(batch, "train.steps=30", *v) for v in variants]
        outs = [tmp_path / f"{batch[-2:]}-{i}" for i in range(len(configs))]
        train_stacked(configs, outs, progress=False, mode=mode)
        for config, out in zip(configs, outs, strict=True):
            single = out.with_name(out.name + "-single")
            train(config, single, progress=False)
            _assert_rows_close(out, single)
    assert Run.open(tmp_path / "64-2").config.task.frac_train == 0.3


def test_each_model_stops_early_on_its_own_and_freezes(tmp_path, singles):
    rows = Run.open(singles[0]).read_metrics()
    target = max(r["test_acc"] for r in rows if r["step"] <= 50)
    stop_step = next(r["step"] for r in rows if r["test_acc"] >= target)
    configs = seed_configs(_config("train.batch_size=64"), [0, 1])
    configs[0].train.stop_at_test_acc = target
    outs = seed_folders(configs, tmp_path)
    first, second = train_stacked(configs, outs, progress=False, mode="vmap")
    assert (first.reason, first.step) == ("stop_at_test_acc", stop_step)
    assert (second.reason, second.step) == ("steps", STEPS)
    stopped = Run.open(outs[0])
    tensors, info = stopped.load_state()
    assert info["finished_reason"] == "stop_at_test_acc" and info["step"] == stop_step
    assert stopped.read_metrics()[-1]["step"] == stop_step
    assert Run.open(outs[1]).read_metrics()[-1]["step"] == STEPS
    # frozen: its state holds the weights of its last checkpoint, as the single run's does there
    final = stopped.load_checkpoint(stop_step)
    _assert_same_weights({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, final)
    _assert_rows_close(outs[1], singles[1])


def test_configs_differing_in_a_shared_setting_are_refused(tmp_path):
    with pytest.raises(GrokscopeError, match=r"model\.d_model"):
        check_stackable([_config(), _config("model.d_model=32")])
    with pytest.raises(GrokscopeError, match=r"train\.batch_size"):
        train_stacked([_config(), _config("train.batch_size=32")], [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()  # refused before any folder was written
    with pytest.raises(GrokscopeError, match="seed list"):
        parse_seeds("7-3")
    assert parse_seeds("0-2,5,1") == [0, 1, 2, 5]


# ---------------------------------------------------------------------------- interrupt and resume
INTERRUPT_STEPS = 200
INTERRUPT_SET = (
    "train.threads=1",
    "train.batch_size=64",
    "train.eval.every=20",
    "train.checkpoint.every=100",
)


@pytest.fixture(scope="module")
def stacked_reference(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    """Seeds 0-2 trained stacked without a stop: the final weights a resumed group must equal."""
    root = tmp_path_factory.mktemp("stacked_ref")
    config = make_config("tiny", f"train.steps={INTERRUPT_STEPS}", *INTERRUPT_SET)
    configs = seed_configs(config, [0, 1, 2])
    outs = seed_folders(configs, root)
    train_stacked(configs, outs, progress=False)
    return [Run.open(o).load_checkpoint(INTERRUPT_STEPS) for o in outs]


def _start(parent: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "grokscope", "train", "tiny", "--seeds", "0-2", "--out", str(parent)]
    args += ["--quiet", "--steps", str(INTERRUPT_STEPS)]
    for o in (*INTERRUPT_SET, *extra):
        args += ["--set", o]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_then_stacked_resume_is_bit_exact(tmp_path, stacked_reference):
    proc = _start(tmp_path)
    outs = [tmp_path / f"tiny-s{s}" for s in (0, 1, 2)]
    wait_for_step(outs[0], 60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "state saved" in err and f"grokscope resume {outs[0]}" in err and "Traceback" not in err
    steps = [Run(o).load_state()[1]["step"] for o in outs]
    assert len(set(steps)) == 1 and 60 <= steps[0] < INTERRUPT_STEPS
    # one folder resumed alone by the single trainer continues that seed (to float rounding)
    alone = tmp_path / "alone"
    alone.mkdir()
    os.rename(outs[2], alone / outs[2].name)
    resume(alone / outs[2].name, progress=False)
    single = Run.open(alone / outs[2].name).load_checkpoint(INTERRUPT_STEPS)
    for name, w in single.items():
        torch.testing.assert_close(w, stacked_reference[2][name], rtol=1e-5, atol=1e-6)
    # the others resumed stacked end bit-identical to the uninterrupted stacked run
    resume_stacked(outs[:2], progress=False)
    for out, ref in zip(outs[:2], stacked_reference[:2], strict=True):
        _assert_same_weights(Run.open(out).load_checkpoint(INTERRUPT_STEPS), ref)
        rows = [r["step"] for r in Run(out).read_metrics()]
        assert rows == sorted(set(rows)), "metrics rows are neither duplicated nor out of order"


@pytest.mark.slow
def test_kill_9_then_stacked_resume_is_bit_exact(tmp_path, stacked_reference):
    """state_every_s=0 saves every model's state every step, so SIGKILL lands during writes."""
    outs = [tmp_path / f"tiny-s{s}" for s in (0, 1, 2)]
    for kill_after in (0.8, 1.5):
        if not outs[0].exists():
            proc = _start(tmp_path, "train.state_every_s=0.0")
        else:
            args = [sys.executable, "-m", "grokscope", "resume", *map(str, outs), "--quiet"]
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_step(outs[0], 20)
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert min(Run(o).load_state()[1]["step"] for o in outs) < INTERRUPT_STEPS
    results = resume_stacked(outs, progress=False)
    assert [r.step for r in results] == [INTERRUPT_STEPS] * 3
    for out, ref in zip(outs, stacked_reference, strict=True):
        _assert_same_weights(Run.open(out).load_checkpoint(INTERRUPT_STEPS), ref)


# ---------------------------------------------------------------------------- sweeps pack trials
@pytest.mark.slow
def test_sweep_packs_stackable_trials_into_one_process(tmp_path):
    from grokscope.sweep import load_spec, run_sweep
    from grokscope.sweep.local import Job
    from grokscope.sweep.pack import pack_jobs

    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(
        '[sweep]\nname = "packed"\nbase = "tiny"\nseeds = [0, 1]\n'
        'set = ["train.steps=20", "train.batch_size=64", "train.threads=1", "train.eval.every=10"]\n'
        '[grid]\n"task.frac_train" = [0.4, 0.5]\n'
    )
    spec = load_spec(str(spec_file))
    jobs = [Job(t.name, tmp_path / t.name, tmp_path / "c", t.config, tmp_path / "l") for t in spec.trials]
    packs = pack_jobs(jobs, workers=1)
    assert len(packs) == 1 and sorted(packs[0].names()) == sorted(t.name for t in spec.trials)
    assert len(pack_jobs(jobs, workers=2)) == 2  # every worker gets a pack
    odd = Job(
        "odd",
        tmp_path / "odd",
        tmp_path / "c",
        {**spec.trials[0].config, "model": {"d_model": 32}},
        tmp_path / "l",
    )
    assert len(pack_jobs([*jobs, odd], workers=1)) == 2  # a non-stackable trial runs on its own

    packed = run_sweep(spec, tmp_path / "packed", workers=1, progress=False)
    assert all(r["status"] == "done" for r in packed.rows.values()) and len(packed.rows) == 4
    from grokscope.config import from_dict

    for trial in spec.trials:  # each folder as the trial trained alone makes it
        assert packed.rows[trial.name]["step"] == 20
        alone = tmp_path / "alone" / trial.name
        train(from_dict(trial.config), alone, progress=False)
        _assert_rows_close(tmp_path / "packed" / "runs" / trial.name, alone)
    assert any("stacked in one process" in p.read_text() for p in (tmp_path / "packed" / "logs").iterdir())
    assert run_sweep(spec, tmp_path / "packed", workers=1, progress=False).skipped  # re-run: all finished
