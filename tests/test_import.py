"""`grokscope import`: checkpoints trained elsewhere become run folders that every verb reads.

No network here: the fixtures are grokscope models written out in the other layouts (the original
progress-measures code's `.pth`, a TransformerLens state dict) from the facts in issue 15, then
imported back."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from grokscope.cli import main
from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.importing import ImportOptions, import_run
from grokscope.importing.progress_measures import original_split
from grokscope.interp.export_tl import tl_state_dict
from grokscope.model import Transformer
from grokscope.run import Run, RunNote
from grokscope.train import resume

P = 7
TOKENS = torch.stack(
    [torch.arange(P).repeat_interleave(P), torch.arange(P).repeat(P), torch.full((P * P,), P)], dim=1
)


def grokscope_model(**kw) -> Transformer:
    cfg = dict(
        n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=24, d_vocab=P + 1, d_vocab_out=P + 1, n_ctx=3
    )
    model = Transformer(ModelConfig(**{**cfg, **kw}), seed=3)
    with torch.no_grad():  # nonzero biases, so that a dropped or misplaced one shows
        for name, p in model.named_parameters():
            if ".b_" in name or name.endswith((".b", ".w")):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.3)
    return model.eval()


def original_layout(model: Transformer) -> dict[str, torch.Tensor]:
    """The original code's state dict of a grokscope model (layout: issue 15)."""
    sd = {}
    prefix = "attn_blocks" if model.cfg.attn_only else "blocks"
    sd["embed.W_E"] = model.embed.W_E.detach().T.clone()  # [d_model, d_vocab]
    sd["pos_embed.W_pos"] = model.pos_embed.W_pos.detach().clone()
    for i, block in enumerate(model.blocks):
        a = block.attn
        for w in ("W_Q", "W_K", "W_V"):
            sd[f"{prefix}.{i}.attn.{w}"] = (
                getattr(a, w).detach().transpose(1, 2).clone()
            )  # [H, d_head, d_model]
        sd[f"{prefix}.{i}.attn.W_O"] = (
            a.W_O.detach().reshape(-1, model.cfg.d_model).T.clone()
        )  # [d_model, H*d_head]
        sd[f"{prefix}.{i}.attn.mask"] = torch.tril(torch.ones(3, 3))
        if not model.cfg.attn_only:
            m = block.mlp
            sd[f"{prefix}.{i}.mlp.W_in"] = m.W_in.detach().T.clone()  # [d_mlp, d_model]
            sd[f"{prefix}.{i}.mlp.b_in"] = m.b_in.detach().clone()
            sd[f"{prefix}.{i}.mlp.W_out"] = m.W_out.detach().T.clone()  # [d_model, d_mlp]
            sd[f"{prefix}.{i}.mlp.b_out"] = m.b_out.detach().clone()
    sd["unembed.W_U"] = model.unembed.W_U.detach().clone()
    return sd


def original_forward(sd: dict[str, torch.Tensor], tokens: torch.Tensor, n_layers: int) -> torch.Tensor:
    """The original code's forward, written from the issue's facts alone (einsums, no LayerNorm,
    no attention biases, scores / sqrt(d_head), causal, ReLU): logits [batch, pos, d_vocab_out]."""
    sd = {k: v.double() for k, v in sd.items()}
    x = sd["embed.W_E"][:, tokens].permute(1, 2, 0) + sd["pos_embed.W_pos"][: tokens.shape[1]]
    pre = "attn_blocks" if "attn_blocks.0.attn.W_Q" in sd else "blocks"
    for i in range(n_layers):
        W_Q, W_K, W_V, W_O = (sd[f"{pre}.{i}.attn.{w}"] for w in ("W_Q", "W_K", "W_V", "W_O"))
        q = torch.einsum("ihd,bpd->biph", W_Q, x)
        k = torch.einsum("ihd,bpd->biph", W_K, x)
        v = torch.einsum("ihd,bpd->biph", W_V, x)
        scores = torch.einsum("biph,biqh->biqp", k, q)
        T = x.shape[1]
        scores = torch.tril(scores) - 1e10 * (1 - torch.tril(torch.ones(T, T, dtype=torch.float64)))
        attn = torch.softmax(scores / math.sqrt(W_Q.shape[1]), dim=-1)
        z = torch.einsum("biph,biqp->biqh", v, attn)
        z_flat = z.permute(0, 2, 1, 3).reshape(z.shape[0], T, -1)  # head-major
        x = x + torch.einsum("df,bqf->bqd", W_O, z_flat)
        if f"{pre}.{i}.mlp.W_in" in sd:
            h = torch.relu(
                torch.einsum("md,bpd->bpm", sd[f"{pre}.{i}.mlp.W_in"], x) + sd[f"{pre}.{i}.mlp.b_in"]
            )
            x = x + torch.einsum("dm,bpm->bpd", sd[f"{pre}.{i}.mlp.W_out"], h) + sd[f"{pre}.{i}.mlp.b_out"]
    return x @ sd["unembed.W_U"]


