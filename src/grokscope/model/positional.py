"""Positional encodings, one small piece each behind one interface.

An encoding may add a vector to the residual stream per position (`residual`) or per token from
ids the task supplies (`residual_ids`, e.g. Abacus digit indices), rotate queries and keys
(`rotate`), or add a bias to attention scores (`score_bias`); each returns None when it does not.
Each also declares what it does as flags (`absolute_only`, `residual_only`, `needs_ids`,
`attends_ids`), from which the model picks its fast paths (`Transformer.fast_path_ok`). Each kind
is registered in `grokscope.registry.POSITIONAL` and built by its class's `from_config`.

`model.pos` picks one: `learned` (a trained vector per position), `none` (NoPE), `sinusoidal`
(Vaswani et al. 2017), `rope` (Su et al. 2021), `alibi` (Press et al. 2022), `abacus` (McLeish et
al. 2024), `abacus_rope` / `abacus_alibi` (RoPE / ALiBi over Abacus digit indices instead of token
positions: a digit's attention to another depends on their indices only through the difference;
grokscope's own variants), or `abacus+X` for Abacus on top of X. Beyond the positions seen in training:
`learned` raises a GrokscopeError past `model.n_ctx` rows (rows inside n_ctx that training never
reached stay at their random init); `sinusoidal`, `rope`, `alibi`, `abacus_rope` and `abacus_alibi` are formulas defined
at every position, so they extrapolate; `abacus` raises past its table of `n_ctx + abacus_max_offset + 1`
digit indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from grokscope.errors import GrokscopeError
from grokscope.registry import POSITIONAL


class PositionalEncoding(nn.Module):
    """The interface. Each encoding declares the flags below explicitly; the model's fast paths are
    chosen from them alone (`Transformer.fast_path_ok`), so a new encoding that leaves them at
    their defaults (False) gets the general forward pass, which is always right."""

    #: True when the residual input at a position depends only on (token, position index) -- no
    #: per-token ids in the residual -- which lets the model precompute layer 0's projections per
    #: (token, position). Rotations and score biases are still applied afterwards.
    absolute_only: bool = False
    #: True when positions enter only the residual stream (`residual`): no rotation of queries or
    #: keys, no score bias, no per-token ids. Attention then depends on the residual vectors alone,
    #: which the one-layer [a, b, =] grid path relies on. Implies `absolute_only`.
    residual_only: bool = False
    #: True when the encoding reads per-token ids from the task (`batch.meta["digit_index"]`).
    needs_ids: bool = False
    #: True when `rotate` or `score_bias` read those per-token ids (the model passes them to attention).
    attends_ids: bool = False
    #: Training shifts digit ids by one random offset in [0, max_offset] per batch (0 = never).
    max_offset: int = 0
    #: Instead, training draws each example's ids as a sorted random subset (model.abacus_indices).
    random_indices: bool = False

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        """The encoding for a ModelConfig with n_ctx resolved (parameters drawn from `generator`)."""
        return cls()

    def residual(self, n_pos: int) -> torch.Tensor | None:
        """[pos, d_model] added at positions 0..n_pos-1, or None."""
        return None

    def residual_ids(self, pos_ids: torch.Tensor) -> torch.Tensor | None:
        """[batch, pos, d_model] added per token from task-supplied ids `pos_ids` [batch, pos], or None."""
        return None

    def train_ids(self, pos_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ids used at a training step: digit ids (> 0) shifted by one random offset in
        [0, max_offset] for the whole batch, so that indices past the trained lengths get trained
        (or, with `random_indices`, a sorted random subset per example)."""
        if self.max_offset <= 0:
            return pos_ids
        if self.random_indices:
            return random_subset_ids(pos_ids, self.max_offset, generator)
        offset = torch.randint(0, self.max_offset + 1, (), generator=generator).item()
        return torch.where(pos_ids > 0, pos_ids + offset, pos_ids)

    def rotate(self, x: torch.Tensor, pos: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """x [batch, pos, head_index, d_head] at positions `pos` [pos] (per-token ids [batch, pos]
        when `attends_ids`), rotated (RoPE) or unchanged."""
        return x

    def score_bias(
        self, q_pos: torch.Tensor, k_pos: torch.Tensor, q_ids: torch.Tensor | None = None, k_ids=None
    ) -> torch.Tensor | None:
        """[head_index, query_pos, key_pos] (or [batch, head_index, query_pos, key_pos], or
        broadcastable) added to attention scores, or None. q_ids [batch, query_pos] / k_ids
        [batch, key_pos]: the digit ids of queries and keys, when `attends_ids`."""
        return None


def random_subset_ids(pos_ids: torch.Tensor, max_offset: int, generator: torch.Generator) -> torch.Tensor:
    """Randomized positions (Ruoss et al. 2023) over digit indices: per example, index k becomes
    the k-th smallest of K random distinct values in 1..K + max_offset (K = the batch's largest
    index), so digits of one column still share an index and order is kept, while one example
    meets indices far apart. Non-digit tokens keep 0."""
    B, K = pos_ids.shape[0], int(pos_ids.max())
    if K <= 0:
        return pos_ids
    picks = torch.rand(B, K + max_offset, generator=generator).argsort(dim=1)[:, :K] + 1
    table = torch.cat([torch.zeros(B, 1, dtype=picks.dtype), picks.sort(dim=1).values], dim=1)
    return torch.gather(table, 1, pos_ids)


class NoPositionalEncoding(PositionalEncoding):
    """NoPE: causal attention alone carries order (Kazemnejad et al. 2023). No parameters."""

    absolute_only = True
    residual_only = True


class LearnedPositionalEncoding(PositionalEncoding):
    """A learned vector per position, `pos_embed.W_pos [n_ctx, d_model]`."""

    absolute_only = True
    residual_only = True

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        return cls(cfg.n_ctx, cfg.d_model, generator)

    def __init__(self, n_ctx: int, d_model: int, generator: torch.Generator):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model, generator=generator) / math.sqrt(d_model))

    def residual(self, n_pos: int) -> torch.Tensor:
        n_ctx = self.W_pos.shape[0]
        if n_pos > n_ctx:
            raise GrokscopeError(
                f"a learned positional encoding knows {n_ctx} positions, but the input has {n_pos}; "
                "learned positions cannot extrapolate (train with a larger model.n_ctx or another "
                "model.pos)"
            )
        return self.W_pos[:n_pos]


