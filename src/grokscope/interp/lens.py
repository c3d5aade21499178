"""Logit lens and tuned lens: read the answer out of an intermediate residual stream.

The logit lens decodes a residual hook as if it were the last one: `ln_final` (when the model has a
LayerNorm) then the unembedding. The tuned lens first applies a learned affine map per hook (fitted
on the fit examples, starting from the identity) and so tells "the answer is there but not yet in the
output basis" (tuned >> logit) from "the answer is not there yet" (both poor). Losses are float64.
"""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError
from grokscope.interp.activations import collect
from grokscope.model import Transformer
from grokscope.model.positional import position_ids
from grokscope.tasks import Batch
from grokscope.train.evaluate import token_losses


def default_lens_hooks(model: Transformer) -> list[str]:
    return [f"blocks.{i}.hook_resid_{w}" for i in range(len(model.blocks)) for w in ("pre", "mid", "post")]


def decode(model: Transformer, resid: torch.Tensor) -> torch.Tensor:
    """Residual [..., d_model] -> logits [..., d_vocab_out] through ln_final and W_U (+ b_U), float64."""
    logits = model.ln_final(resid.float()).double() @ model.unembed.W_U.double()
    if model.cfg.unembed_bias:
        logits = logits + model.unembed.b_U.double()
    return logits


def _residuals(
    model: Transformer, batch: Batch, hooks: list[str], positions: list[int]
) -> dict[str, torch.Tensor]:
    acts = collect(model, batch, hooks, positions)
    for h, a in acts.items():
        if a.shape[-1] != model.cfg.d_model:
            raise GrokscopeError(
                f"the lens decodes residual-stream hooks (width d_model = {model.cfg.d_model}); "
                f"{h} has width {a.shape[-1]}"
            )
    return acts


def lens_stats(logits: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
    """Per loss position: mean loss and accuracy against the true answer (masked positions skipped)."""
    nll = token_losses(logits, batch.targets)
    correct = (logits.argmax(-1) == batch.targets).double()
    m = torch.ones_like(correct) if batch.mask is None else batch.mask.double()
    n = m.sum(0).clamp(min=1)
    return {
        "loss": (nll * m).sum(0) / n,
        "acc": (correct * m).sum(0) / n,
        "loss_all": (nll * m).sum() / m.sum().clamp(min=1),
        "acc_all": (correct * m).sum() / m.sum().clamp(min=1),
    }


@torch.no_grad()
def logit_lens(model: Transformer, batch: Batch, hooks: list[str], positions: list[int]) -> dict[str, dict]:
    """hook -> lens_stats of decoding that hook at the task's loss `positions`."""
    acts = _residuals(model, batch, hooks, positions)
    return {h: lens_stats(decode(model, a), batch) for h, a in acts.items()}


@torch.no_grad()
def model_logits(model: Transformer, batch: Batch, positions: list[int], chunk: int = 4096) -> torch.Tensor:
    """The model's own logits at `positions`, float64, in chunks."""
    parts = []
    for start in range(0, len(batch), chunk):
        part = batch.select(torch.arange(start, min(start + chunk, len(batch))))
        parts.append(model(part.tokens, positions=positions, pos_ids=position_ids(model, part)).double())
    return torch.cat(parts)


def fit_tuned_lens(
    model: Transformer, resid: torch.Tensor, batch: Batch, l2: float = 1e-4, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """An affine map (A [d, d], c [d]) minimising the answer loss of decode(resid @ A + c), A from identity.

    One map per hook, shared by all loss positions (as in Belrose et al. 2023), fitted to the true
    answers with torch's L-BFGS; `l2` pulls A towards the identity.
    """
    d = resid.shape[-1]
    x = resid.double()
    eye = torch.eye(d, dtype=torch.float64)
    A = eye.clone().requires_grad_(True)
    c = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    mask = torch.ones_like(batch.targets, dtype=torch.bool) if batch.mask is None else batch.mask
    W_U = model.unembed.W_U.detach().double()
    b_U = model.unembed.b_U.detach().double() if model.cfg.unembed_bias else 0.0
    ln = model.cfg.layer_norm
    ln_w = model.ln_final.w.detach().double() if ln else None
    ln_b = model.ln_final.b.detach().double() if ln else None
    opt = torch.optim.LBFGS([A, c], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        y = x @ A + c
        if ln:
            y = torch.nn.functional.layer_norm(y, (d,), eps=model.ln_final.eps) * ln_w + ln_b
        logits = y @ W_U + b_U
        loss = token_losses(logits, batch.targets)[mask].mean() + 0.5 * l2 * ((A - eye) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return A.detach(), c.detach()


@torch.no_grad()
def tuned_lens(
    model: Transformer, fit: Batch, score: Batch, hooks: list[str], positions: list[int], **kw
) -> dict[str, dict]:
    """hook -> lens_stats on `score` of a tuned lens fitted on `fit`."""
    fit_acts = _residuals(model, fit, hooks, positions)
    score_acts = _residuals(model, score, hooks, positions)
    out = {}
    for h in hooks:
        A, c = fit_tuned_lens(model, fit_acts[h], fit, **kw)
        out[h] = lens_stats(decode(model, score_acts[h].double() @ A + c), score)
    return out


def lens_rows(
    model: Transformer,
    fit: Batch,
    score: Batch,
    hooks: list[str],
    positions: list[int],
    tuned: bool = True,
    step: int | None = None,
) -> list[dict]:
    """Table rows: for each hook and lens, loss and accuracy per loss position and over all of them."""
    results = {"logit": logit_lens(model, score, hooks, positions)}
    if tuned:
        results["tuned"] = tuned_lens(model, fit, score, hooks, positions)
    with torch.no_grad():
        results["model"] = {"output": lens_stats(model_logits(model, score, positions), score)}
    rows = []
    for lens, per_hook in results.items():
        for h, s in per_hook.items():
            for k, pos in enumerate(positions):
                rows.append(
                    {
                        "step": step,
                        "lens": lens,
                        "hook": h,
                        "position": pos,
                        "loss": s["loss"][k].item(),
                        "acc": s["acc"][k].item(),
                    }
                )
            rows.append(
                {
                    "step": step,
                    "lens": lens,
                    "hook": h,
                    "position": "all",
                    "loss": s["loss_all"].item(),
                    "acc": s["acc_all"].item(),
                }
            )
    return rows
