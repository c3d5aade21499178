"""Numerical stability (Prieto et al. 2025): StableMax, ⊥Grad, loss precision, softmax collapse,
the NLM cosine, and their place in training, resume and sweeps."""

from __future__ import annotations

import json
import math
import signal
from types import SimpleNamespace

import pytest
import torch

from grokscope.config import TrainConfig
from grokscope.errors import GrokscopeError
from grokscope.run import Run
from grokscope.scoring import (
    log_stablemax,
    loss_and_stats,
    stability,
    stability_stats,
    stablemax,
    token_losses,
)
from grokscope.sweep.spec import load_spec
from grokscope.tasks.base import Batch
from grokscope.train import resume, train
from grokscope.train.optim import OrthoAdamW, OrthoSGD, build_optimizer, nlm_cosine, orthogonalize_
from tests.conftest import make_config, wait_for_step
from tests.test_resume import OVERRIDES, STEPS, _assert_same, _final_weights, _start

F32_RES = 2.0**-23  # float32's spacing just above 1


# ----------------------------------------------------------------------------- StableMax


def test_stablemax_equals_its_formula_on_hand_checked_inputs():
    x = torch.tensor([[-3.0, -1.0, 0.0, 2.0]], dtype=torch.float64)
    s = [1 / 4, 1 / 2, 1.0, 3.0]  # 1/(1-x) below 0, x+1 from 0 on
    total = sum(s)
    assert stablemax(x)[0].tolist() == pytest.approx([v / total for v in s], abs=1e-15)
    assert log_stablemax(x)[0].tolist() == pytest.approx([math.log(v / total) for v in s], abs=1e-15)
    targets = torch.tensor([[3]])
    loss = token_losses(x[:, None, :], targets, loss="stablemax")
    assert loss.dtype == torch.float64 and loss.item() == pytest.approx(-math.log(3.0 / total), abs=1e-15)
    # softmax would give another number: the option really switches the loss
    assert token_losses(x[:, None, :], targets).item() != pytest.approx(loss.item(), abs=1e-3)


def test_stablemax_is_a_proper_distribution_with_finite_gradients():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 3, 17, generator=g, dtype=torch.float64) * 50).requires_grad_()
    p = stablemax(x)
    assert (p > 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(64, 3, dtype=torch.float64), atol=1e-14, rtol=0)
    assert torch.allclose(log_stablemax(x).exp(), p, atol=1e-14, rtol=0)
    token_losses(x, torch.zeros(64, 3, dtype=torch.long), loss="stablemax").sum().backward()
    assert x.grad.isfinite().all()  # neither branch of s(x) leaks inf/NaN into the gradient


# ----------------------------------------------------------------------------- loss precision


def _confident(margin_sum: float, d_vocab: int = 2, top: float = 20.0) -> torch.Tensor:
    """Logits [1, 1, d_vocab] with the target (0) on top and sum_j exp(x_j - top) = margin_sum."""
    other = top + math.log(margin_sum / (d_vocab - 1))
    return torch.tensor([[[top] + [other] * (d_vocab - 1)]], dtype=torch.float64)


def test_float32_loss_is_quantised_to_float32_resolution_and_float64_is_not():
    logits, target = _confident(3.3 * F32_RES), torch.zeros(1, 1, dtype=torch.long)
    l64 = token_losses(logits, target, precision="float64").item()
    l32 = token_losses(logits, target, precision="float32").item()
    assert l64 / F32_RES == pytest.approx(3.3, rel=1e-6)  # float64 sees the true loss
    assert l32 / F32_RES == pytest.approx(round(l32 / F32_RES), abs=1e-4)  # a multiple of 2**-23
    assert round(l32 / F32_RES) in (3, 4)
    # below half a resolution float32 returns exactly 0 (collapse), float64 still a positive loss
    tiny = _confident(0.3 * F32_RES)
    assert token_losses(tiny, target, precision="float32").item() == 0.0
    assert token_losses(tiny, target).item() == pytest.approx(0.3 * F32_RES, rel=1e-6)
    # bfloat16 has 8 bits of mantissa: its loss of the first example is a multiple of 2**-7 (here 0)
    assert token_losses(logits, target, precision="bfloat16").item() == 0.0


