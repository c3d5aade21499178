"""Interpretability toolkit: probes, lens, PCA, embedding-space views, TransformerLens export, CLI."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from grokscope.cli import main
from grokscope.interp import pca as P
from grokscope.interp.activations import (
    collect,
    collect_and_score,
    example_sets,
    parse_positions,
    parse_steps,
)
from grokscope.interp.embedding_space import head_tables, neuron_profiles
from grokscope.interp.labels import aligned_positions, control_labels, resolve_label
from grokscope.interp.lens import decode, logit_lens, model_logits, tuned_lens
from grokscope.interp.probes import (
    cosine,
    fit_probes,
    probe_geometry,
    probe_model,
    random_cosine_baseline,
    summary_rows,
)
from grokscope.run import Run, build
from tests.conftest import make_config

HAS_TL = importlib.util.find_spec("transformer_lens") is not None
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small fits: one thread is faster than several fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted(n=1500, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(1, n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = (X[0] @ w > 0.2).long()[:, None]
    return X, y, w


def test_probe_recovers_planted_feature_and_fails_on_random_labels():
    X, y, w = planted()
    random = torch.randint(0, 2, y.shape, generator=torch.Generator().manual_seed(1))
    Y = torch.cat([y, random], 1)
    probes = fit_probes(X[:, :1000], Y[:1000])
    acc = probes.score(X[:, 1000:], Y[1000:])[0]
    assert acc[0] > 0.97  # the planted feature is read
    assert abs(acc[1] - 0.5) < 0.08  # random labels stay at chance on held-out examples
    direction = probes.directions()[0, 0].view(-1, 2)[:, 1]
    assert cosine(direction, w) > 0.95


def test_probe_multiclass_regression_and_control_labels():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(1, 1200, 16, generator=g)
    cls = torch.randint(0, 5, (1200,), generator=g)
    X[0, :, :5] += 3 * torch.nn.functional.one_hot(cls, 5)
    assert fit_probes(X[:, :800], cls[:800, None]).score(X[:, 800:], cls[800:, None]).item() > 0.9
    target = (X[0] @ torch.arange(16.0))[:, None]
    r2 = fit_probes(X[:, :800], target[:800], regression=True).score(X[:, 800:], target[800:])
    assert r2.item() > 0.99
    labels = torch.stack([cls, cls % 2], 1)
    ctrl = control_labels(labels, seed=0)
    for k in range(2):
        assert torch.equal(ctrl[:, k].sort().values, labels[:, k].sort().values)
    assert (ctrl[:, 0] == cls).double().mean() < 0.4


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn not installed")
def test_torch_probe_matches_sklearn():
    X, y, _ = planted(n=600, d=12, seed=3)
    noisy = y ^ (torch.rand(y.shape, generator=torch.Generator().manual_seed(0)) < 0.1).long()
    a = fit_probes(X, noisy, l2=1e-2)
    b = fit_probes(X, noisy, l2=1e-2, backend="sklearn")
    assert torch.allclose(a.W, b.W, atol=1e-4) and torch.allclose(a.b, b.b, atol=1e-4)


def test_random_cosine_baseline_matches_theory():
    mean, p99 = random_cosine_baseline(128)
    assert abs(mean - math.sqrt(2 / (math.pi * 128))) < 0.01
    assert mean < p99 < 0.3


@pytest.fixture(scope="module")
def small_model():
    task, model = build(make_config("tiny", "model.n_layers=2", "model.layer_norm=true"))
    model.eval()
    return task, model


def test_collect_runs_the_last_block_at_the_asked_positions_only(small_model):
    """collect's forward computes the last block at the requested positions; every hook still holds
    what a full forward's cache holds there (patterns by query position, MLP, resid_post)."""
    task, model = small_model
    batch = task.eval_sets()["test"].select(torch.arange(50))
    hooks = [
        "hook_embed",
        "blocks.1.hook_resid_pre",
        "blocks.1.attn.hook_pattern",
        "blocks.1.attn.hook_k",
        "blocks.1.attn.hook_q",
        "blocks.1.mlp.hook_post",
        "blocks.1.hook_resid_post",
        "blocks.0.hook_resid_post",
    ]
    positions = [2, 0, 2]
    _, full = model.run_with_cache(batch.tokens, names_filter=hooks)
    ours = collect(model, batch, hooks, positions)
    for h in hooks:
        want = (
            full[h][:, :, positions].transpose(1, 2) if h.endswith("hook_pattern") else full[h][:, positions]
        )
        torch.testing.assert_close(ours[h], want.reshape(50, 3, -1), atol=1e-5, rtol=1e-5, msg=h)
    acts, scores = collect_and_score(model, batch, hooks[-1:], [0], task.loss_positions)
    torch.testing.assert_close(acts[hooks[-1]], full[hooks[-1]][:, [0]], atol=1e-5, rtol=1e-5)
    logits = model(batch.tokens, positions=task.loss_positions)
    assert torch.equal(scores.correct, logits.argmax(-1) == batch.targets)


