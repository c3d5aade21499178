"""Linear probes: is a label linearly readable from a hook at a position, on held-out examples?

Fitting. Many probes are fitted at once: features `X [P, N, D]` (P positions, N examples, D features)
against labels `Y [N, K]` (K label columns) give P*K independent probes. Classification probes are
L2-regularised multinomial logistic regressions on standardised features, in float64: the objective
is convex, so the optimum does not depend on the optimiser; `backend="sklearn"` fits it with
scikit-learn's LogisticRegression (lbfgs), `backend="torch"` with torch's L-BFGS (strong Wolfe line
search), `"auto"` (the default) with scikit-learn where it is installed. Regression probes are ridge
regressions solved in closed form.

A probe study of one model: every (hook, position, label column), with the baselines that give it
meaning:

- majority: always answering the fit set's most common class;
- embed: the same probe on `hook_embed` at the same position (what the token there says by itself);
- control: the same probe on shuffled labels (same class frequencies) -> selectivity = score - control;
- geometry: cosine between probe directions of two hooks in the same basis (e.g. resid_mid vs
  resid_post), against random directions, and the accuracy of one hook's probe applied to the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from grokscope.devices import resolve_device
from grokscope.errors import GrokscopeError
from grokscope.interp.activations import collect
from grokscope.interp.labels import aligned_positions, control_labels, is_classification, resolve_label
from grokscope.model import Transformer
from grokscope.tasks import Batch

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

    def columns(self, index: slice) -> LinearProbes:
        """The probes of some label columns only."""
        classes = None if self.classes is None else self.classes[index]
        W, b = self.W[:, index], self.b[:, index]
        if classes is not None:  # drop class slots no kept column uses
            C = max(2, max(len(c) for c in classes))
            W, b = W[..., :C], b[..., :C]
        return LinearProbes(W, b, self.mu, self.sd, classes)

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


def _preconditioner(Xs: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(V [P, D, D], g [P, D]) with W = V diag(g) v: in v, the objective's Hessian at W = 0 is about
    the identity (features rotated to their principal axes, each scaled by 1/sqrt(curvature)).

    The data term's curvature along a principal axis of variance lambda is at most lambda / 2 (softmax
    at uniform probabilities), the penalty's is l2; correlated activations spread lambda over orders of
    magnitude, which is what makes plain L-BFGS on standardised features take hundreds of steps."""
    N = Xs.shape[1]
    lam, V = torch.linalg.eigh(Xs.transpose(1, 2) @ Xs / N)
    return V, (0.5 * lam.clamp(min=0) + l2).rsqrt()


