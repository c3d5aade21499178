"""Activation patching over nodes: each head's output, each MLP's output and the residual stream, at
each position; exact (one forward per node) and by attribution (one forward and backward for all).

Denoising runs the corrupted input and patches in the clean activation: a node that restores the
clean answer carries what the corruption changed. Noising runs the clean input and patches in the
corrupted activation: a node whose loss breaks the answer is needed. Either way the `effect` column
is normalised so 1 means "this node alone carries all of the clean-corrupted logit difference":
denoising (m_patched - m_corrupt) / (m_clean - m_corrupt), noising (m_clean - m_patched) /
(m_clean - m_corrupt), with m the logit difference of `pairs.logit_diff` (float64). `flipped` is
the share of differing answers that the patched run gives as the source's answer (does patching
this node flip the answer digit?).

Attribution patching (Nanda 2023; Syed et al. 2023) replaces the forward per node by the first-order
estimate (a_source - a_base) · ∂m/∂a at the base input, for every node at once. On a model that is
linear in the patched activation the two agree exactly (tests/test_interventions.py); elsewhere the
study reports their correlation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.interp.graph import frozen
from grokscope.interp.pairs import Pairs, logit_diff
from grokscope.model import Transformer
from grokscope.model.positional import position_ids
from grokscope.tasks import Batch

MODES = ("denoising", "noising")


@dataclass(frozen=True)
class Node:
    name: str  # L0H1, MLP0, resid_pre0, resid_mid0, resid_post1
    hook: str
    head: int | None = None


def node_list(model: Transformer) -> list[Node]:
    """Every node, in forward order: resid_pre, heads, resid_mid, MLP per layer, then resid_post."""
    out = []
    L = len(model.blocks)
    for layer in range(L):
        out.append(Node(f"resid_pre{layer}", f"blocks.{layer}.hook_resid_pre"))
        out += [Node(f"L{layer}H{h}", f"blocks.{layer}.attn.hook_z", h) for h in range(model.cfg.n_heads)]
        if not model.cfg.attn_only:
            out.append(Node(f"resid_mid{layer}", f"blocks.{layer}.hook_resid_mid"))
            out.append(Node(f"MLP{layer}", f"blocks.{layer}.hook_mlp_out"))
    if L:
        out.append(Node(f"resid_post{L - 1}", f"blocks.{L - 1}.hook_resid_post"))
    return out


def _logits(model: Transformer, batch: Batch, pairs: Pairs, hooks=()) -> torch.Tensor:
    """[batch, n_loss, d_vocab_out]. The last block runs at the loss positions only, so its hooks
    after attention hold those positions alone (`_index` maps a position to its slot)."""
    with model.hooks(list(hooks)):
        return model(batch.tokens, positions=pairs.loss_positions, pos_ids=position_ids(model, batch))


def _index(act: torch.Tensor, p: int, T: int, computed: list[int]) -> int | None:
    """The slot of position p along dimension 1 of a hook's activation; None where the forward did
    not compute it (a last-block hook at a position no loss reads: patching it changes nothing)."""
    if act.shape[1] == T:
        return p
    return computed.index(p) if p in computed else None


def _per_example(logits: torch.Tensor, pairs: Pairs) -> torch.Tensor:  # [batch] float64
    """Each example's summed logit difference over its differing positions (`logit_diff` is their
    total over the total weight)."""
    x = logits.double()
    d = (
        x.gather(-1, pairs.clean_answer[..., None])[..., 0]
        - x.gather(-1, pairs.corrupt_answer[..., None])[..., 0]
    )
    return (d * pairs.differs.double()).sum(1)


def _sides(pairs: Pairs, mode: str) -> tuple[Batch, Batch]:
    """(base, source): the input run and the one its activations are patched in from."""
    if mode == "denoising":
        return pairs.corrupt, pairs.clean
    if mode == "noising":
        return pairs.clean, pairs.corrupt
    from grokscope.errors import GrokscopeError

    raise GrokscopeError(f"--mode must be denoising, noising or both; got {mode!r}")


def normalise(m: float, m_clean: float, m_corrupt: float, mode: str) -> float:
    span = m_clean - m_corrupt
    if abs(span) < 1e-12:
        return float("nan")
    return (m - m_corrupt) / span if mode == "denoising" else (m_clean - m) / span


@torch.no_grad()
def baselines(model: Transformer, pairs: Pairs) -> tuple[float, float]:
    """(m_clean, m_corrupt): the logit difference on the clean and on the corrupted inputs."""
    return float(logit_diff(_logits(model, pairs.clean, pairs), pairs)), float(
        logit_diff(_logits(model, pairs.corrupt, pairs), pairs)
    )


def _per_example_flips(logits: torch.Tensor, pairs: Pairs, mode: str) -> torch.Tensor:  # [batch] float64
    """How many of each example's differing answer positions the run answers with the source's
    answer (the clean one when denoising, the corrupted one when noising)."""
    target = pairs.clean_answer if mode == "denoising" else pairs.corrupt_answer
    return ((logits.argmax(-1) == target) & pairs.differs).double().sum(1)


@torch.no_grad()
def exact_node_patching(
    model: Transformer,
    pairs: Pairs,
    mode: str,
    nodes: list[Node] | None = None,
    flips: dict | None = None,
    fast: bool = True,
) -> dict:
    """{(node name, position): m_patched} with the source activation patched into the base run at
    that node and position alone (None past the last loss position, which no answer reads). With a
    dict `flips`, it is filled with the share of differing answers that become the source's answer.

    Only the examples whose source and base activations differ there are run again: the others'
    logits are the base run's, so the metric is the same number for less work. With `fast`, a node
    of the last block after its attention (a head's z, resid_mid, the MLP, resid_post) is patched by
    recomputing only what follows it at that one position (the rest of the block is position-wise),
    not the whole forward; tests check both ways give the same numbers."""
    nodes = node_list(model) if nodes is None else nodes
    base, source = _sides(pairs, mode)
    tail = _Tail(model) if fast else None
    hooks = sorted({n.hook for n in nodes} | (tail.hooks if tail else set()))
    _, cache = model.run_with_cache(
        source.tokens, names_filter=hooks, positions=pairs.loss_positions, pos_ids=position_ids(model, source)
    )
    base_logits, base_cache = model.run_with_cache(
        base.tokens, names_filter=hooks, positions=pairs.loss_positions, pos_ids=position_ids(model, base)
    )
    d_base = _per_example(base_logits, pairs)
    f_base = _per_example_flips(base_logits, pairs, mode)
    c_base, g_base = _per_slot(base_logits, pairs, mode)
    weight = pairs.differs.double().sum().clamp(min=1)
    m_base = float(d_base.sum() / weight)
    flips = {} if flips is None else flips
    T = base.tokens.shape[1]
    computed = list(pairs.loss_positions)
    out = {}
    for node in nodes:
        src, act = cache[node.hook], base_cache[node.hook]
        for p in range(T):
            if p > max(computed):  # causal: no later position reaches a loss position
                out[(node.name, p)] = None
                continue
            i = _index(src, p, T, computed)
            if i is None:
                out[(node.name, p)] = m_base
                flips[(node.name, p)] = float(f_base.sum() / weight)
                continue
            a, b = (
                (src[:, i], act[:, i]) if node.head is None else (src[:, i, node.head], act[:, i, node.head])
            )
            changed = (a != b).flatten(1).any(1).nonzero()[:, 0]
            if len(changed) == 0:
                out[(node.name, p)] = m_base
                flips[(node.name, p)] = float(f_base.sum() / weight)
                continue
            if tail is not None and node.hook in tail.hooks:
                logits_k = tail.logits(node, i, src[changed], base_cache, changed)  # [n, d_vocab_out]
                c_new, g_new = _per_slot(logits_k[:, None], pairs.select(changed), mode, slot=i)
                d_new = d_base[changed] - c_base[changed, i] + c_new
                f_new = f_base[changed] - g_base[changed, i] + g_new
                out[(node.name, p)] = float((d_base.sum() - d_base[changed].sum() + d_new.sum()) / weight)
                flips[(node.name, p)] = float((f_base.sum() - f_base[changed].sum() + f_new.sum()) / weight)
                continue
            sub = pairs.select(changed)
            part = base.select(changed)
            patch_src = src[changed]

            def patch(x, _hook, i=i, node=node, patch_src=patch_src):
                x = x.clone()
                if node.head is None:
                    x[:, i] = patch_src[:, i]
                else:
                    x[:, i, node.head] = patch_src[:, i, node.head]
                return x

            logits = _logits(model, part, sub, [(node.hook, patch)])
            d_new, f_new = _per_example(logits, sub), _per_example_flips(logits, sub, mode)
            out[(node.name, p)] = float((d_base.sum() - d_base[changed].sum() + d_new.sum()) / weight)
            flips[(node.name, p)] = float((f_base.sum() - f_base[changed].sum() + f_new.sum()) / weight)
    return out


def _per_slot(logits: torch.Tensor, pairs: Pairs, mode: str, slot: int | None = None):
    """(logit difference, flipped) per example and loss slot [batch, n_loss] (or of one `slot`, [batch],
    from logits [batch, 1, d_vocab_out] at that slot)."""
    ca, xa, w = pairs.clean_answer, pairs.corrupt_answer, pairs.differs
    if slot is not None:
        ca, xa, w = ca[:, slot : slot + 1], xa[:, slot : slot + 1], w[:, slot : slot + 1]
    x = logits.double()
    d = (x.gather(-1, ca[..., None])[..., 0] - x.gather(-1, xa[..., None])[..., 0]) * w.double()
    target = ca if mode == "denoising" else xa
    f = ((logits.argmax(-1) == target) & w).double()
    return (d[:, 0], f[:, 0]) if slot is not None else (d, f)


class _Tail:
    """The last block after its attention, at one position: attn_out -> resid_mid -> MLP ->
    resid_post -> logits, from cached base activations with one node replaced."""

    def __init__(self, model: Transformer):
        self.model = model
        L = len(model.blocks) - 1
        self.block = model.blocks[L]
        self.z, self.mid = f"blocks.{L}.attn.hook_z", f"blocks.{L}.hook_resid_mid"
        self.mlp = None if model.cfg.attn_only else f"blocks.{L}.hook_mlp_out"
        self.post = f"blocks.{L}.hook_resid_post"
        self.hooks = {self.z, self.mid, self.post} | ({self.mlp} if self.mlp else set())

    def logits(self, node: Node, i: int, src: torch.Tensor, base: dict, rows: torch.Tensor) -> torch.Tensor:
        m, blk = self.model, self.block
        if node.hook == self.post:
            post = src[:, i]
        else:
            if node.hook == self.z:
                dz = src[:, i, node.head] - base[self.z][rows, i, node.head]  # [n, d_head]
                mid = base[self.mid][rows, i] + dz @ blk.attn.W_O[node.head]
            elif node.hook == self.mid:
                mid = src[:, i]
            else:
                mid = base[self.mid][rows, i]
            if self.mlp is None:
                post = mid
            elif node.hook == self.mlp:
                post = mid + src[:, i]
            else:
                post = mid + blk.mlp(blk.ln2(mid))
        out = m.ln_final(post) @ m.unembed.W_U
        return out + m.unembed.b_U if m.cfg.unembed_bias else out


def attribution_node_patching(
    model: Transformer, pairs: Pairs, mode: str, nodes: list[Node] | None = None
) -> dict:
    """{(node name, position): estimated m_patched}: m_base + (a_source - a_base) · ∂m/∂a, from one
    forward and backward of the base run (a zero tensor added at each hook holds ∂m/∂a)."""
    nodes = node_list(model) if nodes is None else nodes
    base, source = _sides(pairs, mode)
    hooks = sorted({n.hook for n in nodes})
    _, src_cache = model.run_with_cache(
        source.tokens, names_filter=hooks, positions=pairs.loss_positions, pos_ids=position_ids(model, source)
    )
    acts: dict[str, torch.Tensor] = {}
    leaves: dict[str, torch.Tensor] = {}

    def keep(x, hook):
        leaf = torch.zeros_like(x, requires_grad=True)
        acts[hook.name], leaves[hook.name] = x.detach(), leaf
        return x + leaf

    with torch.enable_grad(), frozen(model):
        m = logit_diff(_logits(model, base, pairs, [(h, keep) for h in hooks]), pairs)
        grads = torch.autograd.grad(m, [leaves[h] for h in hooks], allow_unused=True)
    m_base = float(m.detach())
    grad = {
        h: (g if g is not None else torch.zeros_like(leaves[h])) for h, g in zip(hooks, grads, strict=True)
    }
    out = {}
    T = base.tokens.shape[1]
    computed = list(pairs.loss_positions)
    for node in nodes:
        d = (src_cache[node.hook] - acts[node.hook]).double() * grad[node.hook].double()  # [batch, pos, ...]
        if node.head is not None:
            d = d[:, :, node.head]
        per_pos = d.flatten(2).sum(-1).sum(0) if d.dim() > 2 else d.sum(0)
        for p in range(T):
            i = _index(d, p, T, computed)
            out[(node.name, p)] = m_base + (float(per_pos[i]) if i is not None else 0.0)
    return out


def patch_nodes(model: Transformer, pairs: Pairs, modes: list[str], exact: bool = True) -> list[dict]:
    """Rows (mode, node, position, exact and attribution m_patched and effect) for every node."""
    m_clean, m_corrupt = baselines(model, pairs)
    rows = []
    for mode in modes:
        attr = attribution_node_patching(model, pairs, mode)
        flips: dict = {}
        ex = exact_node_patching(model, pairs, mode, flips=flips) if exact else {}
        for (name, p), a in attr.items():
            e = ex.get((name, p))
            rows.append(
                {
                    "mode": mode,
                    "node": name,
                    "position": p,
                    "exact": e,
                    "exact_effect": None if e is None else normalise(e, m_clean, m_corrupt, mode),
                    "flipped": flips.get((name, p)),
                    "attribution": a,
                    "attribution_effect": normalise(a, m_clean, m_corrupt, mode),
                    "m_clean": m_clean,
                    "m_corrupt": m_corrupt,
                }
            )
    return rows


def correlation(x: list[float], y: list[float]) -> float:
    """Pearson correlation (nan when either side is constant)."""
    a = torch.tensor(x, dtype=torch.float64)
    b = torch.tensor(y, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else float("nan")