def sinusoidal_table(pos: torch.Tensor, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(p / base^(2i/d)); [pos, d_model]."""
    i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos.to(torch.float64)[:, None] / base ** (i / d_model)
    table = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(len(pos), -1)
    return table[:, :d_model].float()


class SinusoidalPositionalEncoding(PositionalEncoding):
    """Fixed sin/cos vectors (Vaswani et al. 2017): no parameters, defined at every position."""

    absolute_only = True
    residual_only = True

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        return cls(cfg.d_model)

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", torch.empty(0, d_model), persistent=False)

    def residual(self, n_pos: int) -> torch.Tensor:
        if self.table.shape[0] < n_pos:
            self.table = sinusoidal_table(torch.arange(n_pos), self.d_model).to(self.table.device)
        return self.table[:n_pos]


class RotaryPositionalEncoding(PositionalEncoding):
    """RoPE (Su et al. 2021): rotate each (2i, 2i+1) pair of q and k by pos * base^(-2i/d_head),
    so that q.k depends on positions only through their difference. Hooks `hook_q`/`hook_k` see
    the unrotated vectors."""

    absolute_only = True  # rotates q and k, so not residual_only

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        return cls(cfg.d_head)

    def __init__(self, d_head: int, base: float = 10000.0):
        super().__init__()
        if d_head % 2:
            raise GrokscopeError(
                f"bad config: RoPE (model.pos = rope or abacus_rope) needs an even model.d_head, got {d_head}"
            )
        inv_freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotate(self, x: torch.Tensor, pos: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        return rotate_pairs(x, pos, self.inv_freq)


def rotate_pairs(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """RoPE: x [batch, pos, head_index, d_head] rotated by positions `pos`, [pos] (shared) or
    [batch, pos] (per example)."""
    angle = pos.to(torch.float64)[..., None] * inv_freq  # [(batch,) pos, d_head/2]
    cos = angle.cos().to(x.dtype)[..., None, :]  # [(batch,) pos, 1, d_head/2] broadcasts over heads
    sin = angle.sin().to(x.dtype)[..., None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class AbacusRotaryEncoding(RotaryPositionalEncoding):
    """RoPE over Abacus digit indices instead of token positions: a query's score for a key depends
    on their digit indices only through the difference, so "the digit one column up" is the same
    rotation at every length. Non-digit tokens (index 0) share one position. Training shifts digit
    indices by a random offset like Abacus does, which leaves digit-digit scores unchanged and
    varies only the distance to non-digit tokens. No parameters."""

    absolute_only = True  # its ids enter attention only, not the residual
    needs_ids = True
    attends_ids = True

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        return cls(cfg.d_head, getattr(cfg, "abacus_max_offset", 20))

    def __init__(self, d_head: int, max_offset: int, base: float = 10000.0):
        super().__init__(d_head, base)
        self.max_offset = max_offset

    def rotate(self, x: torch.Tensor, pos: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is None:
            raise GrokscopeError("model.pos = abacus_rope needs per-token digit ids in attention")
        return rotate_pairs(x, ids, self.inv_freq)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Press et al.'s head slopes: 2^(-8/n), 2^(-16/n), ... for a power of two n; otherwise the
    power of two below n's slopes, then every other slope of the power of two above."""

    def power_of_two(n: int) -> list[float]:
        return [2 ** (-8 * (h + 1) / n) for h in range(n)]

    if n_heads & (n_heads - 1) == 0:
        return torch.tensor(power_of_two(n_heads))
    low = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * low)[0::2][: n_heads - low]
    return torch.tensor(power_of_two(low) + extra)


