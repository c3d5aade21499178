"""Ablation, pairs, patching, attribution and circuits on models whose circuit is known by
construction (hand-set weights), plus the identities every intervention must keep."""

from __future__ import annotations

import json

import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.interp.ablation import Part, ablate, score_with_hooks
from grokscope.interp.attribution import edge_attribution, exact_edge_patching
from grokscope.interp.circuits import discover_circuit
from grokscope.interp.graph import build_graph, run_graph
from grokscope.interp.pairs import Pairs, logit_diff, make_pairs, read_pairs_jsonl
from grokscope.interp.patching import (
    attribution_node_patching,
    baselines,
    exact_node_patching,
    normalise,
    patch_nodes,
)
from grokscope.model import Transformer
from grokscope.tasks import Batch
from grokscope.tasks.base import all_true

# ----------------------------------------------------------------------------- hand-set models


def copy_model(V: int = 8, alpha: float = 10.0) -> Transformer:
    """[x, y] -> x: head 0 attends from position 1 to position 0 (by position alone) and copies the
    token there into the logits; head 1 attends to itself and writes into a dimension nobody reads.
    Residual: token one-hot [0, V), position one-hot [V, V + 2), a dead dimension V + 2."""
    d = V + 3
    cfg = ModelConfig(
        n_layers=1, d_model=d, n_heads=2, d_head=V, attn_only=True, pos="learned",
        d_vocab=V, d_vocab_out=V, n_ctx=2, mlp_bias=False,
    )  # fmt: skip
    m = Transformer(cfg, seed=0)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.embed.W_E[:, :V] = torch.eye(V)
        m.pos_embed.W_pos[0, V] = 1.0
        m.pos_embed.W_pos[1, V + 1] = 1.0
        a = m.blocks[0].attn
        a.W_Q[0, V + 1, 0] = 1.0  # the query at position 1 ...
        a.W_K[0, V, 0] = 20.0  # ... matches the key at position 0
        a.W_V[0, :V, :V] = torch.eye(V)
        a.W_O[0, :V, :V] = alpha * torch.eye(V)
        a.W_V[1, :V, :V] = torch.eye(V)
        a.W_O[1, :V, V + 2] = 1.0  # head 1 writes into the dead dimension
        m.unembed.W_U[:V, :V] = torch.eye(V)
    return m.eval()


def copy_pairs(V: int = 8, n: int = 40, seed: int = 0) -> Pairs:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (n,), generator=g)
    y = torch.randint(0, V, (n,), generator=g)
    x2 = (x + torch.randint(1, V, (n,), generator=g)) % V
    clean = Batch(torch.stack([x, y], 1), x[:, None], all_true(x[:, None]))
    corrupt = Batch(torch.stack([x2, y], 1), x2[:, None], all_true(x2[:, None]))
    return Pairs(clean, corrupt, x[:, None], x2[:, None], all_true(x[:, None]), [1], "copy")


def induction_model(V: int = 16, T: int = 12, alpha: float = 10.0) -> Transformer:
    """Two attention-only layers: L0H0 is a previous-token head (position p attends to p - 1 and
    writes that token into a 'previous token' subspace); L1H0 is an induction head (its query is the
    current token, its key the previous-token subspace, its value the key position's token, written
    into the logits). L0H1 and L1H1 write nothing. Residual: token [0, V), previous token [V, 2V),
    position [2V, 2V + T)."""
    d = 2 * V + T
    dh = max(V, T)
    cfg = ModelConfig(
        n_layers=2, d_model=d, n_heads=2, d_head=dh, attn_only=True, pos="learned",
        d_vocab=V, d_vocab_out=V, n_ctx=T, mlp_bias=False,
    )  # fmt: skip
    m = Transformer(cfg, seed=0)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.embed.W_E[:, :V] = torch.eye(V)
        m.pos_embed.W_pos[:, 2 * V : 2 * V + T] = torch.eye(T)
        a0, a1 = m.blocks[0].attn, m.blocks[1].attn
        for p in range(1, T):
            a0.W_Q[0, 2 * V + p, p - 1] = 1.0  # query at p looks for position p - 1
        for p in range(T):
            a0.W_K[0, 2 * V + p, p] = 30.0
        a0.W_V[0, :V, :V] = torch.eye(V)
        a0.W_O[0, :V, V : 2 * V] = torch.eye(V)  # -> previous-token subspace
        a1.W_Q[0, :V, :V] = 30.0 * torch.eye(V)  # current token ...
        a1.W_K[0, V : 2 * V, :V] = torch.eye(V)  # ... matches the previous token of the key position
        a1.W_V[0, :V, :V] = torch.eye(V)
        a1.W_O[0, :V, :V] = alpha * torch.eye(V)
        m.unembed.W_U[:V, :V] = torch.eye(V)
    return m.eval()


