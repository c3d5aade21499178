"""Addition task: answers, carries and cascades against Python integers; formats; errors; the
other generated tasks (induction, skip trigram); a short training smoke test; eval/data verbs."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from grokscope.cli import main
from grokscope.config import apply_overrides, from_dict
from grokscope.errors import GrokscopeError
from grokscope.presets import load_preset_or_file
from grokscope.tasks.addition import EOS, AdditionConfig, AdditionTask, per_position
from grokscope.tasks.carries import digits_to_int

FORMATS = [
    ("fixed", False, False),
    ("fixed", True, True),
    ("varlen", False, False),
    ("varlen", True, False),
    ("varlen", False, True),
    ("varlen", True, True),
]


def reference(a: int, b: int, n_columns: int) -> dict[str, list[int]]:
    """Column-by-column schoolbook addition with Python integers."""
    da = [int(c) for c in str(a)[::-1]] + [0] * n_columns
    db = [int(c) for c in str(b)[::-1]] + [0] * n_columns
    carry, out = 0, {"carry_in": [], "carry_out": [], "sum_is_9": [], "ripple": [], "sum_digits": []}
    for c in range(n_columns):
        out["carry_in"].append(carry)
        total = da[c] + db[c] + carry
        carry = total // 10
        out["carry_out"].append(carry)
        out["sum_digits"].append(total % 10)
        out["sum_is_9"].append(int(da[c] + db[c] == 9))
        passed = c > 0 and out["carry_in"][c] and out["sum_is_9"][c - 1]
        out["ripple"].append(out["ripple"][c - 1] + 1 if passed else 0)
    # the whole cascade's length, seen from every column its carry enters
    out["cascade_len"] = [0] * n_columns
    for c in reversed(range(n_columns)):
        if out["carry_in"][c] and out["sum_is_9"][c] and c + 1 < n_columns:
            out["cascade_len"][c] = out["cascade_len"][c + 1]
        elif out["carry_in"][c]:
            out["cascade_len"][c] = out["ripple"][c]
    longest = max(out["ripple"])
    out["carry_class"] = 0 if not any(out["carry_out"]) else min(1 + longest, 5)
    assert sum(d * 10**c for c, d in enumerate(out["sum_digits"])) == a + b
    return out


def parse(text: str, cfg: AdditionConfig) -> tuple[int, int, int]:
    lhs, ans = text.replace("<eos>", "").split("=")
    x, y = lhs.split("+")
    if cfg.reverse_operands:
        x, y = x[::-1], y[::-1]
    if cfg.reverse_answer:
        ans = ans[::-1]
    return int(x), int(y), int(ans)


def check_batch(task: AdditionTask, batch) -> None:
    cfg = task.config
    meta = batch.meta
    texts = task.decode(batch.tokens)
    for i, text in enumerate(texts):
        a, b, ans = parse(text, cfg)
        assert a + b == ans, text
        assert digits_to_int(meta["a_digits"][i].tolist()) == a
        assert digits_to_int(meta["b_digits"][i].tolist()) == b
        assert len(str(a)) == meta["len_a"][i] and len(str(b)) == meta["len_b"][i]
        assert cfg.min_digits <= len(str(a)) <= cfg.max_digits
        ref = reference(a, b, task.n_columns)
        for key in ("carry_in", "carry_out", "sum_is_9", "ripple", "cascade_len", "sum_digits"):
            assert meta[key][i].long().tolist() == ref[key], (text, key)
        assert int(meta["carry_class"][i]) == ref["carry_class"], text
        if cfg.format == "varlen":
            assert text.endswith("<eos>") and str(ans) == (
                text.split("=")[1][:-5][::-1] if cfg.reverse_answer else text.split("=")[1][:-5]
            )
        else:
            assert len(text) == 3 * cfg.max_digits + 3
    # targets are the next tokens at the loss positions; the mask covers answer digits (+ EOS)
    pos = torch.tensor(task.loss_positions)
    assert torch.equal(batch.targets, batch.tokens[:, pos + 1])
    n_answer = (meta["answer_column"] >= 0).sum(1)
    assert torch.equal(
        n_answer, meta["len_sum"] if cfg.format == "varlen" else torch.full_like(n_answer, task.n_columns)
    )
    if cfg.format == "varlen":
        eos_targets = (batch.targets == EOS) & batch.mask
        assert torch.equal(eos_targets.sum(1), torch.ones(len(batch), dtype=torch.long))
        assert torch.equal(batch.mask.sum(1), n_answer + 1)
    # answer_column and digit_index agree with the written digits
    col = meta["column"]
    digits = batch.tokens < 10
    assert torch.equal(col >= 0, digits) and torch.equal(meta["digit_index"] > 0, digits)
    carry = per_position(batch, "carry_in")
    assert ((carry >= 0) == (meta["answer_column"] >= 0)).all()


@pytest.mark.parametrize("fmt,rev_ops,rev_ans", FORMATS)
def test_answers_and_carries_match_python_integers(fmt, rev_ops, rev_ans):
    cfg = AdditionConfig(
        min_digits=1,
        max_digits=7,
        format=fmt,
        reverse_operands=rev_ops,
        reverse_answer=rev_ans,
        sampling="balanced",
        carry_heavy=0.5,
        n_test=20,
        n_stress=0,
    )
    cfg.validate()
    task = AdditionTask(cfg, seed=3)
    check_batch(task, task.train_batch(step=5, batch_size=700, seed=1))


@pytest.mark.parametrize("fmt", ["fixed", "varlen"])
def test_edge_cases_and_stress_sets(fmt):
    cfg = AdditionConfig(
        min_digits=1, max_digits=5, format=fmt, reverse_operands=fmt == "varlen", n_test=50, n_stress=40
    )
    task = AdditionTask(cfg, seed=0)
    sets = task.eval_sets()
    texts = task.decode(sets["edge"].tokens)
    for probe in ("99999+00001=100000", "99999+99999=199998", "11111+88889=100000", "50000+50000=100000"):
        if fmt == "fixed":
            assert probe in texts
    if fmt == "varlen":  # reversed operands: 99999+1 is written 99999+1
        assert "99999+1=100000<eos>" in texts
    assert len(texts) == len(set(texts))
    for k in range(6):
        batch = sets[f"S{k}"]
        assert len(batch) == 40
        assert (batch.meta["carry_class"] == k).all()
        check_batch(task, batch)
    check_batch(task, sets["edge"])
    # 99999+1 ripples through four sum-9 columns: class S5
    i = texts.index("99999+1=100000<eos>" if fmt == "varlen" else "99999+00001=100000")
    assert sets["edge"].meta["max_cascade"][i] == 4 and sets["edge"].meta["carry_class"][i] == 5


def test_twenty_digit_operands_and_digit_index():
    cfg = AdditionConfig(
        min_digits=18,
        max_digits=22,
        format="varlen",
        reverse_operands=True,
        reverse_answer=True,
        n_test=10,
        n_stress=0,
    )
    task = AdditionTask(cfg, seed=0)
    batch = task.train_batch(0, 300, 0)
    check_batch(task, batch)
    assert "a" not in batch.meta  # beyond int64: digits only
    # reversed numbers: digit_index counts from the least significant digit = column + 1
    digits = batch.meta["column"] >= 0
    assert torch.equal(batch.meta["digit_index"][digits], batch.meta["column"][digits] + 1)
    fwd = AdditionTask(AdditionConfig(max_digits=3, format="varlen", n_test=10, n_stress=0), 0).train_batch(
        0, 1, 0
    )
    assert fwd.meta["digit_index"][0, : int(fwd.meta["len_a"][0])].tolist() == list(
        range(1, int(fwd.meta["len_a"][0]) + 1)
    )


def test_sampling_modes():
    n = 2000
    bal = AdditionTask(
        AdditionConfig(max_digits=3, format="varlen", sampling="balanced", n_test=10, n_stress=0), 0
    )
    la = bal.train_batch(0, n, 0).meta["len_a"]
    assert all(abs((la == L).double().mean().item() - 1 / 3) < 0.05 for L in (1, 2, 3))
    uni = AdditionTask(AdditionConfig(max_digits=3, format="varlen", n_test=10, n_stress=0), 0)
    assert (uni.train_batch(0, n, 0).meta["len_a"] == 3).double().mean() > 0.85
    up = AdditionTask(
        AdditionConfig(max_digits=3, format="varlen", short_weight=10.0, n_test=10, n_stress=0), 0
    )
    assert (up.train_batch(0, n, 0).meta["len_a"] < 3).double().mean() > 0.4
    heavy = AdditionTask(AdditionConfig(max_digits=5, carry_heavy=1.0, n_test=10, n_stress=0), 0)
    plain = AdditionTask(AdditionConfig(max_digits=5, n_test=10, n_stress=0), 0)
    assert (
        heavy.train_batch(0, n, 0).meta["max_cascade"].double().mean()
        > 2 * plain.train_batch(0, n, 0).meta["max_cascade"].double().mean()
    )


def test_batches_are_pure_and_split_is_disjoint():
    cfg = AdditionConfig(max_digits=2, format="varlen", n_train=3000, n_test=500, n_stress=0)
    task = AdditionTask(cfg, seed=4)
    again = AdditionTask(cfg, seed=4)
    assert torch.equal(task.train_batch(7, 32, 1).tokens, again.train_batch(7, 32, 1).tokens)
    train = {tuple(r) for r in task.train_batch(0, 0, 0).tokens.tolist()}
    test = {tuple(r) for r in task.eval_sets()["test"].tokens.tolist()}
    assert len(train) == 3000 and len(test) == 500 and not train & test
    assert task.use_split(task.split_arrays()) is False  # its own split: nothing changes
    # every (len a, len b) cell lends the same share to the test set, small cells included
    bal = AdditionTask(
        AdditionConfig(
            max_digits=2, format="varlen", sampling="balanced", n_train=4000, n_test=1000, n_stress=0
        ),
        0,
    )
    small = [
        int(((b.meta["len_a"] == 1) & (b.meta["len_b"] == 1)).sum())
        for b in (bal.train_batch(0, 0, 0), bal.eval_sets()["test"])
    ]
    assert small[0] > 50 and 5 < small[1] < 40, small
    # infinite data never trains on a held-out example
    inf = AdditionTask(AdditionConfig(max_digits=1, format="varlen", n_test=40, n_stress=0), 0)
    held = {tuple(r) for r in inf.eval_sets()["test"].tokens.tolist()}
    batch = inf.train_batch(0, 2000, 0)
    used = {tuple(r) for r, m in zip(batch.tokens.tolist(), batch.mask.any(1).tolist(), strict=True) if m}
    assert not used & held


@pytest.mark.parametrize(
    "override,needle",
    [
        ("task.min_digits=0", "min_digits must be >= 1"),
        ("task.max_digits=0", "max_digits must be in"),
        ("task.n_test=200", "larger than the 100 distinct examples"),
        ("task.n_train=95", "would overlap"),
        ("task.carry_heavy=2", "carry_heavy"),
    ],
)
def test_bad_settings_give_one_clear_error(override, needle):
    data = {"task": {"kind": "addition", "max_digits": 1, "n_test": 10}}
    with pytest.raises(GrokscopeError, match=needle):
        from_dict(apply_overrides(data, [override]))


def test_overlapping_saved_split_is_rejected():
    task = AdditionTask(AdditionConfig(max_digits=2, n_train=100, n_test=50, n_stress=0), 0)
    arrays = task.split_arrays()
    arrays["train_a"][:50], arrays["train_b"][:50] = arrays["test_a"], arrays["test_b"]
    with pytest.raises(GrokscopeError, match="share examples"):
        task.use_split(arrays)


def test_induction_and_skip_trigram_tasks():
    ind = from_dict(
        {"task": {"kind": "induction", "vocab": 20, "seq_len": 16, "sub_len": 4, "n_train": 50, "n_test": 30}}
    )
    from grokscope.tasks import build_task

    task = build_task(ind.task, 0)
    b = task.train_batch(0, 0, 0)
    for i in range(len(b)):
        s, d = int(b.meta["src_start"][i]), int(b.meta["copy_start"][i])
        assert d >= s + 4 and b.tokens[i, s : s + 4].tolist() == b.tokens[i, d : d + 4].tolist()
        assert b.mask[i].nonzero()[:, 0].tolist() == list(range(d, d + 3))
    st = from_dict({"task": {"kind": "skip_trigram", "n_train": 40, "n_test": 20}})
    sk = build_task(st.task, 0)
    b = sk.train_batch(0, 0, 0)
    assert torch.equal(b.targets[:, 0], sk.table[b.meta["key"], b.meta["query"]])
    assert (b.tokens[torch.arange(len(b)), b.meta["key_pos"]] == b.meta["key"]).all()
    with pytest.raises(GrokscopeError, match="sub_len"):
        from_dict({"task": {"kind": "induction", "seq_len": 8, "sub_len": 5}})


@pytest.mark.slow
def test_training_smoke_and_eval_data_verbs(tmp_path, capsys):
    import shutil

    from grokscope.train import train

    cfg = from_dict(
        apply_overrides(
            {
                "task": {
                    "kind": "addition",
                    "max_digits": 2,
                    "format": "varlen",
                    "n_train": 1000,
                    "n_test": 200,
                    "n_stress": 10,
                }
            },
            [
                "model.d_model=32",
                "model.d_head=8",
                "model.d_mlp=64",
                "train.steps=40",
                "train.batch_size=64",
                "train.lr=3e-3",
                "train.eval.every=20",
                "train.eval.dense_until=0",
                "train.checkpoint.every=40",
                "train.threads=1",
            ],
        )
    )
    runs = [tmp_path / "add0", tmp_path / "add1"]
    row = train(cfg, runs[0], progress=False).last_metrics
    assert len(row["test_loss_by_pos"]) == len(row["test_acc_by_pos"]) == 6
    assert "S0_loss" in row and "edge_exact" in row and 0 < row["test_loss"] < 3
    shutil.copytree(runs[0], runs[1])  # a stand-in second seed for the across-runs table
    for spec in ("induction_heads", "skip_trigram"):
        cfg = from_dict(
            apply_overrides(
                load_preset_or_file(spec),
                [
                    "train.steps=10",
                    "train.eval.every=10",
                    "train.eval.dense_until=0",
                    "train.checkpoint.every=10",
                    "train.threads=1",
                ],
            )
        )
        result = train(cfg, tmp_path / spec, progress=False)
        assert result.step == 10 and result.last_metrics["test_loss"] < 10
    assert main(["eval", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "both")]) == 0
    text = (runs[0] / "analysis" / "accuracy_by_length.csv").read_text()
    assert "test,cell,1,2" in text and "train,carry_class" in text
    assert (runs[0] / "analysis" / "accuracy_by_length.png").stat().st_size > 1000
    assert (tmp_path / "both" / "accuracy_by_length_runs.png").is_file()
    with open(tmp_path / "both" / "accuracy_by_length_runs.csv") as f:
        both = list(csv.DictReader(f))
    per_run = [
        len((r / "analysis" / "accuracy_by_length.csv").read_text().splitlines()) - 1 for r in runs[:2]
    ]
    assert len(both) == sum(per_run) and [row["run"] for row in both].count(str(runs[0])) == per_run[0]
    assert main(["data", "addition_varlen", "--n", "5", "--out", str(tmp_path / "d.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and {"text", "tokens", "carry_out", "digit_index", "mask"} <= set(lines[0])
    assert main(["eval", str(tmp_path / "skip_trigram")]) == 2