def test_logit_lens_on_last_resid_post_is_the_model(small_model):
    task, model = small_model
    batch = task.eval_sets()["test"]
    last = f"blocks.{len(model.blocks) - 1}.hook_resid_post"
    resid = collect(model, batch, [last], task.loss_positions)[last]
    ours = decode(model, resid)
    theirs = model_logits(model, batch, task.loss_positions)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    stats = logit_lens(model, batch, [last], task.loss_positions)[last]
    assert stats["loss_all"].dtype == torch.float64
    acc = (theirs.argmax(-1) == batch.targets).double().mean()
    assert stats["acc_all"].item() == pytest.approx(acc.item())


def test_tuned_lens_is_no_worse_than_logit_lens_on_fit_examples(small_model):
    task, model = small_model
    fit, _ = example_sets(task, "train", "test")
    hook = "blocks.0.hook_resid_mid"
    logit = logit_lens(model, fit, [hook], task.loss_positions)[hook]
    tuned = tuned_lens(model, fit, fit, [hook], task.loss_positions, max_iter=30)[hook]
    assert tuned["loss_all"] <= logit["loss_all"] + 1e-9


def test_pca_finds_a_planted_circle():
    p, k, d = 31, 5, 48
    g = torch.Generator().manual_seed(0)
    plane = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))[0]
    t = torch.arange(p, dtype=torch.float64)
    angle = 2 * math.pi * k * t / p
    circle = torch.stack([angle.cos(), angle.sin()], 1)
    X = 3 * circle @ plane.T + 0.01 * torch.randn(p, d, generator=g, dtype=torch.float64)
    result = P.pca(X, k=4)
    assert result.explained[:2].sum() > 0.99
    radius = result.projections[:, :2].norm(dim=1)
    assert radius.std() / radius.mean() < 0.02
    norms = P.embedding_frequency_norms(X)
    assert (norms >= 0.25 * norms.max()).nonzero().flatten().tolist() == [k - 1]  # k alone stands out
    proj = P.circle_projections(X, [k])[0]
    assert (proj.norm(dim=1).std() / proj.norm(dim=1).mean()) < 0.02
    # the circle's angles advance by 2*pi*k/p per number, as the numbers are placed
    step = torch.atan2(proj[:, 1], proj[:, 0]).diff().remainder(2 * math.pi)
    expected = (2 * math.pi * k / p) % (2 * math.pi)
    assert torch.allclose(step, torch.full_like(step, expected), atol=0.05) or torch.allclose(
        step, torch.full_like(step, 2 * math.pi - expected), atol=0.05
    )


def test_pca_over_checkpoints_aligns_signs():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 8, generator=g, dtype=torch.float64) * torch.tensor([5, 3, 1, 1, 1, 1, 1, 1.0])
    over = P.pca_over_checkpoints({0: X, 1: X.clone()}, torch.arange(20), k=2)
    assert torch.allclose(over.projections[0], over.projections[1])
    final = P.pca_over_checkpoints({0: X * 0.5, 1: X}, torch.arange(20), k=2, basis="final")
    assert torch.allclose(final.explained[0], final.explained[1])


def test_embedding_space_tables(small_model):
    _, model = small_model
    qk, ov = head_tables(model, 0)
    cfg = model.cfg
    assert qk.shape == (cfg.n_heads, cfg.d_vocab, cfg.d_vocab)
    assert ov.shape == (cfg.n_heads, cfg.d_vocab, cfg.d_vocab_out)
    E, a = model.embed.W_E.double(), model.blocks[0].attn
    expected = E[3] @ a.W_V[1].double() @ a.W_O[1].double() @ model.unembed.W_U.double()
    assert torch.allclose(ov[1, 3], expected)
    win, wout = neuron_profiles(model, 0)
    assert win.shape == (cfg.d_vocab, cfg.d_mlp) and wout.shape == (cfg.d_mlp, cfg.d_vocab_out)


def test_probe_study_baselines_and_geometry(small_model):
    task, model = small_model
    fit, score = example_sets(task, "train", "test", max_examples=200)
    hooks = ["blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"]
    study = probe_model(model, fit, score, hooks, "token.0", [0], l2=0.1)
    by_hook = {r["hook"]: r for r in study.rows}
    # token 0 is in the embedding at position 0 itself: every baseline reads it
    assert by_hook[hooks[0]]["embed"] > 0.95 and by_hook[hooks[0]]["score"] > 0.95
    assert by_hook[hooks[0]]["control"] < 0.2
    geo = probe_geometry(study, *hooks)
    assert len(geo) == 1 and -1 <= geo[0]["cosine"] <= 1