def _pth(path: Path, model: Transformer, **extra) -> Path:
    torch.save({"model": original_layout(model), **extra}, path)
    return path


def _logits(run_dir: Path) -> torch.Tensor:
    return Run.open(run_dir).model().double()(TOKENS)


def _folder_hashes(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------- progress-measures
def test_original_layout_round_trip_and_independent_forward(tmp_path):
    model = grokscope_model()
    config = {"p": P, "frac_train": 0.4, "seed": 5, "fn_name": "add", "act_type": "ReLU", "num_epochs": 300}
    src = _pth(
        tmp_path / "full_run.pth",
        model,
        config=config,
        epoch=299,
        train_losses=[1.0 - i / 400 for i in range(300)],
        test_losses=[2.0 - i / 400 for i in range(300)],
    )
    res = import_run("progress-measures", src, tmp_path / "run")
    ours = _logits(res.run.path)
    assert (ours - model.double()(TOKENS)).abs().max() < 1e-6
    theirs = original_forward(original_layout(model), TOKENS, 1)
    assert (ours - theirs).abs().max() < 1e-6
    run = Run.open(res.run.path)
    assert res.steps == [299] and run.checkpoint_steps() == [299]
    assert run.imported == {"format": "progress-measures", "source": str(src.resolve())}
    assert run.config.seed == 5 and run.config.task.p == P and run.config.train.steps == 300
    assert run.config.model.d_vocab_out == P + 1  # the original's p + 1 classes, as they are
    rows = run.read_metrics()
    assert len(rows) == 300 and rows[10] == {
        "step": 10,
        "train_loss": 1.0 - 10 / 400,
        "test_loss": 2.0 - 10 / 400,
    }
    train, test = original_split(P, 0.4, 5)
    assert res.split == "original"
    assert run.task.train_idx.tolist() == sorted(train) and run.task.test_idx.tolist() == sorted(test)


def test_attention_only_blocks_and_test_curve_every_k(tmp_path):
    model = grokscope_model(attn_only=True, n_layers=2)
    src = _pth(tmp_path / "a.pth", model, train_losses=[1.0] * 10, test_losses=[2.0] * 5, epoch=9)
    res = import_run("progress-measures", src, tmp_path / "run", overrides=["task.frac_train=0.5"])
    ours = _logits(res.run.path)
    assert (ours - original_forward(original_layout(model), TOKENS, 2)).abs().max() < 1e-6
    rows = Run.open(res.run.path).read_metrics()
    assert [r["step"] for r in rows if "test_loss" in r] == [0, 2, 4, 6, 8]


def test_original_split_rule_on_small_p():
    train, test = original_split(5, 0.3, 7)
    pairs = [(i, j) for i in range(5) for j in range(5)]
    random.seed(7)
    random.shuffle(pairs)
    assert train == [i * 5 + j for i, j in pairs[:7]] and test == [i * 5 + j for i, j in pairs[7:]]
    assert sorted(train + test) == list(range(25))
    assert original_split(5, 0.3, 8) != (train, test)


def test_five_digit_addition_vocabulary_loads_as_it_is(tmp_path):
    from grokscope.scoring import evaluate

    model = Transformer(
        ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=24, d_vocab=12, d_vocab_out=10, n_ctx=18), seed=1
    )
    sd = original_layout(model)
    sd = {k: (torch.tril(torch.ones(18, 18)) if k.endswith("mask") else v) for k, v in sd.items()}
    torch.save({"model": sd}, tmp_path / "addition.pth")
    res = import_run(
        "progress-measures",
        tmp_path / "addition.pth",
        tmp_path / "run",
        "five_digit_addition",
        ["task.n_stress=0"],
    )
    run = Run.open(res.run.path)
    assert (run.config.model.d_vocab, run.config.model.d_vocab_out) == (12, 10)
    assert res.split == "config"
    batch = run.task.eval_sets()["test"]
    assert int(batch.tokens.max()) == 11 and int(batch.targets.max()) <= 9
    stats = evaluate(run.model(), batch, run.task.loss_positions)
    assert math.isfinite(stats["loss"])
    with pytest.raises(GrokscopeError, match="smaller than the task needs"):  # varlen reads EOS and PAD
        import_run("progress-measures", tmp_path / "addition.pth", tmp_path / "r2", "addition_varlen")


