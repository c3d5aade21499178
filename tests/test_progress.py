"""Progress measures: against direct computations, on hand-built logits/models, and on the tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from grokscope.analysis import analyze_run, detect_phases, load_analysis
from grokscope.analysis import progress as pm
from grokscope.analysis.modular_view import modular_outputs
from grokscope.errors import GrokscopeError
from grokscope.run import Run, build
from tests import analysis_fixtures
from tests.conftest import make_config

analysed_tiny = analysis_fixtures.analysed_tiny  # the shared fixture


class _Task:
    """The attributes of ModularTask the logit measures read."""

    def __init__(self, p: int, frac: float = 0.4, seed: int = 0):
        self.p = p
        a = torch.arange(p).repeat_interleave(p)
        b = torch.arange(p).repeat(p)
        self.labels = (a + b) % p
        order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
        n = int(frac * p * p)
        self.train_idx, self.test_idx = order[:n].sort().values, order[n:].sort().values


def _grid(p):
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    return a, b, torch.arange(p).double()


def _ce(logits, labels, idx):
    return torch.nn.functional.cross_entropy(logits[idx], labels[idx]).item()


def test_hand_built_fourier_logits():
    """logits = Σ_k α_k cos(k(a+b−c)) + f(a)·g(c): every measure has a closed form."""
    p, alphas = 13, {2: 3.0, 5: 1.5}
    a, b, c = _grid(p)
    w = 2 * math.pi / p
    circuit = sum(al * torch.cos(w * k * (a[:, None] + b[:, None] - c[None, :])) for k, al in alphas.items())
    distractor = torch.cos(w * 4 * a)[:, None] * torch.sin(w * 1 * c)[None, :]  # depends on a alone
    logits = circuit + 0.7 * distractor
    task = _Task(p)
    cos = pm.cos_coefficients_from_logits(logits, p)
    expected = torch.zeros((p - 1) // 2, dtype=torch.float64)
    for k, al in alphas.items():
        expected[k - 1] = al * math.sqrt(p**3 / 2)  # α_k times the norm of cos(k(a+b−c)) over the cube
    assert torch.allclose(cos, expected, atol=1e-9)
    # the key-frequency projection recovers exactly the circuit; the distractor is orthogonal to it
    assert torch.allclose(pm.freq_projection(logits, p, [2, 5]), circuit, atol=1e-10)
    assert torch.allclose(pm.excluded_logits(logits, p, [2, 5]), 0.7 * distractor, atol=1e-10)
    m = pm.logit_measures(logits, task, [2, 5], 1)
    y, tr, te = task.labels, task.train_idx, task.test_idx
    assert m["restricted_loss_train"].item() == pytest.approx(_ce(circuit, y, tr), rel=1e-10)
    assert m["restricted_loss_test"].item() == pytest.approx(_ce(circuit, y, te), rel=1e-10)
    assert m["excluded_loss_train"].item() == pytest.approx(_ce(0.7 * distractor, y, tr), rel=1e-10)
    assert m["train_loss"].item() == pytest.approx(_ce(logits, y, tr), rel=1e-10)
    per = pm.excluded_loss_per_freq_from_logits(logits, y, tr, p, [2, 5])
    assert per[0].item() == pytest.approx(
        _ce(logits - alphas[2] * torch.cos(w * 2 * (a[:, None] + b[:, None] - c)), y, tr)
    )


@pytest.mark.parametrize("freqs", [[1], [3, 4], [1, 2, 5]])
def test_restricted_and_excluded_loss_equal_least_squares(freqs):
    """The restricted logits are the least-squares fit on [1, cos k(a+b), sin k(a+b)]; excluded = residual of
    the fit without the constant. Independent of the projection code."""
    p = 11
    torch.manual_seed(2)
    logits = torch.randn(p * p, p, dtype=torch.float64) * 2 + torch.randn(p, dtype=torch.float64)
    a, b, _ = _grid(p)
    w = 2 * math.pi / p
    feats = [torch.cos(w * k * (a + b)) for k in freqs] + [torch.sin(w * k * (a + b)) for k in freqs]
    X = torch.stack(feats, dim=1)
    X1 = torch.cat([torch.ones(p * p, 1, dtype=torch.float64), X], dim=1)
    fit_with_bias = X1 @ torch.linalg.lstsq(X1, logits).solution
    fit = X @ torch.linalg.lstsq(X, logits).solution
    task = _Task(p, frac=0.5, seed=3)
    y = task.labels
    m = pm.logit_measures(logits, task, freqs, 1)
    for split, idx in (("train", task.train_idx), ("test", task.test_idx)):
        assert m[f"restricted_loss_{split}"].item() == pytest.approx(_ce(fit_with_bias, y, idx), rel=1e-9)
        assert m[f"excluded_loss_{split}"].item() == pytest.approx(_ce(logits - fit, y, idx), rel=1e-9)
    # same through the definitional (V-matrix) functions and batched over a leading checkpoint axis
    r = pm.restricted_loss_from_logits(logits, y, task.train_idx, p, freqs)
    assert r.item() == pytest.approx(m["restricted_loss_train"].item(), rel=1e-12)
    mb = pm.logit_measures(torch.stack([logits, 2 * logits]), task, freqs, 1)
    assert mb["restricted_loss_train"][0].item() == pytest.approx(
        m["restricted_loss_train"].item(), rel=1e-12
    )


def _hand_built_model(p: int = 7):
    """A Transformer whose weights are set by hand: W_E rows are cos/sin of frequency 2, attention is uniform,
    the MLP is switched off, so logits = (E[a] + E[b] + E[=] + W_pos[2]) / 3 ... @ W_U: a function of a plus
    a function of b, with no cos(k(a+b)) part at all."""
    config = make_config(
        "tiny", f"task.p={p}", "model.d_model=8", "model.d_mlp=4", "model.n_heads=1", "model.d_head=8"
    )
    task, model = build(config)
    x = torch.arange(p).double()
    w = 2 * math.pi / p
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        model.embed.W_E[:p, 0] = torch.cos(w * 2 * x).float()
        model.embed.W_E[:p, 1] = torch.sin(w * 2 * x).float()
        attn = model.blocks[0].attn
        attn.W_V[0] = torch.eye(8)
        attn.W_O[0] = torch.eye(8)
        model.unembed.W_U[0] = torch.cos(w * 2 * x).float()
        model.unembed.W_U[1] = torch.sin(w * 2 * x).float()
        model.blocks[0].mlp.W_in[0, 0] = 1.0  # a neuron that is not zero everywhere
    return task, model


def test_hand_built_model_measures():
    p = 7
    task, model = _hand_built_model(p)
    logits = modular_outputs(model, task, fast=False).logits
    a, b, c = _grid(p)
    w = 2 * math.pi / p
    # uniform attention over [a, b, =]: logit(c) = (cos 2a + cos 2b) cos 2c / 3 + (sin 2a + sin 2b) sin 2c / 3
    # (the MLP adds relu(x)·0 = 0 since W_out = 0)
    expect = (
        (torch.cos(w * 2 * a) + torch.cos(w * 2 * b))[:, None] * torch.cos(w * 2 * c)
        + (torch.sin(w * 2 * a) + torch.sin(w * 2 * b))[:, None] * torch.sin(w * 2 * c)
    ) / 3
    assert torch.allclose(logits, expect, atol=1e-6)
    m = pm.measure_model(model, task, key_freqs=[2])
    # cos(2a)·cos(2c)-type logits are orthogonal to every cos(k(a+b)): nothing to restrict to, nothing excluded
    assert m["excluded_loss_train"] == pytest.approx(m["train_loss"], rel=1e-6)  # float32 model
    assert torch.allclose(pm.cos_coefficients(model, task), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert m["restricted_loss_train"] == pytest.approx(math.log(p), rel=1e-6)  # class means are all 0
    # W_E has exactly two equal Fourier components (cos 2, sin 2) out of p: Gini = 1 - 2/p
    assert m["gini_W_E"] == pytest.approx(1 - 2 / p, abs=1e-6)
    assert pm.gini_W_E(model, task) == pytest.approx(1 - 2 / p, abs=1e-6)
    assert m["sum_sq_weights"] == pytest.approx(pm.total_sum_sq_weights(model))
    norms = pm.fourier_norms_W_E(model.embed.W_E.detach(), p)
    assert norms[3].item() == pytest.approx(math.sqrt(p / 2), rel=1e-6)  # row 3 = cos 2


# ---------------------------------------------------------------------------- the tiny run
def test_pca_circles_use_the_key_frequencies_analyze_reports(analysed_tiny):
    from grokscope.interp.pca import circle_frequencies

    path, res = analysed_tiny
    run = Run.open(path)
    config, task, model = run.config, run.task, run.model()  # the last checkpoint, where analyze detects them
    assert res.key.key_freqs and circle_frequencies(model, task) == res.key.key_freqs
    config.model.attn_only = True
    assert circle_frequencies(build(config)[1], task) == []  # no MLP, no neurons to read them from


def test_tiny_run_shows_the_papers_progress_facts(analysed_tiny):
    path, res = analysed_tiny
    pr = res.progress
    steps = pr["step"]
    assert 1 <= len(res.key.key_freqs) <= 7
    assert res.key.frac_neurons_explained > 0.5
    phases = detect_phases(pr)
    assert 0 < phases.memorization_end < phases.cleanup_start < phases.cleanup_end <= steps[-1]

    def first(col, below):
        return steps[np.argmax(pr[col] <= below)]

    # restricted loss falls well before test loss does
    assert first("restricted_loss_test", 0.5) + 100 <= first("test_loss", 0.5)
    # excluded loss rises while train loss stays low
    after = steps >= 200
    assert pr["train_loss"][after].max() < 0.01
    i_mem, i_end = np.searchsorted(steps, [phases.memorization_end, phases.cleanup_end])
    low = pr["excluded_loss_train"][i_mem : i_end + 1].min()
    assert pr["excluded_loss_train"][i_end] > 4 * low
    # the embedding and the neuron-logit map become sparse in the Fourier basis
    for col in ("gini_W_E", "gini_W_L"):
        assert pr[col][-1] > pr[col][0] + 0.3
        assert pr[col][i_end] > pr[col][i_mem]
    # weight decay shrinks the weights through cleanup
    i_start = np.searchsorted(steps, phases.cleanup_start)
    assert pr["sum_sq_weights"][i_end] < 0.8 * pr["sum_sq_weights"][i_start]
    # cos(k(a+b-c)) coefficients: the key frequencies dominate at the end
    cos = np.array([res.cos_coeffs[f"k{k}"][-1] for k in range(1, (res.p - 1) // 2 + 1)])
    key_idx = [k - 1 for k in res.key.key_freqs]
    assert cos[key_idx].min() > 5 * np.abs(np.delete(cos, key_idx)).max()


def test_table_matches_model_in_memory(analysed_tiny):
    path, res = analysed_tiny
    run = Run.open(path)
    task = run.task
    model = run.model()
    m = pm.measure_model(model, task, key_freqs=res.key.key_freqs)
    for col in (
        "train_loss",
        "test_loss",
        "restricted_loss_train",
        "excluded_loss_train",
        "gini_W_E",
        "gini_W_L",
    ):
        assert m[col] == pytest.approx(res.progress[col][-1], rel=1e-9), col
    # the trainer's own float64 evaluation agrees with ours
    last = Run(path).read_metrics()[-1]
    assert last["train_loss"] == pytest.approx(res.progress["train_loss"][-1], rel=1e-3)
    per = pm.excluded_loss_per_freq(model, task, res.key.key_freqs)
    for k, v in per.items():
        assert v == pytest.approx(res.excluded_by_freq[f"k{k}"][-1], rel=1e-9)


def test_cache_computes_only_new_checkpoints(analysed_tiny, tmp_path):
    import shutil

    path, res = analysed_tiny
    again = analyze_run(path)
    assert again.meta["computed_steps"] == []
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    csv = copy / "analysis" / "progress.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-3]) + "\n")  # lose the last 3 rows
    part = analyze_run(copy)
    assert part.meta["computed_steps"] == [int(s) for s in res.steps[-3:]]
    assert np.allclose(part.progress["test_loss"], res.progress["test_loss"], rtol=1e-12)
    user = analyze_run(copy, key_freqs=res.key.key_freqs[:1])  # other key freqs: everything again
    assert len(user.meta["computed_steps"]) == len(res.steps)
    assert load_analysis(copy).key.source == "user"
    with pytest.raises(GrokscopeError, match="key frequencies must be"):
        analyze_run(copy, key_freqs=[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.p=9"], "odd prime"),
        (["task.op=quad"], "add or subtract"),
        (["task.p=2", "task.frac_train=0.5"], "odd prime"),
    ],
)
def test_unsupported_runs_are_clear_errors(tmp_path, overrides, message):
    config = make_config("tiny", *overrides)
    Run.create(tmp_path / "run", config, build(config)[0].split_arrays())
    with pytest.raises(GrokscopeError, match=message):
        analyze_run(tmp_path / "run")


def test_non_modular_run_is_a_clear_error(tmp_path):
    from grokscope.presets import load_preset_or_file, preset_names

    other = [
        n
        for n in preset_names()
        if load_preset_or_file(n).get("task", {}).get("kind") not in (None, "modular")
    ]
    if not other:
        pytest.skip("no non-modular preset available")
    config = make_config(other[0])
    Run.create(tmp_path / "run", config, build(config)[0].split_arrays())
    with pytest.raises(GrokscopeError, match="modular"):
        analyze_run(tmp_path / "run")


def test_per_checkpoint_key_frequencies(analysed_tiny, tmp_path):
    import shutil

    path, res = analysed_tiny
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    per = analyze_run(copy, per_checkpoint=True)
    pr, base = per.progress, res.progress
    here = pr["n_key_freqs_here"]
    assert here[0] == 0 and here[-1] == len(res.key.key_freqs)
    # with no key frequency detected, nothing is kept: restricted loss is the loss of the class means
    assert pr["restricted_loss_train"][0] != pytest.approx(base["restricted_loss_train"][0], rel=1e-6)
    assert pr["restricted_loss_train"][-1] == pytest.approx(base["restricted_loss_train"][-1], rel=1e-12)
    assert np.array_equal(pr["test_loss"], base["test_loss"])


def test_analyze_reports_the_restricted_loss_each_key_rule_gives(analysed_tiny):
    path, res = analysed_tiny
    key = res.key
    saved = json.loads((path / "analysis" / "key_frequencies.json").read_text())
    assert saved["rule"] == "carried" and set(saved["by_rule"]) == {"carried", "threshold", "original"}
    # the key set's restricted loss is the progress table's, at the final checkpoint
    assert key.restricted_loss_train == pytest.approx(res.progress["restricted_loss_train"][-1], rel=1e-9)
    assert key.by_rule["carried"]["restricted_loss_train"] == key.restricted_loss_train
    assert set(key.by_rule["threshold"]["key_freqs"]) <= set(key.key_freqs)
    # the grokked tiny model: its key set carries it (restricted loss within 10x of its own)
    assert abs(math.log(key.restricted_loss_train / key.model_loss_train)) < math.log(10)
