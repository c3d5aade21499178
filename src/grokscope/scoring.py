"""One scorer: per-token correctness and float64 loss, per-example exact match, chunked.

Everything that asks "how well does this model answer this batch" reads it here: the training loss
(`loss_and_stats`, with grad), training evaluation (`evaluate`), `grokscope eval`, the length grid,
the lenses and generation's exact match. `Scores` holds the per-token values of a whole batch;
`aggregate` turns them into the metrics dict written to metrics.jsonl (`loss`, `acc`, and for
multi-position tasks `exact`, `loss_by_pos`, `acc_by_pos`).

Losses are float64: a float32 log-softmax underflows near 1e-7, where grokking's late phase lives.
The training loss may be asked for otherwise (`train.loss = "stablemax"`, `train.loss_precision`):
`token_losses(..., loss, precision)` computes it, and the reported metrics stay float64 softmax
cross-entropy. `token_stability` gives the numerical-stability measures of Prieto et al. (2025):
softmax collapse (the float32 softmax of the right class is exactly 1) and the logit norm.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from grokscope.devices import resolve_precision
from grokscope.model.positional import position_ids
from grokscope.tasks.base import Batch

EVAL_CHUNK = 16384  # examples per forward in evaluation: bounded memory, few Python round trips


def autocast(precision: str, device: torch.device | str = "cpu"):
    """The context the model's matmuls run in for `train.precision` on `device` (bf16 autocast,
    TF32, or nothing; `auto` as `devices.resolve_precision` decides). Losses stay float64 regardless."""
    if precision == "fp32":
        return nullcontext()
    device = torch.device(device)
    return resolve_precision(precision, device).context(device)


#: `train.loss_precision` -> the dtype the training loss's log-softmax is computed in
LOSS_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """Prieto et al.'s s(x): x + 1 for x >= 0, 1 / (1 - x) for x < 0 (positive, continuous, C¹ at 0,
    growing linearly instead of exponentially). Safe to differentiate on both branches."""
    return torch.where(x >= 0, x + 1, 1 / (1 - x.clamp(max=0)))


def stablemax(
    logits: torch.Tensor,  # [..., d_vocab_out]
    dim: int = -1,
) -> torch.Tensor:  # [..., d_vocab_out], sums to 1 along `dim`
    """StableMax(x)_i = s(x_i) / sum_j s(x_j), in the logits' dtype."""
    sx = stablemax_s(logits)
    return sx / sx.sum(dim=dim, keepdim=True)


def log_stablemax(
    logits: torch.Tensor,  # [..., d_vocab_out]
    dim: int = -1,
) -> torch.Tensor:  # [..., d_vocab_out]
    """log StableMax(x), in the logits' dtype (the StableMax loss is its negative at the target)."""
    sx = stablemax_s(logits)
    return sx.log() - sx.sum(dim=dim, keepdim=True).log()


def token_losses(
    logits: torch.Tensor,  # [batch, n_loss, d_vocab_out]
    targets: torch.Tensor,  # [batch, n_loss]
    loss: str = "cross_entropy",
    precision: str = "float64",
) -> torch.Tensor:  # [batch, n_loss] float64
    """Per-token loss (differentiable: the training loss is its masked mean). By default softmax
    cross-entropy in float64; `loss = "stablemax"` uses log-StableMax instead of log-softmax, and
    `precision` (`float64`, `float32`, `bfloat16`) is the dtype that log-(soft/stable)max is computed
    in. The result is returned as float64 holding that dtype's values exactly, so a float32 loss
    keeps its quantisation (multiples of float32's resolution 2**-23 near a confident right answer)."""
    x = _where_float64_runs(logits).to(LOSS_DTYPES[precision])
    logp = log_stablemax(x) if loss == "stablemax" else x.log_softmax(dim=-1)
    return -logp.gather(-1, targets.to(x.device)[..., None])[..., 0].double()


def _where_float64_runs(x: torch.Tensor) -> torch.Tensor:
    """`x`, moved to the CPU (differentiably) when its device has no float64 (Apple's MPS), so
    the loss stays float64 on every device."""
    return x.cpu() if x.device.type == "mps" else x


