"""The one scorer: a hand-computed case, float64 loss, chunking, and metrics rows unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from grokscope.scoring import Scores, aggregate, loss_and_stats, score, score_logits, token_losses
from grokscope.tasks import Batch, all_true
from grokscope.train import train
from tests.conftest import make_config

GOLDEN = Path(__file__).parent / "data" / "metrics_golden.json"


def _hand_case():
    # 2 examples x 3 loss positions, 4 classes; logits chosen so the argmax is obvious.
    logits = torch.tensor(
        [
            [[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]],  # predicts 0 1 2
            [[0, 0, 0, 5.0], [0, 5.0, 0, 0], [5.0, 0, 0, 0]],  # predicts 3 1 0
        ]
    )
    targets = torch.tensor([[0, 1, 3], [3, 1, 2]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    return logits, targets, mask


def test_scorer_hand_computed_case():
    logits, targets, mask = _hand_case()
    s = score_logits(logits, targets, mask)
    assert s.correct.tolist() == [[True, True, False], [True, True, False]]
    # example 0 is wrong only where the mask says it does not count; example 1 is wrong at pos 2
    assert s.exact.tolist() == [True, False]
    assert s.loss.dtype == torch.float64
    expected = F.cross_entropy(logits.double().flatten(0, 1), targets.flatten(), reduction="none")
    torch.testing.assert_close(s.loss.flatten(), expected, rtol=0, atol=1e-15)
    stats = aggregate(s)
    m = mask.flatten()
    assert stats["loss"] == pytest.approx(expected[m].mean().item(), rel=1e-15)
    assert stats["acc"] == pytest.approx(4 / 5)
    assert stats["exact"] == 0.5
    assert stats["acc_by_pos"] == [1.0, 1.0, 0.0]
    assert stats["loss_by_pos"][2] == pytest.approx(expected[5].item(), rel=1e-15)


def test_float64_loss_survives_where_float32_underflows():
    logits = torch.tensor([[[20.0, 0.0]]])  # loss ~ 2e-9: float32 log_softmax rounds it to 0
    assert -logits[0].log_softmax(-1)[0, 0].item() == 0.0
    nll = token_losses(logits, torch.tensor([[0]]))
    assert nll.dtype == torch.float64 and nll.item() == pytest.approx(2.061e-9, rel=1e-3)
    assert nll.item() == pytest.approx(F.cross_entropy(logits.double()[0], torch.tensor([0])).item())


def test_training_loss_is_the_masked_mean_with_grad():
    logits, targets, mask = _hand_case()
    logits = logits.clone().requires_grad_(True)
    loss, stats = loss_and_stats(logits, Batch(torch.zeros(2, 4, dtype=torch.long), targets, mask))
    loss.backward()
    assert logits.grad[0, 2].abs().sum() == 0  # masked token: no gradient
    assert loss.item() == pytest.approx(stats["loss"], rel=1e-15)


def test_score_is_the_same_in_any_chunking():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 3, 7, generator=g)
    tokens = torch.arange(50)[:, None].repeat(1, 2)
    targets = torch.randint(0, 7, (50, 3), generator=g)
    mask = torch.rand(50, 3, generator=g) > 0.3
    batch = Batch(tokens, targets, mask)

    def forward(part):  # a 'model' whose logits are a fixed table indexed by the first token
        return table[part.tokens[:, 0]]

    whole = score(None, batch, [0, 1, 2], chunk=1000, forward=forward)
    pieces = score(None, batch, [0, 1, 2], chunk=7, forward=forward)
    for f in ("correct", "loss", "mask"):
        assert torch.equal(getattr(whole, f), getattr(pieces, f))
    assert aggregate(whole) == aggregate(pieces)
    assert aggregate(whole, chunk=7)["exact"] == whole.exact.double().mean().item()


def test_batch_mask_is_required_and_checked():
    targets = torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(TypeError):
        Batch(torch.zeros(3, 4, dtype=torch.long), targets)
    with pytest.raises(ValueError, match="bool"):
        Batch(torch.zeros(3, 4, dtype=torch.long), targets, torch.ones(3, 2))
    assert Batch(torch.zeros(3, 4, dtype=torch.long), targets, all_true(targets)).mask.all()


@pytest.mark.parametrize("name", json.loads(GOLDEN.read_text()) if GOLDEN.exists() else [])
def test_metrics_rows_unchanged(tmp_path, name):
    """metrics.jsonl of short runs equals the rows the pre-scorer code wrote (recorded at 86ba4c9)."""
    golden = json.loads(GOLDEN.read_text())[name]
    train(make_config(name, *golden["overrides"]), tmp_path / name, progress=False)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(golden["rows"])
    for row, want in zip(rows, golden["rows"], strict=True):
        row.pop("elapsed_s")
        # the same keys, plus the numerical-stability metrics logged since (tests/test_stability.py)
        assert row.keys() - want.keys() <= {"train_softmax_collapse", "train_logit_norm", "nlm_cosine"}
        assert want.keys() <= row.keys()
        for k, v in want.items():
            if isinstance(v, list):
                assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-15), (name, row["step"], k)
            else:
                assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-15), (name, row["step"], k)


def test_scores_len():
    s = Scores(
        torch.ones(4, 2, dtype=torch.bool),
        torch.zeros(4, 2, dtype=torch.float64),
        torch.ones(4, 2, dtype=torch.bool),
    )
    assert len(s) == 4 and s.exact.all()