def induction_pairs(V: int = 16, T: int = 12, n: int = 30, j: int = 3, seed: int = 0) -> Pairs:
    """Distinct tokens a_0..a_5 repeated; the answer at position 6 + j - 1 (token a_{j-1}) is a_j.
    The corruption replaces a_{j-1} in the *first* copy by an unused token, so the previous-token
    head no longer marks position j as 'after a_{j-1}' and the induction head finds no match."""
    g = torch.Generator().manual_seed(seed)
    L = T // 2
    first = torch.stack([torch.randperm(V - 1, generator=g)[:L] for _ in range(n)])
    tokens = torch.cat([first, first], 1)
    pos = L + j - 1
    corrupt = tokens.clone()
    corrupt[:, j - 1] = V - 1
    answer = tokens[:, j][:, None]
    other = tokens[:, 0][:, None]
    mask = all_true(answer)
    return Pairs(Batch(tokens, answer, mask), Batch(corrupt, other, mask), answer, other, mask, [pos], "ind")


# ----------------------------------------------------------------------------- identities


def test_graph_forward_equals_model_for_every_encoding():
    for pos in ("learned", "none", "sinusoidal", "rope", "alibi", "abacus", "abacus_rope", "abacus+alibi"):
        for ln, inj, attn_only in ((False, False, False), (True, True, False), (True, False, True)):
            cfg = ModelConfig(
                n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, layer_norm=ln, input_injection=inj,
                attn_only=attn_only, attn_bias=True, pos=pos, d_vocab=14, d_vocab_out=14, n_ctx=10,
            )  # fmt: skip
            m = Transformer(cfg, seed=1)
            tok = torch.randint(0, 14, (5, 10), generator=torch.Generator().manual_seed(2))
            ids = torch.randint(0, 6, (5, 10)) if m.pos_embed.needs_ids else None
            g = build_graph(m)
            out = run_graph(m, g, tok, ids).logits
            assert torch.allclose(out, m(tok, pos_ids=ids), atol=1e-5), (pos, ln, inj, attn_only)
            some = run_graph(m, g, tok, ids, positions=[3, 7]).logits
            assert torch.allclose(some, m(tok, positions=[3, 7], pos_ids=ids), atol=1e-5)


def test_ablating_nothing_changes_nothing_and_resampling_itself_is_identity():
    m = copy_model()
    pairs = copy_pairs()
    batch = pairs.clean
    clean = score_with_hooks(m, batch, [1], [])
    for part in (Part("blocks.0.attn.hook_z", heads=[]), Part("blocks.0.hook_resid_mid", features=[])):
        r = ablate(m, batch, [1], part, method="zero")
        assert r.ablated == clean
    r = ablate(
        m, batch, [1], Part("blocks.0.hook_resid_mid", directions=torch.zeros(0, m.cfg.d_model)), "mean"
    )
    assert r.ablated == clean


def test_ablation_finds_the_copying_head():
    m = copy_model()
    batch = copy_pairs(n=64).clean
    h0 = ablate(m, batch, [1], Part("blocks.0.attn.hook_z", heads=[0]), method="zero")
    h1 = ablate(m, batch, [1], Part("blocks.0.attn.hook_z", heads=[1]), method="zero")
    assert h0.clean["acc"] == 1.0
    assert h0.ablated["acc"] < 0.5  # the answer is gone without head 0
    assert h1.ablated == h1.clean  # head 1 writes where nothing reads
    # the token subspace at position 0 carries the answer; the dead dimension does not
    tok = torch.eye(m.cfg.d_model)[:8]
    sub = ablate(
        m, batch, [1], Part("hook_embed", positions=[0], directions=tok), method="resample", controls=2
    )
    assert sub.ablated["acc"] < 0.5
    dead = ablate(m, batch, [1], Part("hook_embed", directions=torch.eye(m.cfg.d_model)[10:11]), "zero")
    assert dead.ablated == dead.clean