# ---------------------------------------------------------------------------- TransformerLens
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_transformer_lens_state_dict_round_trip(tmp_path, suffix):
    model = grokscope_model(layer_norm=True, attn_bias=True, n_layers=2)
    sd = tl_state_dict(model)
    sd["unembed.b_U"] = torch.zeros(P + 1)  # TransformerLens always stores it; zero here
    for i in range(2):
        sd[f"blocks.{i}.attn.mask"] = torch.tril(torch.ones(3, 3, dtype=torch.bool))
        sd[f"blocks.{i}.attn.IGNORE"] = torch.tensor(-1e5)
    src = tmp_path / f"tl{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, src)
    else:
        torch.save(sd, src)
    (tmp_path / "cfg.json").write_text(json.dumps({"act_fn": "relu", "normalization_type": "LN"}))
    res = import_run(
        "tl",
        src,
        tmp_path / "run",
        overrides=["task.frac_train=0.5"],
        options=ImportOptions(step=1000, source_config=str(tmp_path / "cfg.json")),
    )
    run = Run.open(res.run.path)
    assert run.config.model.layer_norm and run.config.model.attn_bias and not run.config.model.unembed_bias
    assert res.steps == [1000]
    assert (_logits(run.path) - model.double()(TOKENS)).abs().max() < 1e-6
    assert len(run.read_metrics()) == 1 and "test_acc" in run.read_metrics()[0]  # evaluated: no curves


def test_grokking_demo_file_with_checkpoints_and_indices(tmp_path):
    models = [grokscope_model() for _ in range(3)]
    with torch.no_grad():
        for i, m in enumerate(models):
            m.embed.W_E.mul_(1 + i)
    train_idx, test_idx = list(range(0, 49, 2)), list(range(1, 49, 2))
    torch.save(
        {
            "model": tl_state_dict(models[-1]),
            "checkpoints": [tl_state_dict(m) for m in models],
            "checkpoint_epochs": [0, 100, 200],
            "train_indices": torch.tensor(train_idx),
            "test_indices": torch.tensor(test_idx),
            "train_losses": [1.0] * 201,
            "test_losses": [2.0] * 201,
        },
        tmp_path / "grokking_demo.pth",
    )
    res = import_run("tl", tmp_path / "grokking_demo.pth", tmp_path / "run")
    run = Run.open(res.run.path)
    assert run.checkpoint_steps() == [0, 100, 200] and res.split == "file"
    assert run.task.train_idx.tolist() == train_idx
    for step, m in zip([0, 100, 200], models, strict=True):
        assert (run.model(step).double()(TOKENS) - m.double()(TOKENS)).abs().max() < 1e-6