def test_a_low_precision_training_loss_keeps_float64_metrics():
    logits = _confident(0.3 * F32_RES).expand(4, 1, 2).clone().requires_grad_()
    batch = Batch(
        torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 1, dtype=torch.long), torch.ones(4, 1, dtype=bool)
    )
    objective, stats = loss_and_stats(logits, batch, "cross_entropy", "float32")
    assert objective.item() == 0.0  # what training optimises ...
    assert stats["loss"] == pytest.approx(0.3 * F32_RES, rel=1e-6)  # ... and what is reported
    objective.backward()
    # the collapsed float32 softmax of the right class is exactly 1: its logit gets no push at all
    assert (logits.grad[..., 0] == 0).all()
    default, stats64 = loss_and_stats(logits, batch)
    assert default.item() == stats64["loss"] == pytest.approx(0.3 * F32_RES, rel=1e-6)


# ----------------------------------------------------------------------------- softmax collapse


class _Lookup(torch.nn.Module):
    """A hand-built modular-addition 'model': logits = scale * one_hot((a + b) mod p)."""

    def __init__(self, p: int, scale: float):
        super().__init__()
        self.p, self.scale = p, scale
        self.pos_embed = SimpleNamespace(needs_ids=False)

    def forward(self, tokens, positions=None, pos_ids=None):
        answer = (tokens[:, 0] + tokens[:, 1]) % self.p
        return (self.scale * torch.nn.functional.one_hot(answer, self.p).float())[:, None, :]


def _modular_batch(p: int) -> Batch:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)
    targets = ((a + b) % p).flatten()[:, None]
    return Batch(tokens, targets, torch.ones_like(targets, dtype=torch.bool))


def test_softmax_collapse_is_one_on_an_over_confident_model_and_zero_on_a_uniform_one():
    p = 7
    batch = _modular_batch(p)
    sure = stability(_Lookup(p, 40.0), batch, [2], chunk=10)  # chunked: the weighting is by tokens
    assert sure["softmax_collapse"] == 1.0
    assert sure["logit_norm"] == pytest.approx(40.0)
    uniform = stability(_Lookup(p, 0.0), batch, [2])
    assert uniform["softmax_collapse"] == 0.0 and uniform["logit_norm"] == 0.0
    right_but_not_collapsed = stability(_Lookup(p, 10.0), batch, [2])  # 6 e^-10 > float32's 2**-24
    assert right_but_not_collapsed["softmax_collapse"] == 0.0
    # a mask counts only the tokens it marks; StableMax's loss is logged when asked for
    logits = _Lookup(p, 40.0)(batch.tokens)
    logits[:10] = 0.0
    mask = batch.mask.clone()
    half = stability_stats(logits, batch.targets, mask, loss="stablemax")
    assert half["softmax_collapse"] == pytest.approx((p * p - 10) / (p * p))
    expected = ((p * p - 10) * -math.log(41 / 47) + 10 * math.log(p)) / (p * p)
    assert half["stablemax_loss"] == pytest.approx(expected, rel=1e-12)
    mask[10:] = False
    assert stability_stats(logits, batch.targets, mask)["softmax_collapse"] == 0.0


# ----------------------------------------------------------------------------- ⊥Grad and NLM


def _param(shape, seed: int, grad=None) -> torch.nn.Parameter:
    g = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64))
    p.grad = torch.randn(*shape, generator=g, dtype=torch.float64) if grad is None else grad
    return p


def test_orthograd_removes_the_component_along_the_weights_and_keeps_the_norm():
    params = [_param((5, 3), 0), _param((7,), 1), _param((4,), 2)]
    params[2].data.zero_()  # an all-zero weight (a bias at init) keeps its gradient
    before = [p.grad.clone() for p in params]
    orthogonalize_(params)
    for p, g in zip(params[:2], before[:2], strict=True):
        assert (p.detach() * p.grad).sum().item() == pytest.approx(0.0, abs=1e-12)
        assert p.grad.norm().item() == pytest.approx(g.norm().item(), rel=1e-12)
        w = p.detach().flatten()
        g_orth = g.flatten() - (w @ g.flatten()) / (w @ w) * w  # the paper's projection
        assert torch.allclose(p.grad.flatten(), g_orth * g.norm() / g_orth.norm(), atol=1e-12, rtol=0)
    assert torch.equal(params[2].grad, before[2])