def _fit_logistic(Xs, Y, classes, l2: float, max_iter: int):
    """Multinomial logistic regressions by L-BFGS in preconditioned coordinates (same optimum)."""
    P, N, D = Xs.shape
    K = Y.shape[1]
    C = max(2, max(len(c) for c in classes))
    onehot = torch.nn.functional.one_hot(_encode(Y, classes), C).double()  # [N, K, C]
    mask = _class_mask(classes, C)  # [K, C]
    V, g = _preconditioner(Xs, l2)
    Xt = (Xs @ V) * g[:, None]  # [P, N, D]: rotated and scaled features
    XtT = Xt.transpose(1, 2).contiguous()  # [P, D, N]: the gradient's matmul, laid out for it
    g2 = (g * g)[:, :, None]  # [P, D, 1]: |W|² = sum g² v²
    v = torch.zeros(P, D, K * C, dtype=torch.float64)  # [P, D, K*C]
    b = torch.zeros(P, K, C, dtype=torch.float64)
    opt = torch.optim.LBFGS(
        [v, b],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure():  # objective and its gradient by hand: two plain matmuls, no autograd graph
        logits = (Xt @ v).view(P, N, K, C) + b[:, None] + mask
        logp = logits.log_softmax(-1)
        nll = -(logp * onehot).sum((1, 3)) / N  # [P, K]
        resid = (logp.exp() - onehot) / N  # d nll / d logits
        v.grad = XtT @ resid.view(P, N, K * C) + l2 * g2 * v
        b.grad = resid.sum(1)
        return nll.sum() + 0.5 * l2 * (g2 * v * v).sum()

    opt.step(closure)
    v_ = (g[:, :, None] * v).view(P, D, K, C).transpose(1, 2)  # [P, K, D, C]
    return V[:, None] @ v_, b  # W back in standardised space


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
        from threadpoolctl import threadpool_limits
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
    with threadpool_limits(1):  # BLAS threads on a 5000 x 128 matvec only fight each other
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


# ----------------------------------------------------------------------------- the study


EMBED = "hook_embed"


@dataclass
class ProbeStudy:
    rows: list[dict] = field(default_factory=list)
    probes: dict[str, LinearProbes] = field(default_factory=dict)
    score_acts: dict[str, torch.Tensor] = field(default_factory=dict)  # hook -> [P, N, D]
    score_labels: torch.Tensor | None = None
    label_names: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # label columns constant on the fit examples


def probe_model(
    model: Transformer,
    fit: Batch,
    score: Batch,
    hooks: list[str],
    label: str,
    positions: list[int],
    l2: float = 1e-3,
    seed: int = 0,
    baselines: bool = True,
    backend: str = "torch",
    step: int | None = None,
    loss_positions: list[int] | None = None,
) -> ProbeStudy:
    """Fit and score probes for `label` on each hook at each position (plus baselines when asked).

    With the task's `loss_positions`, rows say whether their position is the one whose answer needs
    the label column (`aligned`; tasks with `answer_column` metadata such as addition)."""
    names, y_fit = resolve_label(fit, label)
    _, y_score = resolve_label(score, label)
    regression = not is_classification(y_fit)
    varies = [k for k in range(y_fit.shape[1]) if y_fit[:, k].unique().numel() > 1]
    skipped = [n for k, n in enumerate(names) if k not in varies]
    if not varies:
        raise GrokscopeError(f"label {label!r} takes a single value on the fit examples; nothing to probe")
    names, y_fit, y_score = [names[k] for k in varies], y_fit[:, varies], y_score[:, varies]
    aligned = aligned_positions(fit, names, loss_positions or [])
    want = list(dict.fromkeys([*hooks, EMBED] if baselines else hooks))
    acts_fit = collect(model, fit, want, positions)
    acts_score = collect(model, score, want, positions)
    study = ProbeStudy(score_labels=y_score, label_names=names, positions=positions, skipped=skipped)
    if baselines:
        y_all = control_labels(torch.cat([y_fit, y_score]), seed)
        cf, cs = y_all[: len(y_fit)], y_all[len(y_fit) :]
    K = y_fit.shape[1]
    fitted, control = {}, {}
    for h in want:
        Xf, Xs = acts_fit[h].transpose(0, 1), acts_score[h].transpose(0, 1)  # [P, N, D]
        with_control = baselines and h in hooks
        # the control probes read the same features: one fit of both label sets (independent probes)
        y = torch.cat([y_fit, cf], 1) if with_control else y_fit
        both = fit_probes(Xf, y, l2=l2, regression=regression, backend=backend)
        fitted[h] = both.columns(slice(0, K))
        if with_control:
            control[h] = both.columns(slice(K, 2 * K)).score(Xs, cs)
        study.probes[h] = fitted[h]
        study.score_acts[h] = Xs
    scores = {h: fitted[h].score(study.score_acts[h], y_score) for h in want}  # [P, K]
    majority = torch.zeros(len(names)) if regression else majority_accuracy(y_fit, y_score)
    for h in hooks:
        for i, pos in enumerate(positions):
            for k, name in enumerate(names):
                row = {
                    "step": step,
                    "hook": h,
                    "position": pos,
                    "label": name,
                    "metric": "r2" if regression else "acc",
                    "score": scores[h][i, k].item(),
                    "majority": majority[k].item(),
                    "n_fit": len(fit),
                    "n_score": len(score),
                    "n_classes": 0 if regression else len(fitted[h].classes[k]),
                    "aligned": aligned.get(name) == pos if aligned else None,
                }
                if baselines:
                    row["embed"] = scores[EMBED][i, k].item()
                    row["control"] = control[h][i, k].item()
                    row["selectivity"] = row["score"] - row["control"]
                study.rows.append(row)
    return study


def probe_geometry(study: ProbeStudy, hook_a: str, hook_b: str, step: int | None = None) -> list[dict]:
    """Per (position, label column): do two hooks' probes read the same direction, and do they transfer?"""
    pa, pb = study.probes[hook_a], study.probes[hook_b]
    da, db = pa.directions(), pb.directions()  # [P, K, D*C]
    if da.shape != db.shape:
        return []  # hooks of different widths live in different bases
    cos = cosine(da, db)
    d_model = pa.W.shape[2]
    rand_mean, rand_p99 = random_cosine_baseline(d_model)
    y = study.score_labels
    a_on_b = pa.score(study.score_acts[hook_b], y)
    b_on_a = pb.score(study.score_acts[hook_a], y)
    own_a = pa.score(study.score_acts[hook_a], y)
    own_b = pb.score(study.score_acts[hook_b], y)
    rows = []
    for i, pos in enumerate(study.positions):
        for k, name in enumerate(study.label_names):
            rows.append(
                {
                    "step": step,
                    "hook_a": hook_a,
                    "hook_b": hook_b,
                    "position": pos,
                    "label": name,
                    "cosine": cos[i, k].item(),
                    "random_abs_cos_mean": rand_mean,
                    "random_abs_cos_p99": rand_p99,
                    "score_a": own_a[i, k].item(),
                    "score_b": own_b[i, k].item(),
                    "a_probe_on_b": a_on_b[i, k].item(),
                    "b_probe_on_a": b_on_a[i, k].item(),
                }
            )
    return rows


def summary_rows(rows: list[dict]) -> tuple[list[dict], str]:
    """The rows worth showing, and how they were chosen: each label column at its aligned position
    when the task defines one (rows read back from CSV hold the string 'True'), else at its best."""
    aligned = [r for r in rows if r.get("aligned") in (True, "True")]
    if aligned:
        return aligned, "each label column at the position whose answer needs it"
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["hook"], r["label"])
        if key not in best or r["score"] > best[key]["score"]:
            best[key] = r
    many = len({r["position"] for r in rows}) > 1
    return list(best.values()), "best position per row" if many else "one position"


