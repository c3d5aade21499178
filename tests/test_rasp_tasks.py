"""The RASP-L suite's sequence tasks (count, mode, copy, sort, parity) against direct Python
computations, their length ranges and splits, and the length study / suite on them."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.tasks import build_task
from grokscope.tasks.rasp import CopyConfig, CountConfig, ModeConfig, ParityConfig, SortConfig


def _split(task, row: list[int]) -> tuple[list[int], list[int]]:
    """(prompt, answer) of one token row, read by hand: up to <sep>, then up to <eos>."""
    sep = row.index(task.SEP)
    eos = row.index(task.EOS, sep)
    assert all(t == task.PAD for t in row[eos + 1 :])
    return row[:sep], row[sep + 1 : eos]


def _expected(cfg, prompt: list[int]) -> tuple[int, list[int]]:
    """(length, answer) computed directly from the prompt."""
    if cfg.kind == "count":
        a, b = prompt
        return b - a + 1, list(range(a, b + 1))
    if cfg.kind == "mode":
        counts = Counter(prompt).most_common()
        assert len(counts) == 1 or counts[0][1] > counts[1][1], "a tie for the mode"
        return len(prompt), [counts[0][0]]
    if cfg.kind == "copy":
        return len(prompt), list(prompt)
    if cfg.kind == "sort":
        return len(prompt), sorted(prompt)
    assert cfg.kind == "parity"
    running = [sum(prompt[: i + 1]) % 2 for i in range(len(prompt))]
    return len(prompt), running if cfg.scratchpad else [running[-1]]


CONFIGS = [
    CountConfig(min_len=1, max_len=12, n_values=20),
    ModeConfig(min_len=1, max_len=12, vocab=5),
    CopyConfig(min_len=1, max_len=12, vocab=16, unique=True),
    CopyConfig(min_len=1, max_len=12, vocab=3, unique=False),
    SortConfig(min_len=1, max_len=12, vocab=16, unique=True),
    SortConfig(min_len=1, max_len=12, vocab=4, unique=False),
    ParityConfig(min_len=1, max_len=12),
    ParityConfig(min_len=1, max_len=12, scratchpad=True),
]


@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: f"{c.kind}-{getattr(c, 'unique', getattr(c, 'scratchpad', ''))}"
)
def test_generator_matches_a_direct_computation_at_every_length(cfg):
    cfg.validate()
    task = build_task(cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    for L in range(1, cfg.max_len + 1):
        b = task.generate_at(g, 2000, L)
        assert b.tokens.shape == (2000, task.n_ctx) and (b.meta["length"] == L).all()
        pos = torch.tensor(task.loss_positions)
        for k, row in enumerate(b.tokens.tolist()):
            prompt, answer = _split(task, row)
            length, expected = _expected(cfg, prompt)
            assert length == L and answer == expected, (task.decode(b.tokens[k : k + 1]), expected)
            # loss on answer tokens and the EOS only: the masked targets are exactly answer + <eos>
            assert b.targets[k][b.mask[k]].tolist() == expected + [task.EOS]
            assert (pos[b.mask[k]] + 1).tolist() == list(
                range(len(prompt) + 1, len(prompt) + len(expected) + 2)
            )
        if getattr(cfg, "unique", False):
            prompts = b.tokens[:, :L]
            assert (prompts.sort(1).values.diff(dim=1) != 0).all()
        if cfg.kind == "mode":
            assert (b.meta["mode_count"] > b.meta["second_count"]).all()
            assert (b.targets[b.mask].view(2000, 2)[:, 0] == b.meta["mode"]).all()
        if cfg.kind == "parity":
            assert (b.meta["parity"] == b.meta["ones"] % 2).all()


@pytest.mark.parametrize("cfg", CONFIGS[:3] + CONFIGS[6:7], ids=lambda c: c.kind)
def test_lengths_stay_in_range_and_cover_it(cfg):
    import dataclasses

    cfg = dataclasses.replace(cfg, min_len=3, max_len=7)
    task = build_task(cfg, seed=0)
    lengths = torch.cat([task.train_batch(s, 256, seed=0).meta["length"] for s in range(8)])
    assert int(lengths.min()) == 3 and int(lengths.max()) == 7
    assert set(lengths.tolist()) == set(range(3, 8))
    counts = torch.bincount(lengths)[3:].double()
    assert counts.min() / counts.max() > 0.7  # uniform over lengths
    assert task.n_ctx == task.prompt_width(7) + task.answer_width(7) + 2
    with pytest.raises(GrokscopeError, match="outside"):
        task.generate_at(torch.Generator(), 4, 8)


@pytest.mark.parametrize(
    "cfg",
    [
        CountConfig(min_len=2, max_len=6, n_values=12, n_train=20, n_test=10),
        ModeConfig(min_len=2, max_len=5, vocab=3, n_train=150, n_test=50),
        CopyConfig(min_len=1, max_len=4, vocab=3, unique=False, n_train=80, n_test=30),
        ParityConfig(min_len=1, max_len=6, n_train=90, n_test=30),
    ],
    ids=lambda c: c.kind,
)
def test_finite_train_and_test_are_disjoint_and_distinct(cfg):
    task = build_task(cfg, seed=3)
    train, test = task.train_batch(0, 0, seed=0), task.eval_sets()["test"]
    rows = lambda b: {tuple(r) for r in b.tokens.tolist()}  # noqa: E731
    assert len(rows(train)) == cfg.n_train and len(rows(test)) == cfg.n_test
    assert not rows(train) & rows(test)
    again = build_task(cfg, seed=3)  # seeded: the same split
    assert torch.equal(again.eval_sets()["test"].tokens, test.tokens)
    assert task.use_split(task.split_arrays()) is False
    other = build_task(cfg, seed=4)
    assert other.use_split(task.split_arrays()) is True
    assert torch.equal(other.eval_sets()["test"].tokens, test.tokens)


def test_bad_configs_name_the_fix():
    with pytest.raises(GrokscopeError, match="could not draw 250 distinct parity"):
        build_task(ParityConfig(max_len=5, n_train=200, n_test=50), seed=0)
    with pytest.raises(GrokscopeError, match="raise task.vocab"):
        CopyConfig(max_len=40, vocab=32).validate()
    with pytest.raises(GrokscopeError, match="raise task.n_values"):
        CountConfig(max_len=40, n_values=32).validate()
    with pytest.raises(GrokscopeError, match="task.max_len"):
        SortConfig(min_len=5, max_len=4).validate()


def test_sequence_accuracy_reads_one_value_per_length_and_checks_learned_positions():
    from grokscope.config import from_dict
    from grokscope.lengths.grid import eval_task, grid_dims, length_fields, length_grid
    from grokscope.presets import load_preset_or_file
    from grokscope.run import build

    data = load_preset_or_file("rasp_sort")
    data["model"].update(n_layers=1, pos="rope")
    config = from_dict(data)
    model = build(config)[1]
    acc = length_grid(model, config.task, [1, 5, 20], n=8, seed=0)
    assert acc.shape == (3,) and ((acc >= 0) & (acc <= 1)).all()
    assert grid_dims(config.task) == 1 and length_fields(config.task) == ("task.min_len", "task.max_len")
    assert eval_task(config.task, 20).n_ctx == 42
    data["model"]["pos"] = "learned"
    learned = build(from_dict(data))[1]  # positions for length 10: 22
    with pytest.raises(GrokscopeError, match="model.n_ctx"):
        length_grid(learned, config.task, [1, 20], n=2)


def test_a_model_that_copies_scores_one_everywhere():
    """The grid counts an example right exactly when every answer token and the EOS is the argmax:
    a hand-made 'model' that reads the true next token gets 1.0 at every length, and one that
    misses the EOS gets 0.0."""
    import types

    from grokscope.lengths.grid import sequence_accuracy

    cfg = CopyConfig(max_len=6, vocab=16)
    task = build_task(cfg, seed=0)

    class Oracle(torch.nn.Module):
        def __init__(self, skip_eos: bool):
            super().__init__()
            self.cfg = types.SimpleNamespace(
                pos="rope", n_ctx=64, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab
            )
            self.skip_eos = skip_eos
            self.pos_embed = types.SimpleNamespace(needs_ids=False)

        def forward(self, tokens, positions=None, pos_ids=None, **_):
            nxt = torch.roll(tokens, -1, dims=1)
            if self.skip_eos:
                nxt = torch.where(nxt == task.EOS, task.PAD, nxt)
            logits = torch.nn.functional.one_hot(nxt, task.d_vocab).float()
            return logits if positions is None else logits[:, positions]

    good = sequence_accuracy(Oracle(False), cfg, [1, 3, 12], n=20)
    bad = sequence_accuracy(Oracle(True), cfg, [1, 3, 12], n=20)
    assert good.tolist() == [1.0, 1.0, 1.0] and bad.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.slow
def test_lengths_study_of_a_sequence_task_end_to_end_and_resume(tmp_path):
    from grokscope.figures import write_figures
    from grokscope.lengths.study import StudySpec, run_study
    from grokscope.run import Run

    spec = StudySpec(
        config="rasp_parity",
        pes=["learned", "none"],
        seeds=[0],
        train_digits=(1, 3),
        test_digits=(1, 6),
        overrides=["train.steps=20", "model.n_layers=1", "task.n_test=50"],
        n_per_cell=5,
    )
    md = run_study(spec, tmp_path, workers=2, progress=False)
    assert "| learned | 1 |" in md and "| none | 1 |" in md and "| 6 |" in md
    written = {w.path.name for w in write_figures(tmp_path, "lengths")}
    assert "lengths_by_length.png" in written and not any(n.startswith("heatmap_") for n in written)
    rows = (tmp_path / "lengths.csv").read_text().splitlines()
    assert rows[0] == "pos,seed,length,n,exact" and len(rows) == 1 + 2 * 6
    run = Run.open(tmp_path / "runs" / "pos=learned__seed=0")
    assert (run.config.task.min_len, run.config.task.max_len) == (1, 3)
    assert run.config.model.n_ctx == 6 + 1 + 2  # parity of 6 bits: bits, <sep>, answer, <eos>
    from grokscope.cli import main  # `eval --digits` reads a sequence run per length too

    assert main(["eval", str(run.path), "--digits", "1-4", "--n-per-cell", "5"]) == 0
    table = (run.path / "analysis" / "exact_by_length_1-4.csv").read_text().splitlines()
    assert table[0] == "length,n,exact" and [r.split(",")[0] for r in table[1:]] == ["1", "2", "3", "4"]
    before = (tmp_path / "runs" / "pos=none__seed=0" / "metrics.jsonl").stat().st_mtime_ns
    assert run_study(spec, tmp_path, workers=1, progress=False) == md  # resumed: nothing retrained
    assert (tmp_path / "runs" / "pos=none__seed=0" / "metrics.jsonl").stat().st_mtime_ns == before


@pytest.mark.slow
def test_suite_writes_one_table_of_tasks_by_encodings(tmp_path, capsys):
    from grokscope.cli import main

    argv = [
        "lengths",
        "--suite",
        "zhou2023",
        "--tasks",
        "count",
        "--pe",
        "learned,rope",
        "--seeds",
        "1",
    ]
    argv += ["--set", "train.steps=10", "--set", "model.n_layers=1", "--n-per-cell", "4", "--workers", "2"]
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 0
    csv_rows = (tmp_path / "suite.csv").read_text().splitlines()
    assert csv_rows[0].startswith("task,pos,seeds,train,lengths_1.5x_2x,in_dist_mean")
    assert len(csv_rows) == 1 + 2
    assert csv_rows[1].startswith("count,learned,1,1-10,15,20,") or csv_rows[1].startswith(
        'count,learned,1,1-10,"15,20"'
    )
    import csv

    with open(tmp_path / "count" / "lengths.csv", newline="") as f:
        runs = [r for r in csv.DictReader(f) if r["pos"] == "rope"]
    with open(tmp_path / "suite.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["pos"] == "rope")
    by_len = {int(r["length"]): float(r["exact"]) for r in runs}
    assert float(row["in_dist_mean"]) == pytest.approx(sum(by_len[n] for n in range(1, 11)) / 10, abs=1e-4)
    assert float(row["at_1.5x_mean"]) == by_len[15] and float(row["at_2x_mean"]) == by_len[20]
    assert row["generalises_here"] == str(by_len[15] >= 0.9) and row["paper_generalises"] == "True"
    md = (tmp_path / "suite.md").read_text()
    assert "| count | 1-10 | 15,20 |" in md and "parity" not in md
    assert "| learned | rope | paper | here |" in md
    assert (tmp_path / "suite.png").is_file() and (tmp_path / "count" / "lengths_by_length.png").is_file()
    out = capsys.readouterr().out
    assert "suite.csv" in out
    assert main(["lengths", "--suite", "zhou2023", "--tasks", "nope", "--out", str(tmp_path / "x")]) != 0
    assert "bad --tasks 'nope': choose from count, mode" in capsys.readouterr().err
