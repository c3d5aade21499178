"""The progress measures of Nanda et al. (2023), one function each, all logit measures in float64.

Two layers: `*_from_logits` / weight-level functions take tensors (with any leading batch axes,
e.g. a chunk of checkpoints) and are what `analyze_run` uses; `measure_model(model, task, ...)`
applies them all to a model in memory. Logits are [..., p², p]: final-position logits of the p answer
classes over all inputs (a, b) in row-major order. `sign` is +1 for a+b and -1 for a-b.
"""

from __future__ import annotations

import math

import torch

from grokscope.analysis.fourier import fourier_basis, gini, n_freqs


# ---------------------------------------------------------------------------- logit measures
def sum_freq_directions(p: int, freqs: list[int], sign: int = 1) -> torch.Tensor:
    """[2·len(freqs), p²] orthonormal rows cos(k(a+sb))/‖·‖, sin(k(a+sb))/‖·‖ over the p² grid."""
    a = torch.arange(p, dtype=torch.float64).repeat_interleave(p)
    b = torch.arange(p, dtype=torch.float64).repeat(p)
    k = torch.tensor(freqs, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * (a + sign * b)[None, :] / p
    rows = torch.cat([torch.cos(angle), torch.sin(angle)])
    return rows / math.sqrt(p * p / 2)  # each has squared norm p²/2 (k ≠ 0 mod p)


def freq_projection(logits: torch.Tensor, p: int, freqs: list[int], sign: int = 1) -> torch.Tensor:
    """Each logit column projected onto span{cos k(a+sb), sin k(a+sb) : k in freqs} over inputs."""
    if not freqs:
        return torch.zeros_like(logits, dtype=torch.float64)
    V = sum_freq_directions(p, freqs, sign).to(logits.device)
    x = logits.double()
    return V.T @ (V @ x)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean float64 cross-entropy over the input axis (-2): [..., n, C] -> [...]."""
    logp = logits.double().log_softmax(dim=-1)
    idx = labels.expand(*logp.shape[:-1])[..., None]
    return -logp.gather(-1, idx)[..., 0].mean(dim=-1)


def restricted_logits(logits: torch.Tensor, p: int, freqs: list[int], sign: int = 1) -> torch.Tensor:
    """Keep only the key-frequency directions, plus the mean over inputs of what was dropped.

    The mean term is the paper's bias correction: a per-class constant shift the circuit gets for free.
    """
    x = logits.double()
    proj = freq_projection(x, p, freqs, sign)
    return proj + (x - proj).mean(dim=-2, keepdim=True)


def excluded_logits(logits: torch.Tensor, p: int, freqs: list[int], sign: int = 1) -> torch.Tensor:
    """Remove the key-frequency directions (no correction)."""
    x = logits.double()
    return x - freq_projection(x, p, freqs, sign)


def restricted_loss_from_logits(logits, labels, idx, p, freqs, sign=1) -> torch.Tensor:
    """Loss of the restricted logits on inputs `idx` (e.g. task.train_idx or task.test_idx)."""
    return cross_entropy(restricted_logits(logits, p, freqs, sign)[..., idx, :], labels[idx])


def excluded_loss_from_logits(logits, labels, idx, p, freqs, sign=1) -> torch.Tensor:
    return cross_entropy(excluded_logits(logits, p, freqs, sign)[..., idx, :], labels[idx])


def excluded_loss_per_freq_from_logits(logits, labels, idx, p, freqs, sign=1) -> torch.Tensor:
    """[..., len(freqs)]: excluded loss on inputs `idx` with each frequency removed alone."""
    x = logits.double()
    m = sum_index(p, sign).to(x.device)[idx]
    binned = sum_bins(x, p, sign)
    xi, yi = x[..., idx, :], labels[idx]
    out = [_nll(xi - _bin_projection(binned, p, [k])[..., m, :], yi).mean(-1) for k in freqs]
    return torch.stack(out, dim=-1) if out else torch.zeros(*x.shape[:-2], 0, dtype=torch.float64)


def sum_index(p: int, sign: int = 1) -> torch.Tensor:
    """[p²] long: m = (a + s·b) mod p for each input in row-major order."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return (a + sign * b) % p


def sum_bins(logits: torch.Tensor, p: int, sign: int = 1) -> torch.Tensor:
    """[..., p², C] -> [..., p, C]: logits summed over the inputs with a + s·b ≡ m (mod p)."""
    x = logits.double()
    out = torch.zeros(*x.shape[:-2], p, x.shape[-1], dtype=torch.float64, device=x.device)
    return out.index_add_(-2, sum_index(p, sign).to(x.device), x)


def _trig(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(2πkm/p), sin(2πkm/p) as [K, p] for k = 1..K, m = 0..p-1."""
    k = torch.arange(1, n_freqs(p) + 1, dtype=torch.float64)[:, None]
    m = torch.arange(p, dtype=torch.float64)[None, :]
    return torch.cos(2 * math.pi * k * m / p), torch.sin(2 * math.pi * k * m / p)


def cos_coefficients_from_logits(logits: torch.Tensor, p: int, sign: int = 1) -> torch.Tensor:
    """[..., K]: coefficient of the unit vector ∝ cos(k(a+sb−c)) over the p³ cube, k = 1..K.

    cos(k(m−c)) = cos km cos kc + sin km sin kc, so summing logits into bins m = a+sb first turns
    the paper's K x p² x p cosine cube into two K x p x p contractions.
    """
    return _cos_coefficients_from_bins(sum_bins(logits, p, sign)[..., :p], p)


def _cos_coefficients_from_bins(binned: torch.Tensor, p: int) -> torch.Tensor:
    C, S = (t.to(binned.device) for t in _trig(p))
    raw = ((C @ binned) * C).sum(-1) + ((S @ binned) * S).sum(-1)  # [..., K]
    return raw / math.sqrt(p**3 / 2)  # ‖cos(k(a+sb−c))‖ over the cube


def _nll(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row float64 cross-entropy: [..., n, C], labels [n] -> [..., n]."""
    picked = x.gather(-1, labels.expand(*x.shape[:-1])[..., None])[..., 0]
    return _logsumexp(x) - picked


def _logsumexp(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last axis; in place on one temporary (torch's own is ~20% slower on CPU)."""
    m = x.amax(dim=-1, keepdim=True)
    return (x - m).exp_().sum(dim=-1).log_() + m[..., 0]


# ---------------------------------------------------------------------------- weight measures
def fourier_norms_W_E(W_E: torch.Tensor, p: int) -> torch.Tensor:
    """[..., p]: norm over d_model of each Fourier component of the number tokens' embeddings."""
    B = fourier_basis(p).to(W_E.device)
    return (B @ W_E[..., :p, :].double()).norm(dim=-1)


def neuron_logit_map(W_out: torch.Tensor, W_U: torch.Tensor, p: int) -> torch.Tensor:
    """W_L = W_out · W_U[:, :p]: [..., d_mlp, p], each neuron's direct effect on the answer logits."""
    return W_out.double() @ W_U[..., :, :p].double()


def fourier_norms_W_L(W_out: torch.Tensor, W_U: torch.Tensor, p: int) -> torch.Tensor:
    """[..., p]: norm over neurons of each Fourier component of W_L along the answer axis."""
    B = fourier_basis(p).to(W_out.device)
    return (neuron_logit_map(W_out, W_U, p) @ B.T).norm(dim=-2)


def sum_sq_weights(weights: dict[str, torch.Tensor]) -> float:
    """Total sum of squared parameters (what weight decay pushes down)."""
    return float(sum(w.double().square().sum() for w in weights.values()))


# ---------------------------------------------------------------------------- on a model in memory
def model_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def measure_model(model, task, key_freqs: list[int] | None = None) -> dict[str, float]:
    """Every scalar measure for one model in memory; key frequencies detected from it when None."""
    from grokscope.analysis.key_frequencies import key_frequencies
    from grokscope.analysis.modular_view import check_task, last_mlp_name, modular_outputs

    sign = check_task(task)
    p = task.p
    out = modular_outputs(model, task)
    weights = model_weights(model)
    kf = key_frequencies(out.neurons, p) if out.neurons is not None else None
    freqs = list(key_freqs) if key_freqs is not None else (kf.key_freqs if kf else [])
    return {
        **{k: float(v) for k, v in logit_measures(out.logits, task, freqs, sign).items()},
        **weight_measures(weights, p, last_mlp_name(weights)),
        "frac_neurons_explained": kf.frac_neurons_explained if kf else float("nan"),
        "key_freqs": freqs,
    }


def logit_measures(logits: torch.Tensor, task, freqs: list[int], sign: int) -> dict[str, torch.Tensor]:
    """Losses, accuracies, restricted and excluded losses of [..., p², p] logits (leading axes kept).

    Same numbers as `restricted_logits`/`excluded_logits` + `cross_entropy`, computed the cheap way:
    every key-frequency direction is a function of m = a + s·b, so the projection is a [p, p] table
    P[m, c] read from the logits summed into p bins, and the restricted logits have only p distinct
    rows (one per m), whose log-softmax costs p² instead of p³.
    """
    p, y = task.p, task.labels
    x = logits.double()
    m = sum_index(p, sign).to(x.device)
    binned = sum_bins(x, p, sign)  # [..., p, C]
    P = _bin_projection(binned, p, freqs)  # [..., p(m), C]
    restricted = P + (x.mean(dim=-2) - P.mean(dim=-2))[..., None, :]  # bias correction, [..., p, C]
    nll_restricted = _logsumexp(restricted)[..., m] - restricted[..., m, y]
    nll = _nll(x, y)
    nll_excluded = _nll(x - P[..., m, :], y)
    correct = (x.argmax(dim=-1) == y).double()
    out = {}
    for split, idx in (("train", task.train_idx), ("test", task.test_idx)):
        out[f"{split}_loss"] = nll[..., idx].mean(-1)
        out[f"{split}_acc"] = correct[..., idx].mean(-1)
    for split, idx in (("train", task.train_idx), ("test", task.test_idx)):
        out[f"restricted_loss_{split}"] = nll_restricted[..., idx].mean(-1)
    for split, idx in (("train", task.train_idx), ("test", task.test_idx)):
        out[f"excluded_loss_{split}"] = nll_excluded[..., idx].mean(-1)
    return out


def _bin_projection(binned: torch.Tensor, p: int, freqs: list[int]) -> torch.Tensor:
    """[..., p(m), C]: the logits' projection onto the `freqs` directions, as a function of m."""
    if not freqs:
        return torch.zeros_like(binned)
    C, S = (t[[k - 1 for k in freqs]].to(binned.device) for t in _trig(p))  # [F, p]
    # coefficient on the unit vector cos(k·m)/‖·‖ is (C @ binned)/‖·‖; rebuilding divides once more
    return (C.T @ (C @ binned) + S.T @ (S @ binned)) / (p * p / 2)


def weight_measures(weights: dict[str, torch.Tensor], p: int, mlp: str) -> dict[str, float]:
    return {
        "gini_W_E": float(gini(fourier_norms_W_E(weights["embed.W_E"], p))),
        "gini_W_L": float(gini(fourier_norms_W_L(weights[f"{mlp}.W_out"], weights["unembed.W_U"], p))),
        "sum_sq_weights": sum_sq_weights(weights),
    }


# ---------------------------------------------------------------------------- one function per measure
def _setup(model, task, key_freqs):
    from grokscope.analysis.key_frequencies import key_frequencies
    from grokscope.analysis.modular_view import check_task, modular_outputs

    sign = check_task(task)
    out = modular_outputs(model, task, want_neurons=key_freqs is None)
    if key_freqs is None:
        key_freqs = key_frequencies(out.neurons, task.p).key_freqs if out.neurons is not None else []
    return out.logits, list(key_freqs), sign


def _split_idx(task, split: str):
    if split not in ("train", "test", "all"):
        from grokscope.errors import GrokscopeError

        raise GrokscopeError(f"split must be train, test or all, got {split!r}")
    return {"train": task.train_idx, "test": task.test_idx, "all": torch.arange(task.p**2)}[split]


def restricted_loss(model, task, key_freqs: list[int] | None = None, split: str = "train") -> float:
    """Loss with only the key-frequency directions of the logits kept (plus bias correction)."""
    logits, freqs, sign = _setup(model, task, key_freqs)
    return float(
        restricted_loss_from_logits(logits, task.labels, _split_idx(task, split), task.p, freqs, sign)
    )


def excluded_loss(model, task, key_freqs: list[int] | None = None, split: str = "train") -> float:
    """Loss with the key-frequency directions of the logits removed."""
    logits, freqs, sign = _setup(model, task, key_freqs)
    return float(excluded_loss_from_logits(logits, task.labels, _split_idx(task, split), task.p, freqs, sign))


def excluded_loss_per_freq(model, task, key_freqs: list[int] | None = None) -> dict[int, float]:
    """{k: train loss with frequency k alone removed} for each key frequency."""
    logits, freqs, sign = _setup(model, task, key_freqs)
    vals = excluded_loss_per_freq_from_logits(logits, task.labels, task.train_idx, task.p, freqs, sign)
    return dict(zip(freqs, vals.tolist(), strict=True))


def cos_coefficients(model, task) -> torch.Tensor:
    """[K]: coefficients of cos(k(a+b−c)) in the logits, k = 1..(p-1)/2."""
    logits, _, sign = _setup(model, task, [])
    return cos_coefficients_from_logits(logits, task.p, sign)


def gini_W_E(model, task) -> float:
    return float(gini(fourier_norms_W_E(model.embed.W_E.detach(), task.p)))


def gini_W_L(model, task) -> float:
    from grokscope.analysis.modular_view import last_mlp_name

    weights = model_weights(model)
    mlp = last_mlp_name(weights)
    return float(gini(fourier_norms_W_L(weights[f"{mlp}.W_out"], weights["unembed.W_U"], task.p)))


def total_sum_sq_weights(model) -> float:
    return sum_sq_weights(model_weights(model))