class ALiBiPositionalEncoding(PositionalEncoding):
    """ALiBi (Press et al. 2022): score bias -slope_h * (q_pos - k_pos); no parameters."""

    absolute_only = True  # biases scores, so not residual_only

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        return cls(cfg.n_heads)

    def __init__(self, n_heads: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def score_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, q_ids=None, k_ids=None) -> torch.Tensor:
        distance = (q_pos[:, None] - k_pos[None, :]).float()  # [query_pos, key_pos]; > 0 for past keys
        return -self.slopes[:, None, None] * distance


class AbacusALiBiEncoding(PositionalEncoding):
    """ALiBi over Abacus digit indices: score bias -slope_h * |i_q - i_k| for digit indices i, so
    that digits of far-away columns are pushed down by more the farther they are, at any length
    (a digit's own column and its neighbours keep the same bias however long the numbers are).
    Non-digit tokens have index 0. Training shifts digit indices like Abacus (digit-digit biases
    unchanged). No parameters; grokscope's own variant."""

    absolute_only = True  # its ids enter attention only, not the residual

    needs_ids = True
    attends_ids = True

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        return cls(cfg.n_heads, getattr(cfg, "abacus_max_offset", 20))

    def __init__(self, n_heads: int, max_offset: int):
        super().__init__()
        self.max_offset = max_offset
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def score_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, q_ids=None, k_ids=None) -> torch.Tensor:
        if q_ids is None or k_ids is None:
            raise GrokscopeError("model.pos = abacus_alibi needs per-token digit ids in attention")
        distance = (q_ids[:, :, None] - k_ids[:, None, :]).abs().float()  # [batch, query_pos, key_pos]
        return -self.slopes[None, :, None, None] * distance[:, None]


class AbacusPositionalEncoding(PositionalEncoding):
    """Abacus (McLeish et al. 2024): `pos_embed.W_abacus [n_index, d_model]` indexed by each
    token's digit index within its own number, as the task supplies it (0 for non-digit tokens).
    In training every digit index is shifted by one random offset in [0, max_offset] per batch, so
    that rows past the trained number length get trained too."""

    absolute_only = False  # W_abacus rows are read per token, from ids
    needs_ids = True

    @classmethod
    def from_config(cls, cfg, generator: torch.Generator) -> PositionalEncoding:
        max_offset = getattr(cfg, "abacus_max_offset", 20)
        return cls(cfg.n_ctx + max_offset + 1, cfg.d_model, max_offset, generator)

    def __init__(self, n_index: int, d_model: int, max_offset: int, generator: torch.Generator):
        super().__init__()
        self.max_offset = max_offset
        self.W_abacus = nn.Parameter(torch.randn(n_index, d_model, generator=generator) / math.sqrt(d_model))

    def residual_ids(self, pos_ids: torch.Tensor) -> torch.Tensor:
        n_index = self.W_abacus.shape[0]
        if pos_ids.numel() and (int(pos_ids.max()) >= n_index or int(pos_ids.min()) < 0):
            raise GrokscopeError(
                f"Abacus knows digit indices 0..{n_index - 1} (model.n_ctx + model.abacus_max_offset), "
                f"but the input has {int(pos_ids.min())}..{int(pos_ids.max())}; numbers this long need "
                "a model trained with a larger model.n_ctx or model.abacus_max_offset"
            )
        return self.W_abacus[pos_ids]


