"""The transformer: TransformerLens names and shapes, hooks, and the fast paths' equivalence."""

import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.model import Transformer


def _model(**kw) -> Transformer:
    cfg = ModelConfig(d_vocab=114, d_vocab_out=113, n_ctx=3, **kw)
    return Transformer(cfg, seed=0)


def _tokens(n=300):
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 113, (n, 3), generator=g)
    t[:, 2] = 113
    return t


def test_parameter_names_and_shapes_follow_transformerlens():
    shapes = {n: tuple(p.shape) for n, p in _model().named_parameters()}
    assert shapes == {
        "embed.W_E": (114, 128),
        "pos_embed.W_pos": (3, 128),
        "blocks.0.attn.W_Q": (4, 128, 32),
        "blocks.0.attn.W_K": (4, 128, 32),
        "blocks.0.attn.W_V": (4, 128, 32),
        "blocks.0.attn.W_O": (4, 32, 128),
        "blocks.0.mlp.W_in": (128, 512),
        "blocks.0.mlp.b_in": (512,),
        "blocks.0.mlp.W_out": (512, 128),
        "blocks.0.mlp.b_out": (128,),
        "unembed.W_U": (128, 113),
    }


def test_hook_names_and_shapes():
    _, cache = _model().run_with_cache(_tokens(5))
    expected = {
        "hook_embed": (5, 3, 128),
        "hook_pos_embed": (5, 3, 128),
        "blocks.0.hook_resid_pre": (5, 3, 128),
        "blocks.0.attn.hook_q": (5, 3, 4, 32),
        "blocks.0.attn.hook_k": (5, 3, 4, 32),
        "blocks.0.attn.hook_v": (5, 3, 4, 32),
        "blocks.0.attn.hook_attn_scores": (5, 4, 3, 3),
        "blocks.0.attn.hook_pattern": (5, 4, 3, 3),
        "blocks.0.attn.hook_z": (5, 3, 4, 32),
        "blocks.0.hook_attn_out": (5, 3, 128),
        "blocks.0.hook_resid_mid": (5, 3, 128),
        "blocks.0.mlp.hook_pre": (5, 3, 512),
        "blocks.0.mlp.hook_post": (5, 3, 512),
        "blocks.0.hook_mlp_out": (5, 3, 128),
        "blocks.0.hook_resid_post": (5, 3, 128),
    }
    assert {k: tuple(v.shape) for k, v in cache.items()} == expected


def test_init_scales_match_the_paper():
    m = Transformer(ModelConfig(d_model=512, d_mlp=2048, d_vocab=1000, d_vocab_out=1000, n_ctx=3), seed=0)
    assert m.embed.W_E.std().item() == pytest.approx(512**-0.5, rel=0.02)
    assert m.blocks[0].mlp.W_in.std().item() == pytest.approx(512**-0.5, rel=0.02)
    assert m.unembed.W_U.std().item() == pytest.approx(1000**-0.5, rel=0.02)


@pytest.mark.parametrize(
    "kw",
    [{}, {"n_layers": 2, "layer_norm": True, "attn_bias": True, "unembed_bias": True}, {"act": "gelu"}],
)
def test_loss_position_path_equals_full_forward(kw):
    """The table + query-subset fast path computes the same logits as the plain hooked path."""
    m = _model(**kw)
    tokens = _tokens()
    fast = m(tokens, positions=[2])
    _, cache = m.run_with_cache(tokens, names_filter="hook_embed")  # hooks on: plain path
    full = m.run_with_hooks(tokens, [])
    assert torch.allclose(fast[:, 0], full[:, 2], atol=1e-5)
    assert cache["hook_embed"].shape == (300, 3, 128)


def test_attention_is_causal():
    m = _model()
    tokens = _tokens(4)
    _, cache = m.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.all(pattern.triu(diagonal=1) == 0)
    assert torch.allclose(pattern.sum(-1), torch.ones(4, 4, 3))


def test_hooks_can_replace_activations():
    m = _model()
    tokens = _tokens(8)

    def zero_mlp(x, hook):
        return torch.zeros_like(x)

    patched = m.run_with_hooks(tokens, [("blocks.0.hook_mlp_out", zero_mlp)])
    _, cache = m.run_with_cache(tokens)
    expected = cache["blocks.0.hook_resid_mid"] @ m.unembed.W_U
    assert torch.allclose(patched, expected, atol=1e-5)
    assert not m._hooks_active  # context cleaned up


def test_attn_only_and_names_filter():
    m = _model(attn_only=True, n_layers=2)
    assert not any("mlp" in n for n, _ in m.named_parameters())
    _, cache = m.run_with_cache(_tokens(2), names_filter=lambda n: n.endswith("resid_post"))
    assert set(cache) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}


@pytest.mark.parametrize("pos", ["learned", "abacus"])
def test_input_injection_re_adds_the_embedding_before_every_later_block(pos):
    """resid_pre of block i > 0 = resid_post of block i - 1 + embed + pos_embed; the fast path agrees."""
    m = _model(n_layers=3, layer_norm=True, input_injection=True, pos=pos)
    tokens = _tokens(40)
    ids = torch.randint(0, 3, tokens.shape, generator=torch.Generator().manual_seed(2))
    logits, cache = m.run_with_cache(tokens, pos_ids=ids)
    x0 = cache["hook_embed"] + cache["hook_pos_embed"]
    for i in (1, 2):
        expected = cache[f"blocks.{i - 1}.hook_resid_post"] + x0
        assert torch.allclose(cache[f"blocks.{i}.hook_resid_pre"], expected, atol=1e-6)
    assert torch.allclose(m(tokens, positions=[2], pos_ids=ids), logits[:, [2]], atol=1e-5)
    plain = Transformer(
        ModelConfig(d_vocab=114, d_vocab_out=113, n_ctx=3, n_layers=3, layer_norm=True, pos=pos), 0
    )
    plain.load_state_dict(m.state_dict())  # same weights, no injection: different logits
    assert not torch.allclose(plain(tokens, pos_ids=ids), logits, atol=1e-3)