# ---------------------------------------------------------------------------- grokscope's names
def test_safetensors_folder_glob_and_transposes(tmp_path):
    model = grokscope_model()
    src = tmp_path / "ckpts"
    src.mkdir()
    sd = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in (10, 20):
        save_file({k: v.contiguous() for k, v in sd.items()}, src / f"model_{step}.safetensors")
    res = import_run("safetensors", src, tmp_path / "run", overrides=["task.frac_train=0.5"])
    assert res.steps == [10, 20]
    res = import_run(
        "safetensors", str(src / "*_20.safetensors"), tmp_path / "run2", overrides=["task.frac_train=0.5"]
    )
    assert res.steps == [20]
    turned = {
        **sd,
        "embed.W_E": sd["embed.W_E"].T.contiguous(),
        "blocks.0.mlp.W_in": sd["blocks.0.mlp.W_in"].T.contiguous(),
    }
    save_file(turned, tmp_path / "final.safetensors")
    with pytest.warns(RunNote, match="transposes were turned round: blocks.0.mlp.W_in, embed.W_E"):
        res = import_run(
            "safetensors",
            tmp_path / "final.safetensors",
            tmp_path / "run3",
            overrides=["task.frac_train=0.5"],
            options=ImportOptions(step=5000),
        )
    assert res.steps == [5000]
    assert (_logits(res.run.path) - model.double()(TOKENS)).abs().max() < 1e-6


# ---------------------------------------------------------------------------- refusals
@dataclasses.dataclass
class OriginalConfig:  # stands for the original code's Config class, pickled as an object
    p: int = P