class CombinedPositionalEncoding(PositionalEncoding):
    """Several encodings at once (`abacus+rope`): residuals and score biases add, rotations chain,
    and all parts read the same digit ids (one training offset, drawn once).
    Each part is a child named by its kind (`pos_embed.abacus.W_abacus`, `pos_embed.learned.W_pos`)."""

    def __init__(self, parts: dict[str, PositionalEncoding]):
        super().__init__()
        self.kinds = list(parts)
        for kind, part in parts.items():
            self.add_module(kind, part)
        self.absolute_only = all(p.absolute_only for p in self._parts())
        self.residual_only = all(p.residual_only for p in self._parts())
        self.needs_ids = any(p.needs_ids for p in self._parts())
        self.attends_ids = any(p.attends_ids for p in self._parts())
        self.max_offset = max(p.max_offset for p in self._parts())

    def _parts(self) -> list[PositionalEncoding]:
        return [getattr(self, k) for k in self.kinds]

    def residual(self, n_pos: int) -> torch.Tensor | None:
        return _sum(p.residual(n_pos) for p in self._parts())

    def residual_ids(self, pos_ids: torch.Tensor) -> torch.Tensor | None:
        return _sum(p.residual_ids(pos_ids) for p in self._parts())

    def rotate(self, x: torch.Tensor, pos: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        for p in self._parts():
            x = p.rotate(x, pos, ids)
        return x

    def score_bias(
        self, q_pos: torch.Tensor, k_pos: torch.Tensor, q_ids=None, k_ids=None
    ) -> torch.Tensor | None:
        return _sum(p.score_bias(q_pos, k_pos, q_ids, k_ids) for p in self._parts())


def _sum(values) -> torch.Tensor | None:
    total = None
    for v in values:
        if v is not None:
            total = v if total is None else total + v
    return total


def build_positional(cfg, generator: torch.Generator) -> PositionalEncoding:
    """The encoding `cfg.pos` names (a ModelConfig with n_ctx resolved)."""
    pe = POSITIONAL.get(cfg.pos)(cfg, generator)
    pe.random_indices = getattr(cfg, "abacus_indices", "offset") == "random"  # read by train_ids
    return pe


def offset_generator(seed: int, step: int) -> torch.Generator:
    """The stream a training step's Abacus offset is drawn from: a pure function of (seed, step),
    so resume stays bit-exact, and apart from the stream the task samples batches from."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step + 0xABAC05) % (2**63))


def position_ids(model: nn.Module, batch, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The per-token ids `model(tokens, pos_ids=...)` needs for `batch`, or None if its encoding
    reads none. Pass a generator at training steps only: Abacus then adds its random offset."""
    pe = model.pos_embed
    if not pe.needs_ids:
        return None
    ids = batch.meta.get("digit_index")
    if ids is None:
        raise GrokscopeError(
            f"model.pos = {model.cfg.pos!r} needs each token's digit index, which this task does not "
            "supply (batch.meta['digit_index']); use it with task.kind = 'addition'"
        )
    return ids if generator is None else pe.train_ids(ids, generator)


# Every value of `model.pos`, in the order users see them listed: each encoding alone, and Abacus
# digit indices on top of another one (`abacus+X`).
_PARTS: dict[str, type[PositionalEncoding]] = {
    "learned": LearnedPositionalEncoding,
    "none": NoPositionalEncoding,
    "sinusoidal": SinusoidalPositionalEncoding,
    "rope": RotaryPositionalEncoding,
    "alibi": ALiBiPositionalEncoding,
    "abacus": AbacusPositionalEncoding,
    "abacus_rope": AbacusRotaryEncoding,
    "abacus_alibi": AbacusALiBiEncoding,
}


def _combined(*kinds: str) -> Callable[[Any, torch.Generator], PositionalEncoding]:
    return lambda cfg, g: CombinedPositionalEncoding({k: _PARTS[k].from_config(cfg, g) for k in kinds})


for _kind, _cls in _PARTS.items():
    POSITIONAL.register(_kind, _cls.from_config)
for _kind in _PARTS:
    if _kind not in ("abacus", "none"):
        POSITIONAL.register(f"abacus+{_kind}", _combined("abacus", _kind))
