"""PCA of token representations across checkpoints, and the Fourier circles of modular runs.

The rows analysed are one vector per input token: the embedding `W_E`, or a hook's mean activation
over the examples that have that token at a chosen position. PCA is an SVD of the centred rows in
float64. Across checkpoints, each checkpoint's components are sign-aligned with the previous one
(`basis="each"`), or every checkpoint is projected on the last checkpoint's components
(`basis="final"`), so that small multiples and animations do not flip at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.analysis.fourier import fourier_basis
from grokscope.analysis.key_frequencies import model_key_frequencies
from grokscope.devices import resolve_device
from grokscope.errors import GrokscopeError
from grokscope.interp.activations import collect
from grokscope.model import Transformer
from grokscope.tasks import Batch

PCA_DATA = "analysis/pca/{key}_pca.safetensors"  # steps [S], projections [S, n, k], explained [S, k]
CIRCLES_DATA = "analysis/pca/circles.safetensors"  # projections [freqs, p, 2], freqs [freqs]


@dataclass
class PCAResult:
    mean: torch.Tensor  # [d]
    components: torch.Tensor  # [k, d], orthonormal rows
    explained: torch.Tensor  # [k], fraction of total variance
    projections: torch.Tensor  # [n, k]


def pca(X: torch.Tensor, k: int | None = None) -> PCAResult:
    """Principal components of the rows of X [n, d]."""
    X = X.double()
    mean = X.mean(0)
    U, S, Vh = torch.linalg.svd(X - mean, full_matrices=False)
    k = min(k or Vh.shape[0], Vh.shape[0])
    var = S**2
    explained = var[:k] / var.sum().clamp(min=1e-300)
    return PCAResult(mean, Vh[:k], explained, (X - mean) @ Vh[:k].T)


def align_to(result: PCAResult, reference: torch.Tensor) -> PCAResult:
    """Flip component signs so each has a non-negative dot product with the reference's."""
    k = min(len(reference), len(result.components))
    signs = torch.ones(len(result.components), dtype=torch.float64)
    signs[:k] = torch.sign((result.components[:k] * reference[:k]).sum(-1))
    signs[signs == 0] = 1.0
    return PCAResult(
        result.mean, result.components * signs[:, None], result.explained, result.projections * signs
    )


def token_rows(
    model: Transformer,
    what: str,
    batch: Batch | None = None,
    position: int = 0,
    group_position: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [n_tokens_seen, d], their token ids): W_E, or `what`'s mean activation per token.

    For a hook, examples are grouped by their token at `group_position` (default: `position`) and the
    hook's activation at `position` is averaged within each group.
    """
    if what == "W_E":
        W = model.embed.W_E.detach().cpu().double()
        return W, torch.arange(W.shape[0])
    if batch is None:
        raise GrokscopeError("a hook's mean activation per token needs examples")
    group_position = position if group_position is None else group_position
    act = collect(model, batch, [what], [position])[what][:, 0].double()  # [N, d]
    tok = batch.tokens[:, group_position]
    seen = tok.unique()
    sums = torch.zeros(int(tok.max()) + 1, act.shape[1], dtype=torch.float64).index_add_(0, tok, act)
    counts = torch.bincount(tok, minlength=sums.shape[0]).double()
    return sums[seen] / counts[seen, None], seen


@dataclass
class PCAOverTime:
    steps: list[int]
    tokens: torch.Tensor  # [n] token ids of the rows
    explained: torch.Tensor  # [S, k]
    projections: torch.Tensor  # [S, n, k]


def pca_over_checkpoints(
    rows_by_step: dict[int, torch.Tensor], tokens: torch.Tensor, k: int = 6, basis: str = "each"
) -> PCAOverTime:
    """PCA of each checkpoint's rows; `basis` 'each' (sign-aligned) or 'final' (last step's components)."""
    if basis not in ("each", "final"):
        raise GrokscopeError(f"bad PCA basis {basis!r}: use 'each' or 'final'")
    steps = sorted(rows_by_step)
    results = [pca(rows_by_step[s], k) for s in steps]
    if basis == "final":
        final = results[-1]
        results = [
            PCAResult(
                final.mean,
                final.components,
                _explained_along(rows_by_step[s], final.components),
                (rows_by_step[s].double() - rows_by_step[s].double().mean(0)) @ final.components.T,
            )
            for s in steps
        ]
    else:
        for i in range(len(results) - 1, 0, -1):  # align backwards from the final, most structured one
            results[i - 1] = align_to(results[i - 1], results[i].components)
    kk = min(r.projections.shape[1] for r in results)
    return PCAOverTime(
        steps,
        tokens,
        torch.stack([r.explained[:kk] for r in results]),
        torch.stack([r.projections[:, :kk] for r in results]),
    )


def _explained_along(X: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    Xc = X.double() - X.double().mean(0)
    return ((Xc @ components.T) ** 2).sum(0) / (Xc**2).sum().clamp(min=1e-300)


# ----------------------------------------------------------------------------- Fourier circles


def embedding_frequency_norms(W: torch.Tensor) -> torch.Tensor:
    """[n_freq]: the norm of the embedding of p numbers (W [p, d_model]) along each frequency k =
    1..(p-1)/2's cos/sin pair (rows 2k-1, 2k of `analysis.fourier.fourier_basis`)."""
    basis = fourier_basis(W.shape[0])
    W = W.double()
    return (((basis[1::2] @ W) ** 2).sum(1) + ((basis[2::2] @ W) ** 2).sum(1)).sqrt()


