"""Named subspaces and unit sets to ablate: the key-frequency directions of W_E and the neurons of
each key frequency in a modular run, random directions, or directions from a file.

The direction of frequency k in the embedding is W_E[:p]^T cos(2πk·a/p) (and the same with sin):
the part of the residual stream at an operand position that varies with a like cos(2πk·a/p). The
key frequencies and each neuron's frequency come from `analysis.key_frequencies` (the run's
`analysis/key_frequencies.json` when `grokscope analyze` wrote one, else computed from the model).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from grokscope.errors import GrokscopeError
from grokscope.files import read_tensors


def fourier_directions(
    W_E: torch.Tensor, p: int, freqs: list[int]
) -> torch.Tensor:  # [2 len(freqs), d_model]
    """cos and sin directions of each frequency in `freqs` through the first p rows of W_E."""
    a = torch.arange(p, dtype=torch.float64)
    rows = []
    for k in freqs:
        if not 1 <= k <= p // 2:
            raise GrokscopeError(f"frequency {k} is outside 1..{p // 2} for p = {p}")
        rows += [torch.cos(2 * torch.pi * k * a / p), torch.sin(2 * torch.pi * k * a / p)]
    basis = torch.stack(rows) if rows else torch.zeros(0, p, dtype=torch.float64)
    return (basis @ W_E[:p].double().cpu()).float()


_KEY_CACHE: dict[str, tuple[list[int], list[int], list[float]]] = {}


def key_frequency_info(run, model=None) -> tuple[list[int], list[int], list[float]]:
    """(key frequencies, each neuron's frequency, its fraction explained) of a modular run: the
    run's own, from its last checkpoint, whichever checkpoint is ablated (so one set of units is
    followed across training)."""
    path = run.analysis_dir / "key_frequencies.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return list(data["key_freqs"]), list(data["neuron_freq"]), list(data["neuron_frac"])
    if str(run.path) not in _KEY_CACHE:
        from grokscope.analysis.key_frequencies import model_key_frequencies

        key = model_key_frequencies(run.model(run.readable_steps()[-1]), run.task)
        _KEY_CACHE[str(run.path)] = (list(key.key_freqs), list(key.neuron_freq), list(key.neuron_frac))
    return _KEY_CACHE[str(run.path)]


def _modular_only(run, what: str) -> None:
    if getattr(run.task.config, "kind", "") != "modular":
        raise GrokscopeError(f"{what} exist for modular runs only; give directions as random:K or file:PATH")


def parse_directions(spec: str, run, model, width: int, seed: int = 0) -> torch.Tensor | None:
    """`--directions`: '' (none: ablate the whole activation), 'key_freqs' (W_E's key-frequency
    directions), 'freqs:1,5' (those frequencies), 'random:K' (K random directions), or
    'file:PATH' (a safetensors file with a `directions` tensor [k, width])."""
    if not spec:
        return None
    if spec == "key_freqs" or spec.startswith("freqs:"):
        _modular_only(run, "key-frequency directions")
        if spec == "key_freqs":
            freqs = key_frequency_info(run)[0]
        else:
            freqs = _ints(spec.split(":", 1)[1], "--directions freqs:K,...")
        d = fourier_directions(model.embed.W_E.detach(), run.task.p, freqs)
        if d.shape[1] != width:
            raise GrokscopeError(
                f"W_E directions have width {d.shape[1]}; ablate them at hook_embed or a residual hook"
            )
        return d
    if spec.startswith("random:"):
        k = _ints(spec.split(":", 1)[1], "--directions random:K")[0]
        return torch.randn(k, width, generator=torch.Generator().manual_seed(seed))
    if spec.startswith("file:"):
        path = Path(spec.split(":", 1)[1])
        if not path.is_file():
            raise GrokscopeError(f"--directions {spec}: no such file")
        tensors = read_tensors(path)
        if "directions" not in tensors:
            raise GrokscopeError(f"{path} has no tensor named 'directions' (it has {', '.join(tensors)})")
        return tensors["directions"].float()
    raise GrokscopeError(f"bad --directions {spec!r}: use key_freqs, freqs:K,..., random:K or file:PATH")


def parse_units(spec: str, run, model, what: str = "--neurons") -> list[int] | None:
    """`--neurons` / `--heads`: '' (all), a comma list, or (neurons of a modular run) 'key' (every
    neuron whose frequency is a key frequency) or 'freq:K' (the neurons of frequency K)."""
    if not spec:
        return None
    if spec == "key" or spec.startswith("freq:"):
        _modular_only(run, "neurons of key frequencies")
        keys, freq, frac = key_frequency_info(run)
        wanted = keys if spec == "key" else _ints(spec.split(":", 1)[1], f"{what} freq:K")
        from grokscope.analysis.options import THRESHOLD

        return [i for i, (f, x) in enumerate(zip(freq, frac, strict=True)) if f in wanted and x >= THRESHOLD]
    return _ints(spec, what)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GrokscopeError(f"{what}: expected comma-separated integers, got {text!r}") from None