def test_orthosgd_update_is_orthogonal_to_the_weights():
    p = _param((6, 4), 3)
    w0 = p.detach().clone()
    opt = OrthoSGD([p], lr=0.1, momentum=0.0)
    opt.step()
    assert ((p.detach() - w0) * w0).sum().item() == pytest.approx(0.0, abs=1e-12)
    assert (p.detach() - w0).norm().item() > 0.1  # it moved: the full gradient norm, not zero


def test_orthoadamw_is_adamw_on_the_orthogonal_gradient_with_every_setting_honoured():
    cfg = TrainConfig(optimizer="orthoadamw", lr=1e-2, betas=[0.8, 0.9], eps=1e-6, weight_decay=0.5)
    cfg.validate()
    ortho, plain = _param((5, 5), 4), _param((5, 5), 4)
    opt_o, opt_p = (
        build_optimizer([ortho], cfg),
        torch.optim.AdamW([plain], lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.5),
    )
    assert isinstance(opt_o, OrthoAdamW) and opt_o.defaults["betas"] == (0.8, 0.9)
    for step in range(3):
        g = torch.randn(5, 5, generator=torch.Generator().manual_seed(10 + step), dtype=torch.float64)
        ortho.grad, plain.grad = g.clone(), g.clone()
        orthogonalize_([plain])  # by hand, then plain AdamW
        opt_o.step()
        opt_p.step()
        assert torch.equal(ortho.detach(), plain.detach())
    assert (
        build_optimizer([ortho], TrainConfig(optimizer="orthosgd", momentum=0.5)).defaults["momentum"] == 0.5
    )


def test_nlm_cosine_is_the_cosine_of_the_descent_direction_with_the_weights():
    w = _param((3, 3), 5)
    w.grad = -2.5 * w.detach().clone()  # descending scales the weights up: the NLM direction
    assert nlm_cosine([w]) == pytest.approx(1.0, abs=1e-12)
    w.grad = 3.0 * w.detach().clone()
    assert nlm_cosine([w]) == pytest.approx(-1.0, abs=1e-12)
    orthogonalize_([w_ := _param((4,), 6)])
    assert nlm_cosine([w_]) == pytest.approx(0.0, abs=1e-12)
    a, b = _param((2,), 7), _param((3,), 8)
    flat_w, flat_g = torch.cat([a.detach(), b.detach()]), torch.cat([a.grad, b.grad])
    expected = (-(flat_w @ flat_g) / (flat_w.norm() * flat_g.norm())).item()
    assert nlm_cosine([a, b]) == pytest.approx(expected, rel=1e-12)  # over all parameters at once
    assert nlm_cosine([torch.nn.Parameter(torch.ones(2))]) is None


# ----------------------------------------------------------------------------- settings, training


def test_bad_loss_settings_are_refused_with_the_choices():
    with pytest.raises(GrokscopeError, match="train.loss.*cross_entropy, stablemax"):
        make_config("tiny", "train.loss=softmax")
    with pytest.raises(GrokscopeError, match="loss_precision.*float64, float32, bfloat16"):
        make_config("tiny", "train.loss_precision=fp16")
    with pytest.raises(GrokscopeError, match="train.optimizer.*orthoadamw"):
        make_config("tiny", "train.optimizer=orthoadam")
    with pytest.raises(GrokscopeError, match="train.loss = 'softmax'"):
        TrainConfig(loss="softmax").validate()


def test_training_logs_the_stability_metrics_at_each_evaluation(tmp_path):
    config = make_config(
        "tiny", "train.steps=60", "train.loss=stablemax", "train.optimizer=orthoadamw", "train.weight_decay=0"
    )
    train(config, tmp_path / "run", progress=False)
    rows = Run(tmp_path / "run").read_metrics()
    assert [r["step"] for r in rows][-1] == 60
    for r in rows:
        assert 0.0 <= r["train_softmax_collapse"] <= 1.0
        assert r["train_logit_norm"] > 0 and -1.0 <= r["nlm_cosine"] <= 1.0
        assert r["train_stablemax_loss"] > 0 and r["test_stablemax_loss"] > 0
        assert r["train_stablemax_loss"] != r["train_loss"]  # the float64 softmax CE, reported beside
    assert rows[-1]["train_logit_norm"] > rows[0]["train_logit_norm"]