def test_patching_clean_into_clean_changes_nothing():
    m = copy_model()
    p = copy_pairs()
    same = Pairs(p.clean, p.clean, p.clean_answer, p.corrupt_answer, p.mask, p.loss_positions)
    with torch.no_grad():
        m_clean = float(logit_diff(m(p.clean.tokens)[:, [1]], p))
    for mode in ("denoising", "noising"):
        for (_name, _pos), v in exact_node_patching(m, same, mode).items():
            assert v == pytest.approx(m_clean, abs=1e-9)
    es = edge_attribution(m, same)
    assert es.scores.abs().max() == 0.0


def test_attribution_equals_exact_where_the_model_is_linear():
    """One attention-only layer, no layer norm: the logit difference is linear in each head's z at
    the answer position and in resid_post, so attribution patching is exact there, as it is for the
    edges into the logits."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_layers=1, d_model=16, n_heads=3, d_head=4, attn_only=True, pos="learned",
        d_vocab=8, d_vocab_out=8, n_ctx=2,
    )  # fmt: skip
    m = Transformer(cfg, seed=4).eval()
    p = copy_pairs()
    for mode in ("denoising", "noising"):
        ex = exact_node_patching(m, p, mode)
        at = attribution_node_patching(m, p, mode)
        for key in [(f"L0H{h}", 1) for h in range(3)] + [("resid_post0", 1)]:
            assert at[key] == pytest.approx(ex[key], rel=1e-6, abs=1e-6)
        assert at[("resid_pre0", 0)] != pytest.approx(ex[("resid_pre0", 0)], rel=1e-3)  # nonlinear: differs
    g, exact, _ = exact_edge_patching(m, p)
    es = edge_attribution(m, p)
    logits = g.receivers.index("logits")
    assert torch.allclose(es.scores[logits], exact[logits], atol=1e-6)
    assert exact[logits].abs().max() > 0.01


def test_copy_head_circuit_recovered_exactly():
    m = copy_model()
    p = copy_pairs()
    c = discover_circuit(m, p, threshold=0.9)
    assert set(c.edge_names()) == {"embed->L0H0.v", "L0H0->logits"}
    assert c.faithfulness == pytest.approx(1.0, abs=1e-6)
    assert max(c.random_faithfulness) < 0.9 or len(c.random_faithfulness) == 0
    rows = patch_nodes(m, p, ["denoising"])
    effect = {(r["node"], r["position"]): r["exact_effect"] for r in rows}
    assert effect[("L0H0", 1)] == pytest.approx(1.0, abs=1e-6)
    assert effect[("L0H1", 1)] == pytest.approx(0.0, abs=1e-6)
    assert effect[("resid_pre0", 1)] == pytest.approx(0.0, abs=1e-6)  # the answer is not at position 1 yet
    assert effect[("resid_pre0", 0)] == pytest.approx(1.0, abs=1e-6)
    flipped = {(r["node"], r["position"]): r["flipped"] for r in rows}
    assert flipped[("L0H0", 1)] == 1.0 and flipped[("L0H1", 1)] == 0.0


def test_induction_circuit_recovered_exactly():
    m = induction_model()
    p = induction_pairs()
    m_clean, m_corrupt = baselines(m, p)
    assert m_clean > 5 and m_clean - m_corrupt > 5
    c = discover_circuit(m, p, threshold=0.9)
    assert set(c.edge_names()) == {"embed->L0H0.v", "L0H0->L1H0.k", "L1H0->logits"}
    assert c.faithfulness > 0.99
    # node patching (denoising) puts the effect on the two heads, at the right positions
    rows = patch_nodes(m, p, ["denoising"])
    effect = {(r["node"], r["position"]): r["exact_effect"] for r in rows}
    assert effect[("L0H0", 3)] == pytest.approx(1.0, abs=0.02)  # position j: 'previous token was a_{j-1}'
    assert effect[("L1H0", 8)] == pytest.approx(1.0, abs=0.02)  # the answer position
    assert abs(effect[("L0H1", 3)]) < 1e-6 and abs(effect[("L1H1", 8)]) < 1e-6


def test_fast_tail_patching_equals_the_full_forward():
    """Last-block nodes patched by recomputing the block's tail at one position give the numbers
    a full patched forward gives (layer norm, an MLP, two layers, two answer positions)."""
    cfg = ModelConfig(
        n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, layer_norm=True, unembed_bias=True,
        pos="rope", d_vocab=8, d_vocab_out=8, n_ctx=4,
    )  # fmt: skip
    m = Transformer(cfg, seed=5).eval()
    g = torch.Generator().manual_seed(1)
    tok = torch.randint(0, 8, (30, 4), generator=g)
    bad = tok.clone()
    bad[:, 0] = (bad[:, 0] + 1) % 8
    ans, other = tok[:, 1:3], (tok[:, 1:3] + 3) % 8
    mask = all_true(ans)
    p = Pairs(Batch(tok, ans, mask), Batch(bad, other, mask), ans, other, mask, [1, 2])
    for mode in ("denoising", "noising"):
        fa, fb = {}, {}
        fast = exact_node_patching(m, p, mode, flips=fa)
        slow = exact_node_patching(m, p, mode, flips=fb, fast=False)
        assert fast.keys() == slow.keys() and fa.keys() == fb.keys()
        for k, v in slow.items():
            assert (v is None) == (fast[k] is None)
            if v is not None:
                assert fast[k] == pytest.approx(v, abs=1e-5), k
                assert fa[k] == fb[k], k
        assert len({round(v, 4) for v in slow.values() if v is not None}) > 5  # the patches do change things


def test_normalise():
    assert normalise(2.0, 2.0, 0.0, "denoising") == 1.0
    assert normalise(0.0, 2.0, 0.0, "noising") == 1.0


# ----------------------------------------------------------------------------- pairs per task


def _task(spec: str, *overrides: str):
    from grokscope.registry import TASKS
    from tests.conftest import make_config

    cfg = make_config(spec, *overrides)
    return TASKS.get(cfg.task.kind)(cfg.task, cfg.seed)


def test_modular_pairs_change_a_and_the_answer():
    task = _task("tiny")
    base = task.eval_sets()["test"]
    p = make_pairs(task, base, operand="a")
    assert (p.clean.tokens[:, 0] != p.corrupt.tokens[:, 0]).all()
    assert (p.clean.tokens[:, 1:] == p.corrupt.tokens[:, 1:]).all()
    assert (p.corrupt_answer[:, 0] == (p.corrupt.tokens[:, 0] + p.corrupt.tokens[:, 1]) % task.p).all()


@pytest.mark.parametrize("flip", ["yes", "no"])
def test_addition_pairs_control_the_carry(flip):
    task = _task("five_digit_addition")
    base = task.eval_sets()["test"]
    p = make_pairs(task, base, operand="a", column=1, carry_flip=flip)
    assert len(p) > 50
    A, A2 = p.clean.meta["a_digits"], p.corrupt.meta["a_digits"]
    changed = (A != A2).sum(1)
    assert (changed == 1).all() and (A[:, 1] != A2[:, 1]).all()
    flipped = p.clean.meta["carry_in"][:, 2] != p.corrupt.meta["carry_in"][:, 2]
    assert flipped.all() if flip == "yes" else (~flipped).all()
    assert (p.corrupt.targets == p.corrupt.tokens[:, [t + 1 for t in task.loss_positions]]).all()


def test_induction_and_skip_trigram_pairs():
    task = _task("induction_heads")
    base = task.eval_sets()["test"]
    p = make_pairs(task, base)
    diff = p.clean.tokens != p.corrupt.tokens
    assert (diff.sum(1) == 2).all()  # the repeated token, in both copies
    assert (p.differs.sum(1) == 1).all()  # one induction position's answer changes
    task = _task("skip_trigram")
    base = task.eval_sets()["test"]
    p = make_pairs(task, base)
    assert ((p.clean.tokens != p.corrupt.tokens).sum(1) == 1).all()
    assert (p.clean_answer != p.corrupt_answer).all()


def test_pairs_jsonl_and_its_errors(tmp_path):
    task = _task("tiny")
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"clean": [1, 2, 31], "corrupt": [3, 2, 31]}) + "\n\n")
    p = read_pairs_jsonl(good, task)
    assert p.clean_answer.tolist() == [[3]] and p.corrupt_answer.tolist() == [[5]]
    for line, message in (
        ("not json", "line 1: not JSON"),
        ('{"clean": [1, 2, 31]}', '"clean" and "corrupt"'),
        ('{"clean": [1, 2], "corrupt": [1, 2, 31]}', "has 2 tokens"),
        ('{"clean": [1, 2, 99], "corrupt": [1, 2, 31]}', "token 99"),
        ('{"clean": [1, 2, 31], "corrupt": [1, 2, 31], "clean_answer": [1, 2]}', "1 integer answers"),
    ):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(GrokscopeError, match=message.replace("[", r"\[")):
            read_pairs_jsonl(bad, task)
