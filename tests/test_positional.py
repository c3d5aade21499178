"""Positional encodings on hand-checked inputs, and the model's paths with each of them."""

import math

import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.model import Transformer
from grokscope.model.positional import (
    AbacusPositionalEncoding,
    ALiBiPositionalEncoding,
    RotaryPositionalEncoding,
    SinusoidalPositionalEncoding,
    alibi_slopes,
    offset_generator,
    position_ids,
)
from grokscope.registry import POSITIONAL
from grokscope.tasks import Batch, all_true


def _model(pos: str, **kw) -> Transformer:
    cfg = ModelConfig(
        d_vocab=14, d_vocab_out=14, n_ctx=8, d_model=32, n_heads=4, d_head=8, d_mlp=64, pos=pos, **kw
    )
    return Transformer(cfg, seed=0)


def test_sinusoidal_values_and_extrapolation():
    table = SinusoidalPositionalEncoding(4).residual(3)
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
        ]
    )
    assert torch.allclose(table, expected, atol=1e-6)
    far = SinusoidalPositionalEncoding(4).residual(1000)  # a formula: defined past any n_ctx
    assert far.shape == (1000, 4) and torch.allclose(far[:3], expected, atol=1e-6)
    assert torch.allclose(far[999, :2], torch.tensor([math.sin(999), math.cos(999)]), atol=1e-5)


def test_rope_rotates_pairs_by_position_times_frequency():
    rope = RotaryPositionalEncoding(d_head=2)
    x = torch.tensor([1.0, 0.0]).expand(1, 3, 1, 2)  # [B, T, H, d_head]
    out = rope.rotate(x, torch.arange(3))
    assert torch.allclose(
        out[0, :, 0], torch.tensor([[1.0, 0.0], [math.cos(1), math.sin(1)], [math.cos(2), math.sin(2)]])
    )
    with pytest.raises(GrokscopeError, match="even"):
        RotaryPositionalEncoding(d_head=3)


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryPositionalEncoding(d_head=8)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 5, 3, 8, generator=g), torch.randn(2, 5, 3, 8, generator=g)
    pos = torch.arange(5)

    def scores(p):
        return torch.einsum("bqhe,bkhe->bhqk", rope.rotate(q, p), rope.rotate(k, p))

    assert torch.allclose(scores(pos), scores(pos + 17), atol=1e-5)
    assert torch.allclose(scores(pos), scores(pos + 1000), atol=1e-4)
    assert not torch.allclose(scores(pos), torch.einsum("bqhe,bkhe->bhqk", q, k), atol=1e-3)


def test_alibi_slopes_and_bias_matrix():
    assert torch.allclose(alibi_slopes(4), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8]))
    # not a power of two: 4 heads' slopes, then every other slope of 8 heads
    assert torch.allclose(alibi_slopes(6), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]))
    bias = ALiBiPositionalEncoding(n_heads=4).score_bias(torch.arange(3), torch.arange(3))
    assert bias.shape == (4, 3, 3)
    expected_head0 = torch.tensor([[0.0, 0.25, 0.5], [-0.25, 0.0, 0.25], [-0.5, -0.25, 0.0]])
    assert torch.allclose(bias[0], expected_head0)
    assert torch.allclose(bias[3], expected_head0 / 64)
    # queries at the last positions only (the loss-position path) see the same rows
    assert torch.allclose(
        ALiBiPositionalEncoding(4).score_bias(torch.tensor([2]), torch.arange(3)), bias[:, 2:]
    )


def test_nope_and_formula_encodings_have_no_positional_parameters():
    for pos in ("none", "sinusoidal", "rope", "alibi", "abacus_rope"):
        names = [n for n, _ in _model(pos).named_parameters()]
        assert not any(n.startswith("pos_embed") for n in names), pos
        assert "pos_embed" not in "".join(_model(pos).state_dict())
    assert "pos_embed.W_pos" in dict(_model("learned").named_parameters())


