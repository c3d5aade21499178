"""Logit lens and tuned lens: read the answer out of an intermediate residual stream.

The logit lens decodes a residual hook as if it were the last one: `ln_final` (when the model has a
LayerNorm) then the unembedding. The tuned lens first applies a learned affine map per hook (fitted
on the fit examples, starting from the identity) and so tells "the answer is there but not yet in the
output basis" (tuned >> logit) from "the answer is not there yet" (both poor). Losses are float64.
"""

from __future__ import annotations

import torch

from grokscope.devices import resolve_device
from grokscope.errors import GrokscopeError
from grokscope.interp.activations import collect, collect_and_score
from grokscope.model import Transformer
from grokscope.model.positional import position_ids
from grokscope.scoring import Scores, aggregate, device_of, score_logits, token_losses
from grokscope.tasks import Batch


def default_lens_hooks(model: Transformer) -> list[str]:
    return [f"blocks.{i}.hook_resid_{w}" for i in range(len(model.blocks)) for w in ("pre", "mid", "post")]


def decode(model: Transformer, resid: torch.Tensor) -> torch.Tensor:
    """Residual [..., d_model] -> logits [..., d_vocab_out] through ln_final and W_U (+ b_U), float64."""
    logits = (
        model.ln_final(resid.float().to(device_of(model))).cpu().double() @ model.unembed.W_U.cpu().double()
    )
    if model.cfg.unembed_bias:
        logits = logits + model.unembed.b_U.cpu().double()
    return logits


def _check_residuals(model: Transformer, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for h, a in acts.items():
        if a.shape[-1] != model.cfg.d_model:
            raise GrokscopeError(
                f"the lens decodes residual-stream hooks (width d_model = {model.cfg.d_model}); "
                f"{h} has width {a.shape[-1]}"
            )
    return acts


def scores_stats(scores: Scores) -> dict[str, torch.Tensor]:
    """Per loss position and over all of them: mean loss and accuracy (masked positions skipped),
    the same aggregation as training's metrics."""
    stats = aggregate(scores)
    many = scores.correct.shape[1] > 1
    return {
        "loss": torch.tensor(stats["loss_by_pos"] if many else [stats["loss"]], dtype=torch.float64),
        "acc": torch.tensor(stats["acc_by_pos"] if many else [stats["acc"]], dtype=torch.float64),
        "loss_all": torch.tensor(stats["loss"], dtype=torch.float64),
        "acc_all": torch.tensor(stats["acc"], dtype=torch.float64),
    }


def lens_stats(
    logits: torch.Tensor,  # [batch, n_loss, d_vocab_out]
    batch: Batch,
) -> dict[str, torch.Tensor]:
    """Per loss position: mean loss and accuracy against the true answer (masked positions skipped)."""
    return scores_stats(score_logits(logits, batch.targets, batch.mask))


@torch.no_grad()
def logit_lens(model: Transformer, batch: Batch, hooks: list[str], positions: list[int]) -> dict[str, dict]:
    """hook -> lens_stats of decoding that hook at the task's loss `positions`."""
    acts = _check_residuals(model, collect(model, batch, hooks, positions))
    return {h: lens_stats(decode(model, a), batch) for h, a in acts.items()}


@torch.no_grad()
def model_logits(model: Transformer, batch: Batch, positions: list[int], chunk: int = 4096) -> torch.Tensor:
    """The model's own logits at `positions` [batch, n_loss, d_vocab_out], float64, in chunks."""
    parts = []
    for start in range(0, len(batch), chunk):
        part = batch.select(torch.arange(start, min(start + chunk, len(batch))))
        parts.append(model(part.tokens, positions=positions, pos_ids=position_ids(model, part)).double())
    return torch.cat(parts)


def fit_tuned_lens(
    model: Transformer,
    resid: torch.Tensor,  # [batch, n_loss, d_model]
    batch: Batch,
    l2: float = 1e-4,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:  # A [d_model, d_model], c [d_model]
    """An affine map (A [d, d], c [d]) minimising the answer loss of decode(resid @ A + c), A from identity.

    One map per hook, shared by all loss positions (as in Belrose et al. 2023), fitted to the true
    answers with torch's L-BFGS; `l2` pulls A towards the identity. Without a final LayerNorm the
    logits are linear in A, so each step multiplies resid by A @ W_U [d_model, d_vocab_out] instead
    of by A (the same function, d_model / d_vocab_out times fewer FLOPs).
    """
    d = resid.shape[-1]
    x = resid.double()
    eye = torch.eye(d, dtype=torch.float64)
    A = eye.clone().requires_grad_(True)
    c = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    mask = batch.mask
    W_U = model.unembed.W_U.detach().cpu().double()
    b_U = model.unembed.b_U.detach().cpu().double() if model.cfg.unembed_bias else 0.0
    ln = model.cfg.layer_norm
    ln_w = model.ln_final.w.detach().cpu().double() if ln else None
    ln_b = model.ln_final.b.detach().cpu().double() if ln else None
    opt = torch.optim.LBFGS([A, c], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        if ln:
            y = torch.nn.functional.layer_norm(x @ A + c, (d,), eps=model.ln_final.eps) * ln_w + ln_b
            logits = y @ W_U + b_U
        else:
            logits = x @ (A @ W_U) + (c @ W_U + b_U)
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
    fit_acts = _check_residuals(model, collect(model, fit, hooks, positions))
    score_acts = _check_residuals(model, collect(model, score, hooks, positions))
    return _tuned(model, fit, fit_acts, score, score_acts, **kw)


def _tuned(model, fit: Batch, fit_acts: dict, score: Batch, score_acts: dict, **kw) -> dict[str, dict]:
    out = {}
    for h, resid in score_acts.items():
        A, c = fit_tuned_lens(model, fit_acts[h], fit, **kw)
        out[h] = lens_stats(decode(model, resid.double() @ A + c), score)
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
    """Table rows: for each hook and lens, loss and accuracy per loss position and over all of them.

    One forward over the score examples gives every hook and the model's own scores; one more over
    the fit examples feeds the tuned lens."""
    with torch.no_grad():
        score_acts, own = collect_and_score(model, score, hooks, positions, positions)
        _check_residuals(model, score_acts)
        results = {"logit": {h: lens_stats(decode(model, a), score) for h, a in score_acts.items()}}
        if tuned:
            fit_acts = _check_residuals(model, collect(model, fit, hooks, positions))
            results["tuned"] = _tuned(model, fit, fit_acts, score, score_acts)
        results["model"] = {"output": scores_stats(own)}
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


def lens_run(run, options) -> tuple[list[dict], list[int], int, int]:
    """The `lens` study: logit (and tuned) lens rows at each checkpoint asked, merged into
    `analysis/lens/lens.csv`; returns (rows, steps, n_fit, n_score)."""
    from grokscope.interp.activations import check_hooks, example_sets, parse_steps
    from grokscope.interp.io import merge_csv

    run.device = resolve_device(options.device)  # where the forward runs; tables on the CPU
    task = run.task
    steps = parse_steps(options.step, run.readable_steps())
    fit, score = example_sets(task, options.fit, options.score, options.max_examples, options.seed)
    rows = []
    for step, model in run.models(steps):
        hooks = options.hook or default_lens_hooks(model)
        check_hooks(model, hooks)
        rows += lens_rows(model, fit, score, hooks, task.loss_positions, tuned=options.tuned, step=step)
    merge_csv(run.subdir("analysis") / "lens" / "lens.csv", rows, ("step", "lens", "hook", "position"))
    return rows, steps, len(fit), len(score)
