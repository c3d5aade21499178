"""Linear probes: is a label linearly readable from a hook at a position, on held-out examples?

Many probes are fitted at once: features `X [P, N, D]` (P positions, N examples, D features) against
labels `Y [N, K]` (K label columns) give P*K independent probes. Classification probes are L2-regularised
multinomial logistic regressions on standardised features, fitted with torch's L-BFGS (strong Wolfe
line search) in float64: the objective is convex, so the optimum does not depend on the optimiser, and
`backend="sklearn"` cross-checks it with scikit-learn's LogisticRegression where that is installed.
Regression probes are ridge regressions solved in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.errors import GrokscopeError

_NEG = -1e30  # logit of classes a label column never takes


@dataclass
class LinearProbes:
    """P x K fitted probes; weights live in standardised feature space (x - mu) / sd."""

    W: torch.Tensor  # [P, K, D, C]
    b: torch.Tensor  # [P, K, C]
    mu: torch.Tensor  # [P, D]
    sd: torch.Tensor  # [P, D]
    classes: list[torch.Tensor] | None  # per column, the class values (None: regression)

    @property
    def regression(self) -> bool:
        return self.classes is None

    def _standardize(self, X: torch.Tensor) -> torch.Tensor:
        return (X.double() - self.mu[:, None]) / self.sd[:, None]

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """[P, N, D] -> [P, K, N, C] (regression: C = 1, the prediction)."""
        out = torch.einsum("pnd,pkdc->pknc", self._standardize(X), self.W) + self.b[:, :, None]
        if not self.regression:
            out = out + _class_mask(self.classes, out.shape[-1])[None, :, None]
        return out

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """[P, K, N]: class values, or regression predictions."""
        out = self.logits(X)
        if self.regression:
            return out[..., 0]
        idx = out.argmax(-1)
        table = _class_table(self.classes, out.shape[-1])  # [K, C]
        return torch.stack([table[k][idx[:, k]] for k in range(idx.shape[1])], dim=1)

    def score(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """[P, K]: accuracy (classification) or R² (regression) on examples X [P, N, D], Y [N, K]."""
        pred = self.predict(X)
        y = Y.T[None].to(pred.dtype)
        if not self.regression:
            return (pred == y).double().mean(-1)
        resid = ((pred - y) ** 2).sum(-1)
        total = ((y - y.mean(-1, keepdim=True)) ** 2).sum(-1).clamp(min=1e-12)
        return 1 - resid / total

    def directions(self) -> torch.Tensor:
        """[P, K, D*C]: each probe's weights in raw activation space, centred over classes.

        For a binary probe this is ±(w_1 - w_0)/2 per feature, the direction it reads.
        """
        W = self.W / self.sd[:, None, :, None]
        if not self.regression:
            valid = (_class_mask(self.classes, W.shape[-1]) == 0).double()[None, :, None]  # [1, K, 1, C]
            mean = (W * valid).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True)
            W = (W - mean) * valid
        return W.flatten(2)


def _class_mask(classes: list[torch.Tensor], C: int) -> torch.Tensor:
    mask = torch.full((len(classes), C), _NEG, dtype=torch.float64)
    for k, c in enumerate(classes):
        mask[k, : len(c)] = 0.0
    return mask


def _class_table(classes: list[torch.Tensor], C: int) -> torch.Tensor:
    table = torch.full((len(classes), C), -(2**62), dtype=torch.long)
    for k, c in enumerate(classes):
        table[k, : len(c)] = c.long()
    return table


def majority_accuracy(y_fit: torch.Tensor, y_score: torch.Tensor) -> torch.Tensor:
    """[K]: accuracy of always answering the fit set's most common class."""
    out = []
    for k in range(y_fit.shape[1]):
        values, counts = y_fit[:, k].unique(return_counts=True)
        out.append((y_score[:, k] == values[counts.argmax()]).double().mean())
    return torch.stack(out)


