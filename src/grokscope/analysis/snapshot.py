"""What the one-checkpoint figures show: attention, neurons and logits of a model over the p x p grid.

`analyze_run` writes the final checkpoint's snapshot to `analysis/snapshot.safetensors`
(`write_snapshot`), so figures are made from that file without loading the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from grokscope.analysis.fourier import fourier_2d
from grokscope.analysis.modular_view import check_task, modular_outputs

SNAPSHOT_FILE = "snapshot.safetensors"
MAX_EXAMPLE_NEURONS = 4


@dataclass
class Snapshot:
    step: int | None
    p: int
    attn_to_a: torch.Tensor  # [head_index, p, p]: attention from '=' to the `a` token, over (a, b)
    neurons: torch.Tensor  # [p², d_mlp] post-activations at '=' (a file keeps only example neurons)
    logit_fourier_norms: torch.Tensor  # [p, p]: ‖2D Fourier coefficient (a, b)‖ over the answer axis
    neuron_ids: list[int] | None = None  # which neurons the columns of `neurons` are (None: all)
    neuron_freqs: list[int] | None = None  # each example neuron's key frequency, where known


@torch.no_grad()
def attention_to_a(model, task) -> torch.Tensor:
    """[head_index, p, p]: the last block's attention weight from '=' (final position) to position 0 (a)."""
    name = f"blocks.{len(model.blocks) - 1}.attn.hook_pattern"
    _, cache = model.run_with_cache(task.tokens, names_filter=name, positions=task.loss_positions[-1:])
    pattern = cache[name][:, :, -1, 0]  # [p², H]
    return pattern.T.reshape(-1, task.p, task.p)


@torch.no_grad()
def logit_fourier_norms(logits: torch.Tensor, p: int) -> torch.Tensor:
    """[p, p]: norm over answers c of the 2D Fourier transform (over a, b) of the logits."""
    x = logits.double().reshape(p, p, -1).permute(2, 0, 1)  # [c, a, b]
    x = x - x.mean(dim=0, keepdim=True)  # a shift shared by all answers changes no probability
    return fourier_2d(x, p).norm(dim=0)


def snapshot(model, task, step: int | None = None) -> Snapshot:
    check_task(task)
    out = modular_outputs(model, task)
    return Snapshot(
        step, task.p, attention_to_a(model, task), out.neurons, logit_fourier_norms(out.logits, task.p)
    )


def example_neurons(key) -> tuple[list[int], list[int] | None]:
    """The most-explained neuron of each key frequency (up to 4), with its frequency; without key
    frequencies, the first neurons (and no frequencies)."""
    ids, freqs = [], []
    for k in key.key_freqs[:MAX_EXAMPLE_NEURONS]:
        cands = [
            (f, i) for i, (g, f) in enumerate(zip(key.neuron_freq, key.neuron_frac, strict=True)) if g == k
        ]
        if cands:
            ids.append(max(cands)[1])
            freqs.append(k)
    if not ids:
        return list(range(min(MAX_EXAMPLE_NEURONS, len(key.neuron_freq)))), None
    return ids, freqs


def snapshot_bytes(snap: Snapshot, key) -> bytes:
    """The snapshot as safetensors bytes, keeping only the example neurons' activations."""
    from safetensors.torch import save

    ids, freqs = example_neurons(key)
    tensors = {
        "attn_to_a": snap.attn_to_a.float().contiguous(),
        "example_neurons": snap.neurons[:, ids].float().contiguous(),  # [p², n_examples]
        "example_neuron_ids": torch.tensor(ids, dtype=torch.int64),
        "example_neuron_freqs": torch.tensor(freqs or [], dtype=torch.int64),
        "logit_fourier_norms": snap.logit_fourier_norms.double().contiguous(),
    }
    return save(tensors, metadata={"step": str(snap.step), "p": str(snap.p)})


def read_snapshot(path: str | Path) -> Snapshot:
    """The snapshot `analyze_run` wrote (`neurons` holds the example neurons only)."""
    from grokscope.files import read_tensors_metadata

    t, meta = read_tensors_metadata(Path(path))
    step = meta.get("step")
    freqs = t["example_neuron_freqs"].tolist()
    return Snapshot(
        int(step) if step not in (None, "None") else None,
        int(meta.get("p", t["logit_fourier_norms"].shape[0])),
        t["attn_to_a"],
        t["example_neurons"],
        t["logit_fourier_norms"],
        neuron_ids=t["example_neuron_ids"].tolist(),
        neuron_freqs=freqs or None,
    )
