"""Ablations: replace part of one hook's activation and measure what the model loses.

A `Part` names what is replaced: heads (hooks with a head dimension), features (neurons of an MLP
hook, or any index of the last dimension), positions, or a subspace of the last dimension given by
directions (the replaced component is the projection on their span, so the orthogonal rest is kept).
The replacement (`method`) is zero, the mean over a reference set (per position), or the activation
of a randomly drawn reference example (resampling). The change in loss, accuracy and exact match
(the task metric: every answer token right) comes from the one scorer, float64.

Ablating an empty part changes nothing; so does resampling from the very inputs scored in order
(tests/test_interventions.py). A random control of the same size (heads, neurons or a random
subspace of equal dimension) says whether what was lost is specific to the part.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from grokscope.errors import GrokscopeError
from grokscope.model import Transformer
from grokscope.model.positional import position_ids
from grokscope.scoring import aggregate, chunks, score_logits
from grokscope.tasks import Batch

METHODS = ("zero", "mean", "resample")
_HEADS_DIM1 = ("hook_pattern", "hook_attn_scores")  # [batch, head_index, query_pos, key_pos]
_HEADS_DIM2 = ("hook_q", "hook_k", "hook_v", "hook_z")  # [batch, pos, head_index, d_head]


@dataclass
class Part:
    """What of a hook's activation is ablated; None means all of it along that axis."""

    hook: str
    heads: list[int] | None = None
    features: list[int] | None = None  # indices of the last dimension (e.g. MLP neurons)
    positions: list[int] | None = None
    directions: torch.Tensor | None = None  # [k, width of the last dimension]: ablate their span

    def describe(self) -> str:
        bits = [self.hook]
        if self.heads is not None:
            bits.append(f"heads {self.heads}")
        if self.features is not None:
            bits.append(f"{len(self.features)} features")
        if self.positions is not None:
            bits.append(f"positions {self.positions}")
        if self.directions is not None:
            bits.append(f"{self.directions.shape[0]}-dim subspace")
        return ", ".join(bits)

    @property
    def size(self) -> int:
        """How many units it ablates (for the same-size random control)."""
        if self.directions is not None:
            return int(self.directions.shape[0])
        if self.features is not None:
            return len(self.features)
        if self.heads is not None:
            return len(self.heads)
        return 0


def _axes(hook: str) -> tuple[int | None, int]:
    """(head dimension or None, position dimension) of a hook's activation."""
    if hook.endswith(_HEADS_DIM1):
        return 1, 2
    if hook.endswith(_HEADS_DIM2):
        return 2, 1
    return None, 1


def _selection(part: Part, shape: torch.Size) -> torch.Tensor:
    """A bool mask broadcastable to the activation `shape`: the entries the ablation replaces (for
    subspaces: the positions and heads whose vectors are projected)."""
    head_dim, pos_dim = _axes(part.hook)
    sel = torch.ones([1] * len(shape), dtype=torch.bool)

    def along(dim: int, index: list[int], size: int, what: str) -> torch.Tensor:
        bad = [i for i in index if not -size <= i < size]
        if bad:
            raise GrokscopeError(f"{part.hook}: {what} {bad[0]} is out of range (it has {size})")
        m = torch.zeros(size, dtype=torch.bool)
        m[torch.tensor(index, dtype=torch.long)] = True
        view = [1] * len(shape)
        view[dim] = size
        return m.view(view)

    if part.heads is not None:
        if head_dim is None:
            raise GrokscopeError(f"{part.hook} has no head dimension; ablate heads at blocks.L.attn.hook_z")
        sel = sel & along(head_dim, part.heads, shape[head_dim], "head")
    if part.positions is not None:
        sel = sel & along(pos_dim, part.positions, shape[pos_dim], "position")
    if part.features is not None:
        if part.directions is not None:
            raise GrokscopeError("ablate features or directions, not both")
        sel = sel & along(len(shape) - 1, part.features, shape[-1], "feature")
    return sel


def _projector(directions: torch.Tensor, width: int) -> torch.Tensor:  # [width, width]
    if directions.dim() != 2 or directions.shape[1] != width:
        raise GrokscopeError(
            f"directions must be [k, {width}] for this hook (its last dimension has {width}); "
            f"got {tuple(directions.shape)}"
        )
    if directions.shape[0] == 0:
        return torch.zeros(width, width, dtype=directions.dtype)
    q, _ = torch.linalg.qr(directions.double().T)  # orthonormal basis of the span [width, k]
    return (q @ q.T).float()


