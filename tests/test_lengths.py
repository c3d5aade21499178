"""Positional encodings on the addition task, the length grid, and the `lengths` study end to end."""

import pytest
import torch

import grokscope.run
import grokscope.train
from grokscope.config import ModelConfig, from_dict
from grokscope.errors import GrokscopeError
from grokscope.lengths.grid import eval_task, exact_per_example, grid_operands, length_grid
from grokscope.lengths.study import (
    StudySpec,
    parse_range,
    parse_seeds,
    run_study,
    study_config,
    sweep_spec,
    untrained_abacus_note,
)
from grokscope.model.positional import NoPositionalEncoding, position_ids
from grokscope.registry import POSITIONAL
from grokscope.run import Run, build
from grokscope.tasks import Batch
from grokscope.tasks.addition import EOS, PAD, AdditionConfig, AdditionTask, Operands
from grokscope.tasks.carries import int_to_digits, number_lengths
from grokscope.train import train


def _data(pos="abacus", steps=25, **task):
    return {
        "name": "t",
        "task": {
            "kind": "addition",
            "min_digits": 1,
            "max_digits": 2,
            "format": "varlen",
            "reverse_operands": True,
            "reverse_answer": True,
            "n_test": 50,
            "n_stress": 0,
            **task,
        },
        "model": {
            "n_layers": 1,
            "d_model": 32,
            "n_heads": 2,
            "d_head": 16,
            "d_mlp": 64,
            "layer_norm": True,
            "pos": pos,
            "abacus_max_offset": 5,
        },
        "train": {
            "steps": steps,
            "batch_size": 32,
            "lr": 1e-2,
            "weight_decay": 0.0,
            "warmup_steps": 0,
            "threads": 1,
            "eval": {"every": steps, "dense_every": steps, "dense_until": 0},
            "checkpoint": {"every": steps, "dense_every": steps, "dense_until": 0},
        },
    }


def _encode(task: AdditionTask, a: int, b: int):
    A = torch.tensor([int_to_digits(a, task.M)])
    B = torch.tensor([int_to_digits(b, task.M)])
    return task.encode(Operands(A, B, number_lengths(A), number_lengths(B)))


@pytest.mark.parametrize(
    "reverse, text, index",
    [
        (False, "123+4567=4690", [1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]),
        (True, "321+7654=0964", [1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]),
    ],
)
def test_abacus_indices_of_123_plus_4567(reverse, text, index):
    """Forward: index 1 is each number's most significant digit; reversed: its units digit, so
    digits of equal significance share an Abacus vector only in the reversed format."""
    cfg = AdditionConfig(max_digits=4, format="varlen", reverse_operands=reverse, reverse_answer=reverse)
    task = AdditionTask(cfg, seed=0)
    batch = _encode(task, 123, 4567)
    assert task.decode(batch.tokens)[0] == text + "<eos>"
    ids = batch.meta["digit_index"][0]
    assert ids[: len(index)].tolist() == index and ids[len(index) :].eq(0).all()
    model = build(from_dict(_data("abacus", max_digits=4)))[1]
    pos = model.pos_embed.residual_ids(position_ids(model, batch))
    assert torch.equal(pos[0, 2], model.pos_embed.W_abacus[3])  # the '3' of 123 (or '1' of 321)
    units_a, units_b = (0, 4) if reverse else (2, 7)
    same = torch.equal(pos[0, units_a], pos[0, units_b])
    assert same == reverse


@pytest.mark.parametrize("pos", POSITIONAL.names())
def test_each_encoding_trains_on_tiny_addition(pos, tmp_path):
    result = train(from_dict(_data(pos, steps=30)), tmp_path / pos, progress=False)
    rows = grokscope.run.Run.open(tmp_path / pos).read_metrics()
    assert result.step == 30
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] - 0.3, (rows[0]["test_loss"], rows[-1]["test_loss"])


@pytest.mark.parametrize("indices", ["offset", "random"])
def test_abacus_training_indices_replay_on_resume(indices, tmp_path):
    """Offsets and random index subsets are drawn from (seed, step): a run trained to 20 steps and
    resumed to 40 ends on the weights of one trained to 40 at once."""
    data = _data("abacus+abacus_alibi", steps=40)
    data["model"]["abacus_indices"] = indices
    data["train"]["checkpoint"] = {"every": 20, "dense_every": 20, "dense_until": 0}
    train(from_dict(data), tmp_path / "whole", progress=False)
    data["train"]["steps"] = 20
    train(from_dict(data), tmp_path / "part", progress=False)
    grokscope.train.resume(tmp_path / "part", steps=40, progress=False)
    whole, part = (grokscope.run.Run.open(tmp_path / d).load_checkpoint(40) for d in ("whole", "part"))
    assert whole.keys() == part.keys()
    assert all(torch.equal(whole[k], part[k]) for k in whole)


