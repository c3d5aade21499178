"""Index hints (Zhou et al. 2023) in the addition task: exact token sequences, answers against Python
integers, metadata alignment, greedy generation with the hints the model writes, errors, and a tiny
training run with hints on."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from grokscope.config import ModelConfig, apply_overrides, from_dict
from grokscope.errors import GrokscopeError
from grokscope.evaluation.generate import _ids_for, greedy_generate
from grokscope.model.positional import PositionalEncoding, position_ids
from grokscope.tasks.addition import (
    EOS,
    HINT0,
    PAD,
    TOKEN_NAMES,
    AdditionConfig,
    AdditionTask,
    Operands,
    per_position,
)
from grokscope.tasks.carries import int_to_digits, number_lengths

FORMATS = [
    ("fixed", False, False),
    ("fixed", True, True),
    ("fixed", True, False),
    ("varlen", False, False),
    ("varlen", True, False),
    ("varlen", False, True),
    ("varlen", True, True),
]
TOKEN = re.compile(r"<h\d+>|<eos>|<pad>|[0-9+=]")


def hinted(fmt, rev_ops=False, rev_ans=False, max_digits=3, **kw) -> AdditionTask:
    kw = {"n_test": 10, "n_stress": 0, **kw}
    cfg = AdditionConfig(
        max_digits=max_digits,
        format=fmt,
        reverse_operands=rev_ops,
        reverse_answer=rev_ans,
        index_hints=True,
        **kw,
    )
    cfg.validate()
    return AdditionTask(cfg, seed=0)


def operands(task: AdditionTask, pairs: list[tuple[int, int]]) -> Operands:
    A = torch.tensor([int_to_digits(a, task.M) for a, _ in pairs], dtype=torch.long)
    B = torch.tensor([int_to_digits(b, task.M) for _, b in pairs], dtype=torch.long)
    return Operands(A, B, number_lengths(A), number_lengths(B))


def ids(text: str) -> list[int]:
    """Hand-written text -> token ids, independently of the task's own tables."""
    tokens = TOKEN.findall(text)
    assert "".join(tokens) == text
    special = {"+": 10, "=": 11, "<eos>": 12, "<pad>": 13}
    return [
        14 + int(t[2:-1]) if t.startswith("<h") else special[t] if t in special else int(t) for t in tokens
    ]


# 123 + 45 = 168, max_digits = 3 (answer: 4 columns in the fixed format)
HAND = {
    ("fixed", False, False): "<h2>1<h1>2<h0>3+<h2>0<h1>4<h0>5=<h3>0<h2>1<h1>6<h0>8",
    ("fixed", True, True): "<h0>3<h1>2<h2>1+<h0>5<h1>4<h2>0=<h0>8<h1>6<h2>1<h3>0",
    ("fixed", True, False): "<h0>3<h1>2<h2>1+<h0>5<h1>4<h2>0=<h3>0<h2>1<h1>6<h0>8",
    ("varlen", False, False): "<h2>1<h1>2<h0>3+<h1>4<h0>5=<h2>1<h1>6<h0>8<eos>",
    ("varlen", True, False): "<h0>3<h1>2<h2>1+<h0>5<h1>4=<h2>1<h1>6<h0>8<eos>",
    ("varlen", False, True): "<h2>1<h1>2<h0>3+<h1>4<h0>5=<h0>8<h1>6<h2>1<eos>",
    ("varlen", True, True): "<h0>3<h1>2<h2>1+<h0>5<h1>4=<h0>8<h1>6<h2>1<eos>",
}


@pytest.mark.parametrize("fmt,rev_ops,rev_ans", FORMATS)
def test_hand_checked_token_sequence(fmt, rev_ops, rev_ans):
    task = hinted(fmt, rev_ops, rev_ans)
    text = HAND[(fmt, rev_ops, rev_ans)]
    want = ids(text)
    batch = task.encode(operands(task, [(123, 45)]))
    row = batch.tokens[0].tolist()
    assert row[: len(want)] == want
    assert all(t == PAD for t in row[len(want) :])
    assert task.decode(batch.tokens) == [text]
    # vocabulary and context: hints after the old tokens, h0..h3 for 3-digit operands
    assert task.token_names() == TOKEN_NAMES + ["<h0>", "<h1>", "<h2>", "<h3>"]
    assert task.d_vocab == task.d_vocab_out == 18
    assert task.n_ctx == (22 if fmt == "fixed" else 23)  # 6M+4 / 6M+5
    if fmt == "fixed":
        assert len(want) == task.n_ctx
    # loss reads the answer's hints and digits (and the EOS): targets are every answer token
    answer = want[want.index(11) + 1 :]
    assert batch.targets[0][batch.mask[0]].tolist() == answer
    assert int(batch.meta["eq_pos"][0]) == want.index(11)


