"""Each fast path of the model's forward equals its general path, for every positional encoding.

The fast paths (model/transformer.py) are chosen in one place, `Transformer.fast_path_ok`, from the
flags each positional encoding declares. Here: the layer-0 table and the [a, b, =] grid path against
the general forward (hooks on, or `use_fast_paths = False`), to float32 rounding; the encodings that
may not take a path fall back, and taking it anyway would give other numbers.
"""

from __future__ import annotations

import pytest
import torch

from grokscope.analysis.modular_view import modular_outputs
from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.model import Transformer
from grokscope.registry import POSITIONAL
from grokscope.run import build
from tests.conftest import make_config

RESIDUAL_ONLY = {"learned", "none", "sinusoidal"}  # positions enter the residual stream alone


def _absolute(pos: str) -> bool:
    return "abacus" not in pos.split("+")  # W_abacus is read per token, from ids


def _shake(model: Transformer, seed: int = 0) -> Transformer:
    """Random nonzero values for every parameter (biases start at 0), so that each one matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(0.3 * torch.randn(prm.shape, generator=g))
    return model


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float32 rounding: within 1e-5 of the larger values' scale."""
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()))


def _count_calls(monkeypatch, model: Transformer, name: str) -> list[int]:
    calls = []
    original = getattr(model, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, name, counted)
    return calls


# ---------------------------------------------------------------------------- layer-0 table
def _model(pos: str, **kw) -> Transformer:
    cfg = ModelConfig(
        d_vocab=14, d_vocab_out=14, n_ctx=8, d_model=32, n_heads=4, d_head=8, d_mlp=64, pos=pos, **kw
    )
    return _shake(Transformer(cfg, seed=0))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 14, (40, 8), generator=g)  # 40 examples > d_vocab: the table pays
    ids = torch.randint(0, 6, (40, 8), generator=g)
    return tokens, ids


@pytest.mark.parametrize("pos", POSITIONAL.names())
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"n_layers": 2, "layer_norm": True, "attn_bias": True, "unembed_bias": True},
        {"n_layers": 2, "attn_only": True, "input_injection": True},
    ],
    ids=["one-layer", "two-layer-ln-bias", "attn-only-injection"],
)
def test_layer0_table_equals_the_general_forward(pos, kw, monkeypatch):
    m = _model(pos, **kw)
    tokens, ids = _inputs()
    table_calls = _count_calls(monkeypatch, m, "_layer0_from_table")
    fast = m(tokens, positions=[5, 7], pos_ids=ids)
    assert m.fast_path_ok("layer0_table") == _absolute(pos)
    assert len(table_calls) == (1 if _absolute(pos) else 0)  # taken exactly where allowed
    hooked = m.run_with_hooks(tokens, [], pos_ids=ids)[:, [5, 7]]  # hooks on: the general path
    m.use_fast_paths = False
    general = m(tokens, positions=[5, 7], pos_ids=ids)
    assert len(table_calls) == (1 if _absolute(pos) else 0)
    assert _close(fast, general)
    assert _close(hooked, general)


@pytest.mark.parametrize("pos", [p for p in POSITIONAL.names() if not _absolute(p)])
def test_layer0_table_is_refused_where_it_would_be_wrong(pos, monkeypatch):
    """Abacus adds a per-token vector the table cannot hold: forced onto the table, the logits change."""
    m = _model(pos)
    tokens, ids = _inputs()
    general = m(tokens, pos_ids=ids)
    monkeypatch.setattr(m, "fast_path_ok", lambda path: True)
    forced = m(tokens, pos_ids=ids)
    assert not _close(forced, general)


def test_hooks_and_the_flag_switch_the_fast_paths_off():
    m = _model("learned")
    assert m.fast_path_ok("layer0_table")
    with m.hooks([]):
        assert not m.fast_path_ok("layer0_table") and not m.fast_path_ok("grid")
    m.use_fast_paths = False
    assert not m.fast_path_ok("layer0_table") and not m.fast_path_ok("grid")
    with pytest.raises(ValueError, match="unknown fast path"):
        m.fast_path_ok("bogus")


# ---------------------------------------------------------------------------- the [a, b, =] grid
def _modular(pos: str, *overrides: str):
    config = make_config(
        "tiny", "task.p=11", "model.d_model=16", "model.d_mlp=24", "model.d_head=4", *overrides
    )
    config.model.pos = pos
    task, model = build(config)
    return task, _shake(model)


@pytest.mark.parametrize("pos", POSITIONAL.names())
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.act=gelu", "model.attn_bias=true", "model.unembed_bias=true"],
        ["model.mlp_bias=false"],
    ],
    ids=["relu", "gelu-biases", "no-mlp-bias"],
)
def test_grid_path_equals_the_general_forward_on_the_full_grid(pos, overrides, monkeypatch):
    task, model = _modular(pos, *overrides)
    assert model.fast_path_ok("grid") == (pos in RESIDUAL_ONLY)
    if model.pos_embed.needs_ids:  # a modular task supplies no digit ids: these never run on it
        with pytest.raises(GrokscopeError, match="grid_outputs needs"):
            model.grid_outputs(task.p, task.equals_token)
        return
    grid_calls = _count_calls(monkeypatch, model, "_grid_from_tables")
    fast = modular_outputs(model, task)
    assert len(grid_calls) == (1 if pos in RESIDUAL_ONLY else 0)  # taken exactly where allowed
    general = modular_outputs(model, task, fast=False)
    assert fast.logits.shape == (task.p**2, task.p) and fast.neurons.shape == (task.p**2, 24)
    assert _close(fast.logits, general.logits)
    assert _close(fast.neurons, general.neurons)
    hooked = model.run_with_hooks(task.tokens, [])[:, -1, : task.p].double()
    assert _close(fast.logits, hooked)
    if pos not in RESIDUAL_ONLY:  # RoPE rotates, ALiBi biases scores: the grid tables would be wrong
        forced, _ = model._grid_from_tables(task.p, task.equals_token)
        assert not _close(forced[:, : task.p].double(), general.logits)


@pytest.mark.parametrize(
    "overrides", [["model.layer_norm=true"], ["model.n_layers=2"], ["model.attn_only=true"]]
)
def test_grid_path_declines_layer_norm_depth_and_attn_only(overrides):
    task, model = _modular("learned", *overrides)
    assert not model.fast_path_ok("grid")
    with pytest.raises(GrokscopeError, match="grid_outputs needs"):
        model.grid_outputs(task.p, task.equals_token)
    out = modular_outputs(model, task)  # on the general path
    assert out.logits.shape == (task.p**2, task.p)