def test_abacus_reads_task_ids_and_offsets_only_digits():
    ab = AbacusPositionalEncoding(
        n_index=30, d_model=4, max_offset=20, generator=torch.Generator().manual_seed(0)
    )
    ids = torch.tensor([[1, 2, 3, 0, 1, 2, 3, 4, 0], [1, 2, 0, 1, 0, 1, 2, 3, 0]])
    out = ab.residual_ids(ids)
    assert torch.equal(out[0, 2], ab.W_abacus[3]) and torch.equal(out[0, 3], ab.W_abacus[0])
    offsets = set()
    for step in range(40):
        shifted = ab.train_ids(ids, offset_generator(0, step))
        assert torch.equal(shifted == 0, ids == 0)  # non-digit tokens keep index 0
        k = (shifted - ids)[ids > 0].unique()
        assert len(k) == 1  # one offset shared by the whole batch
        offsets.add(int(k))
    assert min(offsets) >= 0 and max(offsets) <= 20 and len(offsets) > 5
    # the offset is a pure function of (seed, step): resume redraws the same one
    assert torch.equal(ab.train_ids(ids, offset_generator(3, 7)), ab.train_ids(ids, offset_generator(3, 7)))
    with pytest.raises(GrokscopeError, match="digit indices 0..29"):
        ab.residual_ids(torch.tensor([[30]]))


def test_abacus_model_needs_ids_and_names_them_clearly():
    m = _model("abacus+rope")
    assert {n for n, _ in m.named_parameters() if n.startswith("pos_embed")} == {"pos_embed.abacus.W_abacus"}
    assert m.pos_embed.abacus.W_abacus.shape == (8 + 20 + 1, 32)
    tokens = torch.randint(0, 14, (3, 8), generator=torch.Generator().manual_seed(0))
    with pytest.raises(GrokscopeError, match="needs per-token ids"):
        m(tokens)
    batch = Batch(tokens, tokens[:, :1], all_true(tokens[:, :1]), meta={})
    with pytest.raises(GrokscopeError, match="digit_index"):
        position_ids(m, batch)
    ids = torch.tensor([[1, 2, 0, 1, 2, 3, 0, 1]]).expand(3, -1)
    batch.meta["digit_index"] = ids
    assert torch.equal(position_ids(m, batch), ids)
    assert position_ids(_model("rope"), batch) is None
    a = m(tokens, pos_ids=ids)
    b = m(tokens, pos_ids=ids.roll(1, dims=1))
    assert not torch.allclose(a, b)  # the ids change the residual stream


def test_abacus_rope_scores_depend_only_on_digit_index_differences():
    """Shifting every digit index by one constant leaves the model's output unchanged when all
    tokens are digits; token positions play no part; a different index pattern changes it."""
    m = _model("abacus_rope", n_layers=2)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 10, (5, 8), generator=g)
    ids = torch.tensor([[1, 2, 3, 1, 2, 3, 4, 5]]).expand(5, -1)
    base = m(tokens, pos_ids=ids)
    assert torch.allclose(m(tokens, pos_ids=ids + 17), base, atol=1e-5)
    assert not torch.allclose(m(tokens, pos_ids=ids.flip(1)), base, atol=1e-3)
    # the rotation itself: each (2i, 2i+1) pair turns by digit index * base^(-2i/d_head)
    pe = m.pos_embed
    x = torch.zeros(1, 2, 1, 8)
    x[..., 0] = 1.0
    out = pe.rotate(x, torch.arange(2), torch.tensor([[0, 3]]))
    assert torch.allclose(out[0, 1, 0, :2], torch.tensor([math.cos(3.0), math.sin(3.0)]), atol=1e-6)
    assert torch.equal(out[0, 0], x[0, 0])  # index 0 (non-digit) is not rotated


def test_abacus_alibi_bias_is_minus_slope_times_digit_index_distance():
    m = _model("abacus_alibi")
    ids = torch.tensor([[1, 2, 3, 0, 1, 2, 0]])
    bias = m.pos_embed.score_bias(torch.arange(7), torch.arange(7), ids, ids)
    assert bias.shape == (1, 4, 7, 7)
    slopes = alibi_slopes(4)
    # query `2` of the second number (position 5, index 2) against every key, head 0
    expected = -slopes[0] * torch.tensor([1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 2.0])
    assert torch.allclose(bias[0, 0, 5], expected)
    assert torch.allclose(bias[0, 3], bias[0, 0] * slopes[3] / slopes[0])
    # digit-digit biases are the same after a shift of every digit index (the training offset)
    shifted = torch.where(ids > 0, ids + 9, ids)
    again = m.pos_embed.score_bias(torch.arange(7), torch.arange(7), shifted, shifted)
    digit = (ids > 0)[0]
    assert torch.equal(again[0][:, digit][:, :, digit], bias[0][:, digit][:, :, digit])
    tokens = torch.randint(0, 10, (2, 7), generator=torch.Generator().manual_seed(0))
    far = torch.tensor([[1, 2, 3, 0, 1, 2, 0]]).expand(2, -1)
    assert not torch.allclose(m(tokens, pos_ids=far), m(tokens, pos_ids=far.flip(1)))