def test_a_run_saved_before_these_settings_existed_resumes(tmp_path):
    out = tmp_path / "run"
    train(make_config("tiny", "train.steps=30"), out, progress=False)
    run = Run(out)
    tensors, info = run.load_state()
    for key in ("train.loss", "train.loss_precision"):
        del info["config"][key]
    run.save_state(tensors, info)
    assert resume(out, steps=40, progress=False).step == 40


def test_a_sweep_crosses_weight_decay_loss_and_optimizer(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(
        """
[sweep]
base = "tiny"
[grid]
"train.weight_decay" = [0.0, 1.0]
"train.loss" = ["cross_entropy", "stablemax"]
"train.optimizer" = ["adamw", "orthoadamw"]
"train.loss_precision" = ["float64", "float32"]
"""
    )
    spec = load_spec(str(path))
    assert len(spec.trials) == 16
    assert (
        spec.trials[-1].name == "weight_decay=1__loss=stablemax__optimizer=orthoadamw__loss_precision=float32"
    )
    last = spec.trials[-1].config["train"]
    assert (last["loss"], last["optimizer"], last["loss_precision"]) == ("stablemax", "orthoadamw", "float32")


def test_an_orthoadamw_run_stopped_and_resumed_matches_an_uninterrupted_one(tmp_path):
    """⊥Grad keeps AdamW's state (moments, step), so the state file restores it exactly."""
    extra = ("train.optimizer=orthoadamw", "train.weight_decay=0.1", "train.betas=[0.85, 0.95]")
    reference = tmp_path / "whole"
    train(make_config("tiny", f"train.steps={STEPS}", *OVERRIDES, *extra), reference, progress=False)
    out = tmp_path / "run"
    proc = _start(out, *extra)
    wait_for_step(out, 100)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    tensors, info = Run(out).load_state()
    assert 100 <= info["step"] < STEPS
    assert any(k.endswith(".exp_avg_sq") for k in tensors)  # AdamW's moments are in the state
    resume(out, progress=False)
    _assert_same(_final_weights(out), _final_weights(reference))
    plain = tmp_path / "plain"
    train(
        make_config(
            "tiny", f"train.steps={STEPS}", *OVERRIDES, "train.weight_decay=0.1", "train.betas=[0.85, 0.95]"
        ),
        plain,
        progress=False,
    )
    assert not torch.equal(_final_weights(plain)["embed.W_E"], _final_weights(reference)["embed.W_E"])


def test_the_stability_presets_are_mainline_without_weight_decay_and_one_lever_each():
    def flat(name):
        data = make_config(name).to_dict()
        return {f"{s}.{k}": v for s, d in data.items() if isinstance(d, dict) for k, v in d.items()}

    main = flat("mainline")
    for name, lever in (
        ("mainline_no_wd", {}),
        ("mainline_stablemax", {"train.loss": "stablemax"}),
        ("mainline_orthograd", {"train.optimizer": "orthoadamw"}),
    ):
        got = flat(name)
        assert {k: v for k, v in got.items() if main[k] != v} == {"train.weight_decay": 0.0, **lever}


def test_the_stability_figures_render_from_metrics(tmp_path):
    from grokscope.figures import render_figure
    from grokscope.figures.stability import stability_comparison

    out = tmp_path / "run"
    train(make_config("tiny", "train.steps=30"), out, progress=False)
    png = render_figure("stability", out)
    assert png is not None and png.is_file() and png.stat().st_size > 1000
    rows = Run(out).read_metrics()
    fig = stability_comparison({"a": [rows, rows], "b": [rows]})
    assert len(fig.axes[0].lines) == 3 and [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "a",
        "b",
    ]
    old = tmp_path / "old"  # metrics from before these were logged: no figure, no error
    train(make_config("tiny", "train.steps=10"), old, progress=False)
    rows = [
        {k: v for k, v in r.items() if k not in ("train_softmax_collapse",)} for r in Run(old).read_metrics()
    ]
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert render_figure("stability", old) is None