class _Oracle(torch.nn.Module):
    """Adds correctly, except that it writes a wrong digit whenever the answer digits written so far
    sum to 3 mod 4: a rule of the prefix alone, as a causal model's would be."""

    def __init__(self, task: AdditionTask):
        super().__init__()
        self.task = task
        self.cfg = ModelConfig(pos="none", n_ctx=task.n_ctx, d_vocab=14, d_vocab_out=14)
        self.pos_embed = NoPositionalEncoding()

    def forward(self, tokens, positions=None, pos_ids=None):
        n, T = tokens.shape
        logits = torch.zeros(n, T, 14)
        for i, text in enumerate(self.task.decode(tokens, strip_pad=False)):
            a, b = text.split("=")[0].split("+")
            answer = [int(c) for c in str(int(a[::-1]) + int(b[::-1]))[::-1]] + [EOS]
            eq = len(a) + len(b) + 1
            for t in range(eq, min(T, eq + len(answer))):
                written = tokens[i, eq + 1 : t + 1]
                pred = answer[t - eq]
                if int(written.sum()) % 4 == 3:
                    pred = (pred + 1) % 10
                logits[i, t, pred] = 1.0
        return logits if positions is None else logits[:, positions]


def _greedy_exact(model, task, batch):
    """Step-by-step greedy generation after `=` (stopping at EOS), recomputing the digit indices of
    the answer the model writes; exact = everything up to the true EOS matches."""
    tokens, eq = batch.tokens, batch.meta["eq_pos"]
    n, T = tokens.shape
    t = torch.arange(T)[None, :]
    buf = torch.where(t <= eq[:, None], tokens, PAD)
    rows, done = torch.arange(n), torch.zeros(n, dtype=torch.bool)
    for j in range(task.max_answer_tokens):
        read = eq + j
        live = ~done & (read + 1 < T)
        written = torch.where((buf < 10) & (t > eq[:, None]), t - eq[:, None], 0)
        ids = torch.where(t <= eq[:, None], batch.meta["digit_index"], written)
        logits = model(
            buf, pos_ids=position_ids(model, Batch(buf, batch.targets, batch.mask, meta={"digit_index": ids}))
        )
        pred = logits[rows, read.clamp(max=T - 1)].argmax(-1)
        buf[rows[live], (read + 1)[live]] = pred[live]
        done |= live & (pred == EOS)
    end = (tokens == EOS).long().argmax(1)
    return ((buf == tokens) | (t > end[:, None])).all(1)


def test_teacher_forced_exact_match_equals_greedy_generation():
    task = eval_task(
        AdditionConfig(max_digits=2, format="varlen", reverse_operands=True, reverse_answer=True), 4
    )
    ops = grid_operands([1, 2, 3, 4], 10, task.M, seed=3)
    oracle = _Oracle(task)
    fast = exact_per_example(oracle, task, ops)
    greedy = _greedy_exact(oracle, task, task.encode(ops))
    assert 0.2 < fast.double().mean() < 0.9  # both outcomes occur, so the comparison means something
    assert torch.equal(fast, greedy)


def test_length_grid_shapes_and_learned_positions_past_range():
    config = from_dict(_data("abacus"))
    grid = length_grid(build(config)[1], config.task, [1, 2, 3], n=10, seed=0)
    assert grid.shape == (3, 3) and ((grid >= 0) & (grid <= 1)).all()
    learned = build(from_dict(_data("learned")))[1]  # n_ctx from a 2-digit task: 10 positions
    with pytest.raises(GrokscopeError, match="model.n_ctx"):
        length_grid(learned, config.task, [1, 5], n=2)
    with pytest.raises(GrokscopeError, match="task.kind = 'addition'"):
        eval_task(from_dict({"task": {"kind": "modular", "p": 7}}).task, 3)