def ablation_hook(part: Part, method: str, reference: torch.Tensor | None, generator: torch.Generator):
    """The forward hook that ablates `part` (the reference activations [n_ref, ...] feed mean and
    resample; zero needs none)."""
    if method not in METHODS:
        raise GrokscopeError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    P_cache: dict[torch.device, torch.Tensor] = {}

    def hook(x: torch.Tensor, _hook) -> torch.Tensor:
        if method == "zero":
            r = torch.zeros_like(x)
        elif method == "mean":
            r = reference.mean(0, keepdim=True).to(x.device, x.dtype).expand_as(x)
        else:
            idx = torch.randint(0, len(reference), (x.shape[0],), generator=generator)
            r = reference[idx].to(x.device, x.dtype)
        sel = _selection(part, x.shape).to(x.device)
        if part.directions is not None:
            P = P_cache.get(x.device)
            if P is None:
                P = P_cache[x.device] = _projector(part.directions, x.shape[-1]).to(x.device)
            new = x + (r - x) @ P
            return torch.where(sel, new, x)
        return torch.where(sel, r, x)

    return hook


@torch.no_grad()
def reference_activations(model: Transformer, batch: Batch, hook: str, chunk: int = 4096) -> torch.Tensor:
    """The full activation of `hook` [n, ...] over `batch` (every position computed)."""
    parts = []
    for index in chunks(len(batch), chunk):
        part = batch.select(index)
        _, cache = model.run_with_cache(part.tokens, names_filter=[hook], pos_ids=position_ids(model, part))
        parts.append(cache[hook])
    return torch.cat(parts)


@torch.no_grad()
def score_with_hooks(
    model: Transformer, batch: Batch, loss_positions: list[int], hooks: list, chunk: int = 4096
) -> dict[str, float]:
    """loss, acc and exact of the model on `batch` with forward `hooks` active (every position runs,
    so a hook sees the same shape as on the reference set)."""
    parts = []
    pos = torch.tensor(loss_positions, device=batch.tokens.device)
    for index in chunks(len(batch), chunk):
        part = batch.select(index)
        with model.hooks(hooks):
            logits = model(part.tokens, pos_ids=position_ids(model, part))
        parts.append(score_logits(logits.index_select(1, pos).double(), part.targets, part.mask))
    scores = parts[0]
    if len(parts) > 1:
        from grokscope.scoring import Scores

        scores = Scores(*(torch.cat([getattr(p, f) for p in parts]) for f in ("correct", "loss", "mask")))
    stats = aggregate(scores)
    return {"loss": stats["loss"], "acc": stats["acc"], "exact": float(scores.exact.double().mean())}


@dataclass
class AblationResult:
    part: str
    method: str
    size: int
    clean: dict[str, float]
    ablated: dict[str, float]
    controls: list[dict[str, float]] = field(default_factory=list)

    def row(self) -> dict:
        out = {"part": self.part, "method": self.method, "size": self.size}
        for k in ("loss", "acc", "exact"):
            out[f"clean_{k}"] = self.clean[k]
            out[k] = self.ablated[k]
            out[f"d_{k}"] = self.ablated[k] - self.clean[k]
            if self.controls:
                vals = torch.tensor([c[k] for c in self.controls], dtype=torch.float64)
                out[f"control_{k}"] = float(vals.mean())
                out[f"control_{k}_sd"] = float(vals.std()) if len(vals) > 1 else 0.0
        out["n_controls"] = len(self.controls)
        return out


def random_control(part: Part, shape: torch.Size, generator: torch.Generator) -> Part:
    """A part of the same size drawn at random: as many random heads or features, or a random
    subspace of the same dimension."""
    if part.directions is not None:
        k, width = part.directions.shape
        return replace(part, directions=torch.randn(k, width, generator=generator))
    if part.features is not None:
        perm = torch.randperm(shape[-1], generator=generator)[: len(part.features)]
        return replace(part, features=perm.tolist())
    if part.heads is not None:
        head_dim, _ = _axes(part.hook)
        perm = torch.randperm(shape[head_dim], generator=generator)[: len(part.heads)]
        return replace(part, heads=perm.tolist())
    raise GrokscopeError("a random control needs heads, features or directions to match in size")


def ablate(
    model: Transformer,
    batch: Batch,
    loss_positions: list[int],
    part: Part,
    method: str = "mean",
    reference: Batch | None = None,
    controls: int = 0,
    seed: int = 0,
) -> AblationResult:
    """Score `batch` clean and with `part` ablated (and `controls` random parts of the same size)."""
    from grokscope.interp.activations import check_hooks

    check_hooks(model, [part.hook])
    ref_batch = reference if reference is not None else batch
    ref = None if method == "zero" else reference_activations(model, ref_batch, part.hook)
    shape = (
        ref if ref is not None else reference_activations(model, batch.select(torch.arange(1)), part.hook)
    ).shape
    g = torch.Generator().manual_seed(seed)
    clean = score_with_hooks(model, batch, loss_positions, [])

    def run(p: Part) -> dict[str, float]:
        return score_with_hooks(model, batch, loss_positions, [(p.hook, ablation_hook(p, method, ref, g))])

    ablated = run(part)
    ctrl = [run(random_control(part, shape, g)) for _ in range(controls)]
    return AblationResult(part.describe(), method, part.size, clean, ablated, ctrl)