def test_pickled_objects_are_refused_with_the_fix(tmp_path):
    src = _pth(tmp_path / "objects.pth", grokscope_model(), config=OriginalConfig())
    with pytest.raises(GrokscopeError, match="pickled Python objects.*dataclasses.asdict"):
        import_run("progress-measures", src, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unknown_names_are_all_listed(tmp_path):
    sd = {n: p.detach().clone() for n, p in grokscope_model().named_parameters()}
    sd |= {f"extra.{i}": torch.zeros(1) for i in range(10)}
    save_file(sd, tmp_path / "x.safetensors")
    with pytest.raises(GrokscopeError, match=r"unexpected \[.*'extra.0'.*\] and 2 more"):
        import_run(
            "safetensors", tmp_path / "x.safetensors", tmp_path / "run", overrides=["task.frac_train=0.5"]
        )


def test_resume_refuses_an_imported_folder_and_changes_nothing(tmp_path, capsys):
    src = _pth(
        tmp_path / "m.pth", grokscope_model(), train_losses=[1.0, 0.5], test_losses=[2.0, 1.5], epoch=1
    )
    run_dir = import_run(
        "progress-measures", src, tmp_path / "run", overrides=["task.frac_train=0.5"]
    ).run.path
    before = _folder_hashes(run_dir)
    with pytest.raises(GrokscopeError, match="imported from progress-measures.*nothing was changed"):
        resume(run_dir, progress=False)
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    assert "cannot continue it" in capsys.readouterr().err
    assert _folder_hashes(run_dir) == before


def test_a_config_without_meta_points_to_import(tmp_path):
    (tmp_path / "config.toml").write_text('name = "x"\n')
    with pytest.raises(GrokscopeError, match="grokscope import"):
        Run.open(tmp_path)


def test_cli_import(tmp_path, capsys):
    src = _pth(tmp_path / "m.pth", grokscope_model(), epoch=40, config={"p": P, "frac_train": 0.5})
    assert main(["import", "progress-measures", str(src), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "imported 1 checkpoint (step 40) from progress-measures; split from original" in out
    assert main(["import", "progress-measures", str(src), "--out", str(tmp_path / "run")]) == 2
    assert "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------------------- one checkpoint + a curve
def _grokking_curves(n: int = 400) -> tuple[list[float], list[float]]:
    """Train loss fitted by step 50; test loss high until ~200, then down four decades."""
    steps = torch.arange(n, dtype=torch.float64)
    train = (3.0 * torch.exp(-steps / 8) + 1e-4).tolist()
    test = (10 ** (0.5 - 4.5 * torch.sigmoid((steps - 250) / 15))).tolist()
    return train, test


def test_phases_and_loss_plot_from_the_curve_with_one_checkpoint(tmp_path):
    from grokscope.analysis import analyze_run, load_phases
    from grokscope.analysis.phases import accuracy_bound
    from grokscope.report import write_report

    train, test = _grokking_curves()
    src = _pth(tmp_path / "final.pth", grokscope_model(), epoch=399, train_losses=train, test_losses=test)
    run_dir = import_run(
        "progress-measures", src, tmp_path / "run", overrides=["task.frac_train=0.5"]
    ).run.path
    analyze_run(run_dir)
    phases = load_phases(run_dir)
    assert phases.source == "metrics" and phases.last_step == 399
    # train accuracy >= 99% is read from the loss bound: loss <= 0.01 ln 2 first at this step
    first_fit = next(i for i, v in enumerate(train) if accuracy_bound(v) >= 0.99)
    assert phases.memorization_end == first_fit
    assert first_fit < phases.cleanup_start < phases.cleanup_end < 399
    assert phases.grok_step == next(i for i, v in enumerate(test) if accuracy_bound(v) >= 0.99)
    html = write_report(run_dir).read_text()
    assert "circuit formation" in html and "no grokking yet" not in html
    assert "the evaluations in metrics.jsonl" in html


def test_one_checkpoint_without_a_curve_has_unknown_phases(tmp_path):
    from grokscope.analysis import analyze_run, load_phases
    from grokscope.report import write_report

    src = _pth(tmp_path / "final.pth", grokscope_model(), epoch=1000)
    run_dir = import_run(
        "progress-measures", src, tmp_path / "run", overrides=["task.frac_train=0.5"]
    ).run.path
    analyze_run(run_dir)
    phases = load_phases(run_dir)
    assert phases.source == "none" and phases.spans() == [] and phases.grok_step is None
    html = write_report(run_dir).read_text()
    assert "Unknown: the run has one checkpoint and no loss curve" in html
    assert "no grokking yet" not in html


def test_loss_figure_draws_the_dense_curve():
    from grokscope.figures.progress import loss_and_accuracy, metrics_curves

    rows = [{"step": s, "train_loss": 1.0 / (s + 1), "test_loss": 2.0} for s in range(50)]
    progress = {
        k: [v]
        for k, v in {
            "step": 49,
            "train_loss": 0.02,
            "test_loss": 2.0,
            "train_acc": 1.0,
            "test_acc": 0.1,
        }.items()
    }
    fig = loss_and_accuracy(progress, None, metrics_curves(rows))
    loss_ax, acc_ax = fig.axes[:2]
    assert [len(line.get_xdata()) for line in loss_ax.get_lines()] == [50, 50]
    assert [len(line.get_xdata()) for line in acc_ax.get_lines()] == [1, 1]  # from the checkpoint


def test_a_final_safetensors_in_checkpoints_points_to_import(tmp_path):
    from grokscope.analysis import analyze_run

    src = _pth(
        tmp_path / "m.pth", grokscope_model(), epoch=10, train_losses=[1.0, 0.5], test_losses=[2.0, 1.0]
    )
    run_dir = import_run(
        "progress-measures", src, tmp_path / "run", overrides=["task.frac_train=0.5"]
    ).run.path
    ckpt = run_dir / "checkpoints" / "step_0000010.safetensors"
    ckpt.rename(run_dir / "checkpoints" / "final.safetensors")
    with pytest.raises(GrokscopeError, match="holds final.safetensors.*grokscope import safetensors"):
        analyze_run(run_dir)