def test_random_abacus_indices_keep_columns_and_order():
    m = _model("abacus", abacus_indices="random")
    ids = torch.tensor([[1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4, 0]]).expand(50, -1)
    spans = set()
    for step in range(5):
        out = m.pos_embed.train_ids(ids, offset_generator(0, step))
        assert torch.equal(out == 0, ids == 0)  # non-digit tokens keep 0
        for col in range(1, 5):  # one column, one index, within each example
            vals = out[ids == col].reshape(50, -1)
            assert (vals == vals[:, :1]).all()
        a = out[:, 7:11]  # the answer's indices rise with the column, within 1..4 + 20
        assert (a.diff(dim=1) > 0).all() and a.min() >= 1 and a.max() <= 24
        spans.update((a[:, -1] - a[:, 0]).tolist())
    assert max(spans) > 10  # examples meet indices far apart
    assert torch.equal(
        _model("abacus").pos_embed.train_ids(ids[:1], offset_generator(0, 0)).diff()[0, :2],
        torch.ones(2, dtype=torch.long),
    )


def test_combined_abacus_encodings_share_one_training_offset():
    m = _model("abacus+abacus_rope")
    assert m.pos_embed.attends_ids and m.pos_embed.max_offset == 20
    ids = torch.tensor([[1, 2, 0, 1, 2, 3, 0, 1]])
    for step in range(20):
        shifted = m.pos_embed.train_ids(ids, offset_generator(0, step))
        single = m.pos_embed.abacus.train_ids(ids, offset_generator(0, step))
        assert torch.equal(shifted, single)  # drawn once, not once per part


@pytest.mark.parametrize("pos", POSITIONAL.names())
def test_loss_position_path_equals_full_forward(pos):
    """The fast path (table for absolute-only encodings, query subset) equals the plain hooked path."""
    m = _model(pos, n_layers=2, layer_norm=True)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 14, (40, 8), generator=g)
    ids = torch.randint(0, 6, (40, 8), generator=g)
    fast = m(tokens, positions=[5, 7], pos_ids=ids)
    full = m.run_with_hooks(tokens, [], pos_ids=ids)
    assert torch.allclose(fast, full[:, [5, 7]], atol=1e-5)
    assert m.pos_embed.absolute_only == ("abacus" not in pos.split("+"))  # W_abacus is per token


def test_learned_positions_past_n_ctx_raise():
    m = _model("learned")
    with pytest.raises(GrokscopeError, match="cannot extrapolate"):
        m(torch.zeros(1, 9, dtype=torch.long))
    for pos in ("none", "sinusoidal", "rope", "alibi"):  # formulas: any length runs
        assert _model(pos)(torch.zeros(2, 20, dtype=torch.long)).shape == (2, 20, 14)


def test_every_model_pos_part_is_registered_and_declares_its_fast_path_flags():
    from grokscope.model.positional import _PARTS

    names = POSITIONAL.names()
    assert all(set(pos.split("+")) <= set(_PARTS) for pos in names)
    assert set(_PARTS) <= set(names)
    for kind, cls in _PARTS.items():
        assert "absolute_only" in vars(cls), kind  # declared by the class itself, not inherited
        if cls.residual_only:  # positions in the residual alone: no ids, so also absolute
            assert cls.absolute_only and not cls.needs_ids and not cls.attends_ids, kind
    assert {k for k, c in _PARTS.items() if c.residual_only} == {"learned", "none", "sinusoidal"}
    with pytest.raises(GrokscopeError, match="unknown model.pos 'bogus'"):
        _model("bogus")