#: the columns of a probe-geometry row, as tables show them
GEOMETRY_COLUMNS = (
    "hook_a",
    "hook_b",
    "label",
    "position",
    "cosine",
    "score_a",
    "score_b",
    "a_probe_on_b",
    "b_probe_on_a",
)


@dataclass
class ProbeRunResult:
    """What `probe_run` computed and wrote (the table's rows over every step probed)."""

    rows: list[dict]
    geometry: list[dict]
    skipped: list[str]
    steps: list[int]
    n_fit: int
    n_score: int
    table: Path  # analysis/probes/<label>.csv


def probe_run(run, options) -> ProbeRunResult:
    """The `probe` study: probes for `options.label` on each hook, at each checkpoint asked, merged
    into `analysis/probes/<label>.csv` (and `_geometry.csv` with two hooks or more)."""
    from grokscope.interp.activations import check_hooks, example_sets, parse_positions, parse_steps
    from grokscope.interp.io import merge_csv, safe_name

    if not options.hook or not options.label:
        raise GrokscopeError("probe needs --hook HOOK (one or more) and --label NAME")
    run.device = resolve_device(options.device)  # where the forward runs; tables on the CPU
    task = run.task
    steps = parse_steps(options.step, run.readable_steps())
    fit, score = example_sets(task, options.fit, options.score, options.max_examples, options.seed)
    resolve_label(fit, options.label)  # fail fast on a bad label
    positions = parse_positions(options.position, fit.tokens.shape[1], task.loss_positions)
    rows, geo, skipped = [], [], []
    for step, model in run.models(steps):
        check_hooks(model, options.hook)
        study = probe_model(
            model,
            fit,
            score,
            options.hook,
            options.label,
            positions,
            l2=options.l2,
            seed=options.seed,
            baselines=options.baselines,
            backend=options.backend,
            step=step,
            loss_positions=task.loss_positions,
        )
        rows += study.rows
        skipped = study.skipped
        for other in options.hook[1:]:
            geo += probe_geometry(study, options.hook[0], other, step=step)
    out = run.subdir("analysis") / "probes"
    name = safe_name(options.label)
    merge_csv(out / f"{name}.csv", rows, ("step", "hook", "position", "label"))
    if geo:
        merge_csv(out / f"{name}_geometry.csv", geo, ("step", "hook_a", "hook_b", "position", "label"))
    return ProbeRunResult(rows, geo, skipped, steps, len(fit), len(score), out / f"{name}.csv")