def test_addition_labels_align_with_the_answer_they_feed():
    task, model = build(
        make_config("five_digit_addition", "model.d_model=32", "model.d_mlp=64", "model.d_head=8")
    )
    fit, score = example_sets(task, "train", "test", max_examples=200)
    # fixed format 00123+04567=004690: position 15 predicts the answer's tens digit, which needs
    # the carry out of the units column; position 11 ('=') predicts the leading digit (carry out of col 4)
    names = [f"carry_out.{c}" for c in range(6)] + ["carry_in.1", "sum_is_9.0"]
    aligned = aligned_positions(fit, names, task.loss_positions)
    assert aligned == {
        "carry_out.0": 15,
        "carry_out.1": 14,
        "carry_out.2": 13,
        "carry_out.3": 12,
        "carry_out.4": 11,
        "carry_in.1": 15,
        "sum_is_9.0": 16,
    }
    study = probe_model(
        model,
        fit,
        score,
        ["blocks.0.hook_resid_mid"],
        "carry_out",
        task.loss_positions,
        baselines=False,
        loss_positions=task.loss_positions,
    )
    assert study.skipped == ["carry_out.5"]  # the top column never carries out
    rows, rule = summary_rows(study.rows)
    assert "needs it" in rule and {(r["label"], r["position"]) for r in rows} == {
        (f"carry_out.{c}", 15 - c) for c in range(5)
    }


def test_bad_inputs_are_clear():
    from grokscope.errors import GrokscopeError

    task, model = build(make_config("tiny"))
    with pytest.raises(GrokscopeError, match="offers"):
        resolve_label(task.eval_sets()["test"], "carry_out")
    with pytest.raises(GrokscopeError, match="outside the context"):
        parse_positions("7", 3, [2])
    with pytest.raises(GrokscopeError, match="no checkpoint at step"):
        parse_steps("5", [0, 10])
    with pytest.raises(GrokscopeError, match="did you mean"):
        collect(model, task.eval_sets()["test"], ["blocks.0.hook_resid_mdi"], [0])


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A `tiny` run cut to 100 steps (3 checkpoints): the verbs write into it, so not the shared tiny_run."""
    from grokscope.train import train

    out = tmp_path_factory.mktemp("interp") / "tiny100"
    train(make_config("tiny", "train.steps=100", "train.threads=1"), out, progress=False)
    return out


def test_cli_verbs_write_tables_and_figures(short_run, capsys):
    tiny_run = short_run
    assert (
        main(
            [
                "probe",
                str(tiny_run),
                "--hook",
                "blocks.0.hook_resid_post",
                "--label",
                "target",
                "--position",
                "loss",
                "--step",
                "every:2",
                "--max-examples",
                "150",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "blocks.0.hook_resid_post" in out and "selectivity" in out
    probes = tiny_run / "analysis" / "probes"
    assert (probes / "target.csv").is_file() and (probes / "target_by_step.png").is_file()
    assert main(["lens", str(tiny_run), "--hook", "blocks.0.hook_resid_post", "--max-examples", "150"]) == 0
    assert (tiny_run / "analysis" / "lens" / "lens.csv").is_file()
    assert main(["pca", str(tiny_run), "--step", "every:3"]) == 0
    assert "key frequencies" in capsys.readouterr().out
    pca_dir = tiny_run / "analysis" / "pca"
    assert (pca_dir / "W_E_pca.gif").is_file() and (pca_dir / "circles.png").is_file()
    # the circles are drawn for the key frequencies by the progress measures' rule (one rule), which
    # finds none in a run of 100 steps; test_progress checks them on the grokked tiny run
    import csv

    from grokscope.analysis import model_key_frequencies

    run = Run.open(tiny_run)
    task, model = run.task, run.model()
    last = run.checkpoint_steps()[-1]
    with open(pca_dir / "circles.csv", newline="") as f:
        drawn = sorted({int(r["freq"]) for r in csv.DictReader(f) if int(r["step"]) == last})
    assert (
        drawn == model_key_frequencies(model, task).key_freqs
    )  # this short run: none yet (see test_progress)
    assert main(["probe", str(tiny_run), "--hook", "blocks.0.hook_resid_post", "--label", "nope"]) == 2
    assert "unknown label" in capsys.readouterr().err

    from grokscope.interp.report import interp_report_sections

    titles = [t for t, _ in interp_report_sections(tiny_run)]
    assert any("probe" in t.lower() for t in titles) and any("lens" in t.lower() for t in titles)


@pytest.mark.skipif(not HAS_TL, reason="transformer_lens not installed")
@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.layer_norm=true", "model.act=gelu", "model.pos=none", "model.n_layers=2"),
        ("model.pos=sinusoidal",),
    ],
)
def test_transformer_lens_round_trip(overrides):
    from grokscope.interp.export_tl import check_logits

    task, model = build(make_config("tiny", *overrides))
    diff64, diff32 = check_logits(model.eval(), task.eval_sets()["test"].tokens[:256])
    assert diff64 < 1e-10 and diff32 < 1e-4


def test_transformer_lens_refuses_what_it_cannot_express():
    from grokscope.errors import GrokscopeError
    from grokscope.interp.export_tl import check_expressible

    _, model = build(make_config("tiny", "model.pos=rope"))
    with pytest.raises(GrokscopeError, match="no exact TransformerLens equivalent"):
        check_expressible(model)