def token_stability(
    logits: torch.Tensor,  # [batch, n_loss, d_vocab_out]
    targets: torch.Tensor,  # [batch, n_loss]
) -> tuple[torch.Tensor, torch.Tensor]:  # ([batch, n_loss] bool, [batch, n_loss] float64)
    """Per token: softmax collapse (the float32 softmax probability of the target is exactly 1.0, so
    a float32 cross-entropy and its gradient are exactly 0 there) and the logits' L2 norm (float64)."""
    logits, targets = _where_float64_runs(logits.detach()), targets.to(_where_float64_runs(logits).device)
    p_right = logits.float().softmax(dim=-1).gather(-1, targets[..., None])[..., 0]
    return p_right == 1.0, logits.detach().double().norm(dim=-1)


def stability_stats(
    logits: torch.Tensor,  # [batch, n_loss, d_vocab_out]
    targets: torch.Tensor,  # [batch, n_loss]
    mask: torch.Tensor,  # [batch, n_loss] bool
    loss: str = "cross_entropy",
    precision: str = "float64",
) -> dict[str, float]:
    """Over the counted tokens: `softmax_collapse` (fraction collapsed in float32, see
    `token_stability`), `logit_norm` (mean L2 norm of the logit vector), and with
    `loss = "stablemax"` the mean StableMax loss (`stablemax_loss`, in `precision`)."""
    collapsed, norm = token_stability(logits, targets)
    n = mask.sum().clamp(min=1).double()
    stats = {
        "softmax_collapse": (collapsed & mask).sum().double().div(n).item(),
        "logit_norm": (norm * mask).sum().div(n).item(),
    }
    if loss == "stablemax":
        nll = token_losses(logits.detach(), targets, loss, precision)
        stats["stablemax_loss"] = (nll * mask).sum().div(n).item()
    return stats


def exact_match(
    correct: torch.Tensor,  # [batch, n_loss] bool
    mask: torch.Tensor,  # [batch, n_loss] bool
) -> torch.Tensor:  # [batch] bool
    """Every counted token of the example is right (an example with none counted is right)."""
    return (correct | ~mask).all(dim=1)


@dataclass
class Scores:
    """Per-token results of a model on a batch; `mask` marks the tokens that count."""

    correct: torch.Tensor  # [batch, n_loss] bool: argmax == target
    loss: torch.Tensor  # [batch, n_loss] float64 cross-entropy
    mask: torch.Tensor  # [batch, n_loss] bool

    @property
    def exact(self) -> torch.Tensor:  # [batch] bool
        return exact_match(self.correct, self.mask)

    def __len__(self) -> int:
        return self.correct.shape[0]


def score_logits(
    logits: torch.Tensor,  # [batch, n_loss, d_vocab_out]
    targets: torch.Tensor,  # [batch, n_loss]
    mask: torch.Tensor,  # [batch, n_loss] bool
) -> Scores:
    """Scores of logits already computed (e.g. a lens's decoded residual stream)."""
    return Scores(logits.argmax(dim=-1) == targets, token_losses(logits, targets).detach(), mask)


def device_of(model: torch.nn.Module) -> torch.device:
    """Where `model`'s weights are (the CPU for a model without any)."""
    param = next(iter(model.parameters()), None)
    return torch.device("cpu") if param is None else param.device


def chunks(n: int, chunk: int) -> list[torch.Tensor]:
    """Index ranges [0, chunk), [chunk, 2 chunk), ... covering n examples."""
    return [torch.arange(start, min(start + chunk, n)) for start in range(0, n, chunk)]


@torch.no_grad()
def score(
    model,
    batch: Batch,
    positions: list[int],
    precision: str = "fp32",
    chunk: int = EVAL_CHUNK,
    forward: Callable[[Batch], torch.Tensor] | None = None,
) -> Scores:
    """The model's scores on `batch` at the loss `positions`, `chunk` examples per forward.

    Each chunk goes to the model's device; the scores come back on the CPU, beside the batch's
    metadata, whatever device ran the model.
    `forward(part) -> logits [part, n_loss, d_vocab_out]` replaces the plain forward where a caller
    needs more from the same pass (e.g. cached activations); it runs under the same autocast."""
    if forward is None:

        def forward(part: Batch) -> torch.Tensor:
            return model(part.tokens, positions=positions, pos_ids=position_ids(model, part))

    device = batch.tokens.device if model is None else device_of(model)  # None: `forward` knows
    parts = []
    for index in chunks(len(batch), chunk):
        part = (batch if len(index) == len(batch) else batch.select(index)).to(device)
        with autocast(precision, device):
            logits = forward(part)
        scores = score_logits(logits, part.targets, part.mask)
        parts.append(Scores(scores.correct.cpu(), scores.loss.cpu(), scores.mask.cpu()))
    if len(parts) == 1:
        return parts[0]
    return Scores(*(torch.cat([getattr(p, f) for p in parts]) for f in ("correct", "loss", "mask")))