def circle_frequencies(model: Transformer, task) -> list[int]:
    """The frequencies the circles are drawn for: the key frequencies of `model`'s MLP neurons by the
    progress measures' rule (`analysis.key_frequencies`, as `grokscope analyze` reports them);
    none for a model without an MLP."""
    if model.cfg.attn_only or not len(model.blocks):
        return []
    return model_key_frequencies(model, task).key_freqs


def circle_projections(W: torch.Tensor, freqs: list[int]) -> torch.Tensor:
    """[F, p, 2]: the p number embeddings (W [p, d_model]) projected on the plane each frequency's
    cos/sin pair spans.

    The plane is spanned by the d_model directions W^T cos_k and W^T sin_k (orthonormalised), so a
    model using frequency k places the numbers on a circle there, in the order 0, k, 2k, ... mod p.
    """
    basis = fourier_basis(W.shape[0])
    W = W.double()
    Wc = W - W.mean(0)
    out = []
    for f in freqs:
        plane = torch.stack([W.T @ basis[2 * f - 1], W.T @ basis[2 * f]], dim=1)  # [d_model, 2]
        q, _ = torch.linalg.qr(plane)
        out.append(Wc @ q)
    return torch.stack(out) if out else torch.zeros(0, W.shape[0], 2, dtype=torch.float64)


@dataclass
class PCARunResult:
    """What `pca_run` computed and wrote."""

    tag: str  # file stem: W_E, or hook@position
    steps: list[int]
    explained: list[dict]  # one row per checkpoint: step, pc1..pck
    freqs: list[int]  # modular W_E: the key frequencies the circles are drawn for
    radius_cv: list[dict]  # per (step, freq): how round the numbers' circle is
    norm_share: list[float]  # per freq: its share of W_E's Fourier norm at the last step


def pca_run(run, options) -> PCARunResult:
    """The `pca` study: PCA of token representations over checkpoints, written as
    `analysis/pca/<tag>_explained.csv` and `<tag>_pca.safetensors`; for a modular run's W_E also the
    numbers' circles on the key-frequency planes (`circles.safetensors`, `circles.csv`)."""
    import json

    from grokscope.files import write_tensors
    from grokscope.interp.activations import check_hooks, parse_steps
    from grokscope.interp.io import merge_csv, safe_name

    run.device = resolve_device(options.device)  # where the forward runs; tables on the CPU
    task = run.task
    steps = parse_steps(options.step, run.readable_steps())
    batch = None
    if options.of != "W_E":
        sets = task.eval_sets()
        if options.data not in sets:
            raise GrokscopeError(f"the task has no example set {options.data!r}; it has {', '.join(sets)}")
        batch = sets[options.data]
        n_ctx = batch.tokens.shape[1]
        for name, pos in (("position", options.position), ("group position", options.group_position)):
            if pos is not None and not -n_ctx <= pos < n_ctx:
                raise GrokscopeError(f"{name} {pos} is outside the context ({n_ctx} positions)")
    modular = getattr(run.config.task, "kind", None) == "modular"
    names = task.token_names()
    rows_by_step, W_numbers, tokens, model = {}, {}, None, None
    for step, model in run.models(steps):
        if options.of != "W_E":
            check_hooks(model, [options.of])
        rows, tokens = token_rows(model, options.of, batch, options.position, options.group_position)
        if modular and options.of == "W_E":
            rows, tokens = rows[: task.p], tokens[: task.p]  # the numbers; '=' is not on the circle
        rows_by_step[step] = rows
        if modular:
            W_numbers[step] = model.embed.W_E.detach()[: task.p].cpu().double()
    result = pca_over_checkpoints(rows_by_step, tokens, k=6, basis=options.basis)
    out = run.subdir("analysis") / "pca"
    tag = safe_name(options.of if options.of == "W_E" else f"{options.of}@{options.position}")
    table = [
        {
            "of": tag,
            "step": s,
            **{f"pc{j + 1}": result.explained[i, j].item() for j in range(result.explained.shape[1])},
        }
        for i, s in enumerate(result.steps)
    ]
    merge_csv(out / f"{tag}_explained.csv", table, ("of", "step"))
    write_tensors(
        run.path / PCA_DATA.format(key=tag),
        {
            "steps": torch.tensor(list(result.steps), dtype=torch.int64),
            "projections": result.projections,  # [checkpoints, tokens, k]
            "explained": result.explained,  # [checkpoints, k]
        },
        {"labels": json.dumps([names[t] for t in tokens.tolist()])},
    )
    freqs, radius_cv, share = [], [], []
    if modular and options.of == "W_E":
        last = steps[-1]
        freqs = circle_frequencies(model, task)  # `model` holds the last step's weights
        circ = [circle_projections(W_numbers[s], freqs) for s in steps]
        circles = {"projections": circ[-1], "freqs": torch.tensor(freqs, dtype=torch.int64)}
        write_tensors(run.path / CIRCLES_DATA, circles, {"step": str(last)})
        radius_cv = [
            {
                "step": s,
                "freq": f,
                "radius_cv": (c[i].norm(dim=1).std() / c[i].norm(dim=1).mean()).item(),
                "radius": c[i].norm(dim=1).mean().item(),
            }
            for s, c in zip(steps, circ, strict=True)
            for i, f in enumerate(freqs)
        ]
        merge_csv(out / "circles.csv", radius_cv, ("step", "freq"))
        norms = embedding_frequency_norms(W_numbers[last])
        share = [(norms[f - 1] / norms.sum()).item() for f in freqs]
    return PCARunResult(tag, steps, table, freqs, radius_cv, share)