def test_without_hints_unchanged():
    """Hints off: the same task as before (vocabulary, context, tokens); hints on: the same tokens
    once the hints are taken out."""
    for fmt, rev_ops, rev_ans in FORMATS:
        kw = {"max_digits": 4, "format": fmt, "reverse_operands": rev_ops, "reverse_answer": rev_ans}
        plain = AdditionTask(AdditionConfig(**kw, n_test=10, n_stress=0), 0)
        hint = AdditionTask(AdditionConfig(**kw, n_test=10, n_stress=0, index_hints=True), 0)
        assert plain.token_names() == TOKEN_NAMES and plain.d_vocab == plain.d_vocab_out == 14
        assert plain.n_ctx == (15 if fmt == "fixed" else 16)
        assert plain.max_answer_tokens == (5 if fmt == "fixed" else 6)
        assert hint.max_answer_tokens == (10 if fmt == "fixed" else 11)
        a, b = plain.train_batch(3, 200, 1), hint.train_batch(3, 200, 1)
        assert torch.equal(a.meta["a_digits"], b.meta["a_digits"])
        for x, y in zip(a.tokens.tolist(), b.tokens.tolist(), strict=True):
            assert [t for t in x if t != PAD] == [t for t in y if t < HINT0 and t != PAD]
        assert plain.decode(a.tokens[:1])[0] == re.sub(r"<h\d+>", "", hint.decode(b.tokens[:1])[0])


def split_numbers(text: str) -> list[list[str]]:
    """`<h1>1<h0>2+...` -> [[hint, digit, hint, digit, ...] for a, b, answer]."""
    lhs, ans = text.replace("<eos>", "").split("=")
    x, y = lhs.split("+")
    return [TOKEN.findall(part) for part in (x, y, ans)]


@pytest.mark.parametrize("fmt,rev_ops,rev_ans", FORMATS)
def test_answers_match_python_integers(fmt, rev_ops, rev_ans):
    task = hinted(fmt, rev_ops, rev_ans, max_digits=7, sampling="balanced", carry_heavy=0.3, n_test=20)
    batch = task.train_batch(step=2, batch_size=3000, seed=5)
    meta = batch.meta
    for i, text in enumerate(task.decode(batch.tokens)):
        values = []
        for part, rev in zip(split_numbers(text), (rev_ops, rev_ops, rev_ans), strict=True):
            hints, digits = part[0::2], part[1::2]
            assert len(hints) == len(digits) and all(d.isdigit() for d in digits), text
            # every digit's hint names its column, in written order
            cols = list(range(len(digits)))
            assert hints == [f"<h{c}>" for c in (cols if rev else cols[::-1])], text
            values.append(int("".join(digits[::-1] if rev else digits)))
        a, b, answer = values
        assert a + b == answer, text
        assert (a, b, answer) == (int(meta["a"][i]), int(meta["b"][i]), int(meta["sum"][i]))
        if fmt == "varlen":
            assert text.endswith("<eos>") and len(str(answer)) == len(split_numbers(text)[2]) // 2