def fit_probes(
    X: torch.Tensor,
    Y: torch.Tensor,
    l2: float = 1e-3,
    regression: bool = False,
    max_iter: int = 200,
    backend: str = "torch",
    max_elements: int = 20_000_000,
) -> LinearProbes:
    """Fit P*K probes from X [P, N, D] to Y [N, K]; objective per probe: mean loss + l2/2 * |W|².

    Positions are fitted in groups of at most `max_elements` feature values, bounding memory.
    """
    if X.dim() != 3 or Y.dim() != 2 or X.shape[1] != Y.shape[0]:
        raise GrokscopeError(f"probe data shapes disagree: X {tuple(X.shape)}, Y {tuple(Y.shape)}")
    if l2 <= 0:
        raise GrokscopeError("the probe's l2 penalty must be > 0 (it keeps separable data bounded)")
    P, N, D = X.shape
    mu = X.double().mean(1)
    sd = X.double().std(1).clamp(min=1e-6)  # constant features stay 0 after standardising
    classes = None if regression else [Y[:, k].unique() for k in range(Y.shape[1])]
    step = max(1, max_elements // max(N * D, 1))
    Ws, bs = [], []
    for start in range(0, P, step):
        sl = slice(start, min(P, start + step))
        Xs = (X[sl].double() - mu[sl, None]) / sd[sl, None]
        if regression:
            W, b = _fit_ridge(Xs, Y.double(), l2)
        elif backend == "sklearn":
            W, b = _fit_sklearn(Xs, Y, classes, l2, max_iter)
        elif backend == "torch":
            W, b = _fit_logistic(Xs, Y, classes, l2, max_iter)
        else:
            raise GrokscopeError(f"unknown probe backend {backend!r}; use torch or sklearn")
        Ws.append(W)
        bs.append(b)
    return LinearProbes(torch.cat(Ws), torch.cat(bs), mu, sd, classes)


def _encode(Y: torch.Tensor, classes: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.searchsorted(c, Y[:, k].contiguous()) for k, c in enumerate(classes)], 1)


def _fit_logistic(Xs, Y, classes, l2: float, max_iter: int):
    P, N, D = Xs.shape
    K = Y.shape[1]
    C = max(2, max(len(c) for c in classes))
    target = _encode(Y, classes).T[None, :, :, None].expand(P, K, N, 1)  # [P, K, N, 1]
    mask = _class_mask(classes, C)[None, :, None]
    W = torch.zeros(P, K, D, C, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(P, K, C, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        logits = torch.einsum("pnd,pkdc->pknc", Xs, W) + b[:, :, None] + mask
        nll = -logits.log_softmax(-1).gather(-1, target).mean(2).sum()
        loss = nll + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def _fit_ridge(Xs, Y, l2: float):
    P, N, D = Xs.shape
    y = Y - Y.mean(0)
    gram = Xs.transpose(1, 2) @ Xs / N + l2 * torch.eye(D, dtype=torch.float64)
    W = torch.linalg.solve(gram, Xs.transpose(1, 2) @ y[None] / N)  # [P, D, K]
    return W.transpose(1, 2)[..., None], Y.mean(0)[None, :, None].expand(P, -1, 1).clone()


def _fit_sklearn(Xs, Y, classes, l2: float, max_iter: int):
    """scikit-learn's LogisticRegression with the same penalty, for cross-checking the torch fit."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise GrokscopeError(
            "the sklearn probe backend needs scikit-learn: pip install 'grokscope[probes]' "
            "(or use the default torch backend)"
        ) from None
    P, N, D = Xs.shape
    K = Y.shape[1]
    C = max(2, max(len(c) for c in classes))
    W = torch.zeros(P, K, D, C, dtype=torch.float64)
    b = torch.zeros(P, K, C, dtype=torch.float64)
    enc = _encode(Y, classes).numpy()
    for p in range(P):
        x = Xs[p].numpy()
        for k in range(K):
            n_cls = len(classes[k])
            if n_cls < 2:
                continue
            # sklearn minimises C_reg * sum(loss) + |w|²/2; binary uses one vector w = w_1 - w_0.
            c_reg = (2.0 if n_cls == 2 else 1.0) / (l2 * N)
            clf = LogisticRegression(C=c_reg, max_iter=max_iter * 10, tol=1e-10).fit(x, enc[:, k])
            coef = torch.as_tensor(clf.coef_, dtype=torch.float64)
            icpt = torch.as_tensor(clf.intercept_, dtype=torch.float64)
            if n_cls == 2:
                W[p, k, :, 0], W[p, k, :, 1] = -coef[0] / 2, coef[0] / 2
                b[p, k, 0], b[p, k, 1] = -icpt[0] / 2, icpt[0] / 2
            else:
                W[p, k, :, :n_cls], b[p, k, :n_cls] = coef.T, icpt
    return W, b


def random_cosine_baseline(dim: int, n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """(mean, 99th percentile) of |cos| between independent random directions in `dim` dimensions."""
    g = torch.Generator().manual_seed(seed)
    a, b = (
        torch.randn(n, dim, generator=g, dtype=torch.float64),
        torch.randn(n, dim, generator=g, dtype=torch.float64),
    )
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).abs()
    return cos.mean().item(), cos.quantile(0.99).item()


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