def test_parsers_reject_bad_input(tmp_path):
    assert parse_range("1-5", "x") == (1, 5) and parse_range("7", "x") == (7, 7)
    for bad in ("5-1", "0-3", "a", "1-2-3", ""):
        with pytest.raises(GrokscopeError):
            parse_range(bad, "--test-digits")
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,7") == [4, 7] and parse_seeds("0,") == [0]
    for bad in ("0", "x", "1,1", "-1", ","):
        with pytest.raises(GrokscopeError):
            parse_seeds(bad)
    with pytest.raises(GrokscopeError, match="needs task.kind = 'addition'"):
        sweep_spec(StudySpec("tiny", ["abacus"], [0]), tmp_path)
    with pytest.raises(GrokscopeError, match="--pe"):
        sweep_spec(StudySpec("addition_lengths", ["abacus", "bogus"], [0]), tmp_path)


@pytest.mark.slow
def test_study_end_to_end_and_resume(tmp_path):
    spec = StudySpec(
        config="addition_lengths",
        pes=["learned", "abacus"],
        seeds=[0],
        train_digits=(1, 2),
        test_digits=(1, 3),
        overrides=["train.steps=20", "model.n_layers=1", "task.n_test=50"],
        n_per_cell=5,
    )
    md = run_study(spec, tmp_path, workers=2, progress=False)
    assert "| learned | 1 |" in md and "| abacus | 1 |" in md
    from grokscope.figures import write_figures

    write_figures(tmp_path, "lengths")  # figures are made from the tables (the verb does this)
    for name in (
        "lengths.csv",
        "lengths_summary.csv",
        "lengths.md",
        "heatmap_abacus.png",
        "lengths_by_length.png",
    ):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "lengths.csv").read_text().splitlines()
    assert rows[0] == "pos,seed,len_a,len_b,n,exact" and len(rows) == 1 + 2 * 9
    # the study folder is a sweep folder: its report has the lengths and sweep sections
    from grokscope.cli import main

    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Length generalization</h2>" in page and "<h2>Sweep summary</h2>" in page
    summary = (tmp_path / "lengths_summary.csv").read_text().splitlines()
    assert all(f"<td>{cell}</td>" in page for cell in summary[1].split(","))
    assert page.count("data:image/png;base64,") >= 3  # two heatmaps and the curves
    # learned runs get positions for the longest test problem: 3 * 3 + 4 tokens
    assert Run.open(tmp_path / "runs" / "pos=learned__seed=0").config.model.n_ctx == 13
    before = (tmp_path / "runs" / "pos=abacus__seed=0" / "metrics.jsonl").stat().st_mtime_ns
    assert run_study(spec, tmp_path, workers=1, progress=False) == md  # resumed: nothing retrained
    assert (tmp_path / "runs" / "pos=abacus__seed=0" / "metrics.jsonl").stat().st_mtime_ns == before
    with pytest.raises(GrokscopeError, match="--pe"):
        run_study(StudySpec("addition_lengths", ["bogus"], [0]), tmp_path / "x")


def test_study_warns_when_the_grid_reaches_untrained_abacus_indices():
    """Training sums of 1-5 digit operands have <= 6 digits; offsets add <= max offset (7 in the
    preset): indices 1..13, so 12-digit operands stay inside and 13-digit ones do not."""

    offset = study_config(StudySpec("addition_lengths", ["abacus"], [0]))[1].model.abacus_max_offset
    assert offset == 7
    assert untrained_abacus_note(["learned", "abacus"], 5, 12, offset) is None
    note = untrained_abacus_note(["learned", "abacus"], 5, 13, offset)
    assert "past 13 were never trained" in note and "operands of 13 digits" in note
    assert untrained_abacus_note(["learned", "abacus_rope"], 5, 13, offset) is None  # no index rows
    assert untrained_abacus_note(["abacus+abacus_alibi"], 5, 13, offset) is not None
    assert "past 8" in untrained_abacus_note(["abacus"], 5, 10, 2)


def test_eval_digits_reads_a_run_past_its_training_lengths(tmp_path, capsys):
    from grokscope.cli import main

    data = _data("abacus", steps=5)
    train(from_dict(data), tmp_path / "r", progress=False)
    assert main(["eval", str(tmp_path / "r"), "--digits", "1-9", "--n-per-cell", "4"]) == 0
    out = capsys.readouterr().out
    assert "| run (len a = len b) | 1 | 2 |" in out
    # trained on 1-2 digits with max offset 5: indices 1..8, so 8-digit operands leave them
    assert "digit indices past 8 were never trained" in out
    rows = (tmp_path / "r" / "analysis" / "exact_by_length_1-9.csv").read_text().splitlines()
    assert rows[0] == "len_a,len_b,n,exact" and len(rows) == 1 + 81
    assert main(["eval", str(tmp_path / "r"), "--digits", "5-1"]) != 0
    assert "bad --digits" in capsys.readouterr().err