@pytest.mark.parametrize("fmt,rev_ops,rev_ans", FORMATS)
def test_metadata_alignment(fmt, rev_ops, rev_ans):
    task = hinted(fmt, rev_ops, rev_ans, max_digits=6, sampling="balanced", n_test=20)
    batch = task.train_batch(step=0, batch_size=500, seed=2)
    tok, meta = batch.tokens, batch.meta
    col, index = meta["column"], meta["digit_index"]
    hint = tok >= HINT0
    digit = tok < 10
    assert hint.any() and torch.equal(hint.sum(1), digit.sum(1))
    assert (col[hint] == -1).all() and (index[hint] == 0).all()
    assert torch.equal(col >= 0, digit) and torch.equal(index > 0, digit)
    # each digit follows its own hint, and the hint names the digit's column
    assert torch.equal(hint[:, :-1], digit[:, 1:])
    assert torch.equal(tok[:, :-1][hint[:, :-1]] - HINT0, col[:, 1:][digit[:, 1:]])
    # digit_index counts digits only, 1.. within each number in written order
    for i in range(len(batch)):
        for lo, hi in ((0, int(meta["eq_pos"][i])), (int(meta["eq_pos"][i]), tok.shape[1])):
            seg = index[i, lo:hi][digit[i, lo:hi]]
            pieces = torch.tensor_split(seg, (seg == 1).nonzero()[:, 0][1:].tolist())
            assert all(torch.equal(p, torch.arange(1, len(p) + 1)) for p in pieces)
    # answer_column: -1 at hint targets (and EOS / masked), the target digit's column elsewhere
    pos = torch.tensor(task.loss_positions)
    targets, acol = batch.targets, meta["answer_column"]
    assert torch.equal(targets, tok[:, pos + 1])
    assert (acol[targets >= HINT0] == -1).all()
    is_digit_target = batch.mask & (targets < 10)
    assert torch.equal(acol >= 0, is_digit_target)
    assert torch.equal(acol[is_digit_target], col[:, pos + 1][is_digit_target])
    # the hint target right before each answer digit names that digit's column
    hint_before = targets[:, :-1][is_digit_target[:, 1:]]
    assert torch.equal(hint_before - HINT0, acol[:, 1:][is_digit_target[:, 1:]])
    n_answer = (acol >= 0).sum(1)
    if fmt == "fixed":
        assert batch.mask.all() and (n_answer == task.n_columns).all()
        assert len(task.loss_positions) == 2 * task.n_columns
    else:
        assert torch.equal(n_answer, meta["len_sum"])
        assert torch.equal(batch.mask.sum(1), 2 * meta["len_sum"] + 1)
        assert torch.equal(((targets == EOS) & batch.mask).sum(1), torch.ones(len(batch), dtype=torch.long))
    # per-column labels (probes) line up with digit targets only
    carry = per_position(batch, "carry_in")
    assert torch.equal(carry >= 0, acol >= 0)
    rows = torch.arange(len(batch))[:, None].expand_as(acol)
    ok = acol >= 0
    assert torch.equal(carry[ok], meta["carry_in"].long()[rows[ok], acol[ok]])
    from grokscope.interp.labels import aligned_positions

    aligned = aligned_positions(batch, [f"carry_in.{c}" for c in range(task.n_columns)], task.loss_positions)
    assert aligned
    for p in aligned.values():
        k = task.loss_positions.index(p)
        assert (targets[:, k][batch.mask[:, k]] < 10).all()
    # generation's digit indices for the true answer equal the task's own
    assert torch.equal(_ids_for(batch, tok, True).meta["digit_index"], index)


class _IdsRecorder(PositionalEncoding):
    needs_ids = True


class _Oracle(nn.Module):
    """Writes the true next token (hints, digits, EOS) -- except a wrong hint where `spoil` says --
    and checks, at every call, that the Abacus ids it gets agree with the task's."""

    def __init__(self, task: AdditionTask, batch, spoil: torch.Tensor | None = None):
        super().__init__()
        self.cfg = ModelConfig(
            pos="abacus", n_ctx=task.n_ctx, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out
        )
        self.pos_embed = _IdsRecorder()
        self.task, self.batch, self.calls = task, batch, 0
        self.spoil = torch.zeros(len(batch), dtype=torch.bool) if spoil is None else spoil

    def forward(self, tokens, positions=None, pos_ids=None):
        n, T = tokens.shape
        true = self.batch.tokens
        self.calls += 1
        agree = tokens == true
        prefix = agree.long().cumprod(1).bool()  # the positions written right so far
        assert torch.equal(pos_ids[prefix], self.batch.meta["digit_index"][prefix])
        nxt = torch.cat([true[:, 1:], torch.full((n, 1), PAD)], 1)
        first_hint = (nxt >= HINT0) & (torch.arange(T)[None] > self.batch.meta["eq_pos"][:, None])
        first_hint &= first_hint.long().cumsum(1) == 1
        wrong = self.spoil[:, None] & first_hint
        nxt = torch.where(wrong, HINT0 + (nxt - HINT0 + 1) % self.task.n_columns, nxt)
        logits = torch.nn.functional.one_hot(nxt, self.task.d_vocab_out).float()
        return logits if positions is None else logits[:, positions]