def aggregate(scores: Scores, chunk: int = EVAL_CHUNK) -> dict[str, float | list]:
    """The metrics dict training logs: `loss`, `acc`; with several loss positions also `exact`,
    `loss_by_pos`, `acc_by_pos`. Sums run chunk by chunk in `chunk`-sized pieces, so the numbers are
    the same bits whatever chunk size the scores were computed with."""
    nll_sum = correct_sum = count = None
    exact = 0.0
    for start in range(0, len(scores), chunk):
        sl = slice(start, start + chunk)
        nll, correct, mask = scores.loss[sl], scores.correct[sl], scores.mask[sl]
        m = mask.double()
        sums = ((nll * m).sum(0), (correct.double() * m).sum(0), m.sum(0))
        if nll_sum is None:
            nll_sum, correct_sum, count = sums
        else:
            nll_sum, correct_sum, count = nll_sum + sums[0], correct_sum + sums[1], count + sums[2]
        exact += exact_match(correct, mask).double().sum().item()
    stats: dict[str, float | list] = {
        "loss": (nll_sum.sum() / count.sum()).item(),
        "acc": (correct_sum.sum() / count.sum()).item(),
    }
    if scores.correct.shape[1] > 1:
        stats["exact"] = exact / len(scores)
        stats["loss_by_pos"] = (nll_sum / count.clamp(min=1)).tolist()
        stats["acc_by_pos"] = (correct_sum / count.clamp(min=1)).tolist()
    return stats


def evaluate(
    model,
    batch: Batch,
    positions: list[int],
    precision: str = "fp32",
    chunk: int = EVAL_CHUNK,
) -> dict[str, float | list]:
    """Metrics over a whole evaluation set (what metrics.jsonl records per set)."""
    return aggregate(score(model, batch, positions, precision, chunk), chunk)


@torch.no_grad()
def stability(
    model,
    batch: Batch,
    positions: list[int],
    precision: str = "fp32",
    chunk: int = EVAL_CHUNK,
    loss: str = "cross_entropy",
    loss_precision: str = "float64",
) -> dict[str, float]:
    """`stability_stats` of the model on a whole set, `chunk` examples per forward."""
    device = device_of(model)
    parts = []
    for index in chunks(len(batch), chunk):
        part = (batch if len(index) == len(batch) else batch.select(index)).to(device)
        with autocast(precision, device):
            logits = model(part.tokens, positions=positions, pos_ids=position_ids(model, part))
        n = part.mask.sum().item()
        parts.append((n, stability_stats(logits, part.targets, part.mask, loss, loss_precision)))
    total = max(sum(n for n, _ in parts), 1)
    return {k: sum(n * st[k] for n, st in parts) / total for k in parts[0][1]}


def loss_and_stats(
    logits: torch.Tensor,  # [batch, n_loss, d_vocab_out]
    batch: Batch,
    loss: str = "cross_entropy",
    precision: str = "float64",
) -> tuple[torch.Tensor, dict[str, float | list]]:
    """Training: the mean masked loss (with grad; `loss` in `precision`, see `token_losses`) plus
    the detached statistics of `aggregate`, which are float64 softmax cross-entropy whatever the
    training loss is."""
    nll = token_losses(logits, batch.targets, loss, precision)
    objective = nll[batch.mask].mean()
    with torch.no_grad():
        ce = nll if (loss, precision) == ("cross_entropy", "float64") else token_losses(logits, batch.targets)
        stats = aggregate(Scores(logits.argmax(dim=-1) == batch.targets, ce.detach(), batch.mask))
    return objective, stats


__all__ = [
    "Scores",
    "device_of",
    "aggregate",
    "autocast",
    "evaluate",
    "exact_match",
    "log_stablemax",
    "loss_and_stats",
    "score",
    "score_logits",
    "stability",
    "stability_stats",
    "stablemax",
    "token_losses",
    "token_stability",
]