@pytest.mark.parametrize("fmt,rev_ops,rev_ans", FORMATS)
def test_greedy_generation_writes_hints(fmt, rev_ops, rev_ans):
    task = hinted(fmt, rev_ops, rev_ans, max_digits=5, sampling="balanced", n_test=20)
    batch = task.train_batch(0, 300, 0)
    oracle = _Oracle(task, batch)
    gen, exact = greedy_generate(oracle, task, batch)
    assert exact.all()
    assert torch.equal(gen, batch.tokens)
    assert oracle.calls <= task.max_answer_tokens
    # a model that writes one wrong answer hint is not exactly right, and stops being read there
    spoil = torch.arange(len(batch)) % 3 == 0
    gen, exact = greedy_generate(_Oracle(task, batch, spoil), task, batch)
    assert torch.equal(exact, ~spoil)
    assert not torch.equal(gen[spoil], batch.tokens[spoil])


def test_bad_settings_give_one_clear_error(tmp_path):
    with pytest.raises(GrokscopeError, match="index_hints"):
        from_dict({"task": {"kind": "addition", "max_digits": 2, "n_test": 10, "index_hints": 1}})
    from grokscope.lengths.grid import length_grid
    from grokscope.lengths.study import StudySpec, sweep_spec
    from grokscope.run import build

    config = from_dict(
        apply_overrides(
            {"task": {"kind": "addition", "max_digits": 2, "n_test": 10, "index_hints": True}},
            ["model.d_model=16", "model.d_head=4", "model.d_mlp=32", "model.pos=abacus"],
        )
    )
    model = build(config)[1]
    assert length_grid(model, config.task, [1, 2], n=3).shape == (2, 2)
    with pytest.raises(GrokscopeError, match="hint tokens"):
        length_grid(model, config.task, [1, 4], n=3)
    with pytest.raises(GrokscopeError, match="index_hints"):
        sweep_spec(
            StudySpec(
                "addition_lengths",
                ["abacus"],
                [0],
                train_digits=(1, 3),
                test_digits=(1, 5),
                overrides=["task.index_hints=true"],
            ),
            tmp_path,
        )


@pytest.mark.parametrize("fmt,rev,pos", [("fixed", False, "learned"), ("varlen", True, "abacus")])
def test_training_smoke_with_hints(tmp_path, fmt, rev, pos):
    from grokscope.evaluation.by_length import example_scores
    from grokscope.evaluation.positions import position_labels
    from grokscope.run import Run
    from grokscope.train import train

    cfg = from_dict(
        apply_overrides(
            {
                "task": {
                    "kind": "addition",
                    "max_digits": 2,
                    "format": fmt,
                    "reverse_operands": rev,
                    "reverse_answer": rev,
                    "index_hints": True,
                    "n_test": 100,
                    "n_stress": 0,
                }
            },
            [
                "model.d_model=32",
                "model.d_head=8",
                "model.d_mlp=64",
                f"model.pos={pos}",
                "train.steps=40",
                "train.batch_size=64",
                "train.lr=1e-2",
                "train.eval.every=20",
                "train.eval.dense_until=0",
                "train.checkpoint.every=40",
                "train.threads=1",
            ],
        )
    )
    train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 40
    assert rows[-1]["train_loss"] < 0.7 * rows[0]["train_loss"]
    assert rows[-1]["test_loss"] < 0.7 * rows[0]["test_loss"]
    run = Run.open(tmp_path / "run")
    task = run.task
    model = run.model()
    assert task.index_hints and model.cfg.d_vocab == task.d_vocab == 17
    K = len(task.loss_positions)
    assert len(rows[-1]["test_loss_by_pos"]) == K
    if fmt == "fixed":
        labels = position_labels(task)
        assert len(labels) == K and labels[:2] == ["hint x10^2", "digit x10^2"]
    batch = task.eval_sets()["test"]
    gen, gen_exact = greedy_generate(model, task, batch)
    scores = example_scores(model, task, batch)
    assert torch.equal(scores["gen_exact"], gen_exact)
    assert torch.equal(scores["digits"], (batch.meta["answer_column"] >= 0).sum(1))
    # greedy generation and teacher forcing go wrong at the same answer token (argmax decoding)
    pos = torch.tensor(task.loss_positions)
    logits = model(batch.tokens, positions=task.loss_positions, pos_ids=position_ids(model, batch))
    tf_wrong = batch.mask & (logits.argmax(-1) != batch.targets)
    gen_wrong = batch.mask & (gen[:, pos + 1] != batch.targets)
    first = lambda w: torch.where(w.any(1), w.long().argmax(1), K)  # noqa: E731
    assert torch.equal(first(tf_wrong), first(gen_wrong))
    assert torch.equal(scores["exact"], gen_exact)
    assert (first(tf_wrong) > 0).double().mean() > 0.9  # it writes the answer's first hint itself
