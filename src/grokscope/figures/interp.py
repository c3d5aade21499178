"""Figures of the interpretability toolkit (probes, lenses, PCA, embedding space): one function per
figure, returning a matplotlib Figure (no I/O).

Probe and lens figures are registered (made from `analysis/probes/LABEL.csv` and
`analysis/lens/lens.csv`); the PCA, circle and embedding-space figures are saved by their verbs
through `grokscope.figures.render`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from grokscope.figures.render import new_figure
from grokscope.figures.spec import FigureSpec, glob_keys, register_figure
from grokscope.interp.embedding_space import EMBSPACE_DATA
from grokscope.interp.pca import CIRCLES_DATA, PCA_DATA


def _grid(n: int, max_cols: int = 4, size: float = 3.0):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = new_figure(rows, cols, size=(size * cols, size * rows), layout=None)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def probe_by_position(rows: list[dict]):
    """One panel per label column: held-out score vs position for each hook, with baselines."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = _grid(len(labels))
    for ax, label in zip(axes, labels, strict=True):
        mine = [r for r in rows if r["label"] == label]
        for hook in dict.fromkeys(r["hook"] for r in mine):
            hr = sorted((r for r in mine if r["hook"] == hook), key=lambda r: r["position"])
            pos = [r["position"] for r in hr]
            line = ax.plot(pos, [r["score"] for r in hr], marker="o", ms=3, label=hook)[0]
            if "control" in hr[0]:
                ax.plot(pos, [r["control"] for r in hr], ls=":", color=line.get_color(), lw=1)
        first = sorted((r for r in mine if r["hook"] == mine[0]["hook"]), key=lambda r: r["position"])
        if "embed" in first[0]:
            ax.plot(
                [r["position"] for r in first],
                [r["embed"] for r in first],
                ls="--",
                color="gray",
                lw=1,
                label="hook_embed",
            )
        ax.axhline(first[0]["majority"], color="black", lw=0.8, alpha=0.5)
        for r in first:
            if r.get("aligned") in (True, "True"):
                ax.axvline(r["position"], color="green", lw=3, alpha=0.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("position")
        ax.set_ylabel(first[0]["metric"])
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    axes[0].legend(fontsize=6)
    fig.suptitle(
        "probe held-out score by position (dotted: control task; black: majority; green: the position "
        "whose answer needs the label)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def probe_by_step(rows: list[dict]):
    """One panel per label column: held-out score vs checkpoint at each hook's best final position."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = _grid(len(labels))
    last = max(r["step"] for r in rows)
    for ax, label in zip(axes, labels, strict=True):
        mine = [r for r in rows if r["label"] == label]
        for hook in dict.fromkeys(r["hook"] for r in mine):
            final = [r for r in mine if r["hook"] == hook and r["step"] == last]
            pos = max(final, key=lambda r: r["score"])["position"]
            hr = sorted(
                (r for r in mine if r["hook"] == hook and r["position"] == pos), key=lambda r: r["step"]
            )
            ax.plot(
                [r["step"] for r in hr], [r["score"] for r in hr], marker="o", ms=3, label=f"{hook} @{pos}"
            )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
        ax.legend(fontsize=6)
    fig.suptitle("probe held-out score across checkpoints", fontsize=9)
    fig.tight_layout()
    return fig


def lens_figure(rows: list[dict]):
    """Accuracy and loss of each lens at each hook (all loss positions together)."""
    rows = [r for r in rows if r["position"] == "all"]
    hooks = list(dict.fromkeys(r["hook"] for r in rows if r["lens"] != "model"))
    fig, axes = new_figure(1, 2, size=(10, 3.5), layout=None)
    ax1, ax2 = axes[0]
    x = np.arange(len(hooks))
    lenses = [lens for lens in ("logit", "tuned") if any(r["lens"] == lens for r in rows)]
    for i, lens in enumerate(lenses):
        by = {r["hook"]: r for r in rows if r["lens"] == lens}
        w = 0.8 / len(lenses)
        ax1.bar(x + i * w, [by[h]["acc"] for h in hooks], w, label=f"{lens} lens")
        ax2.bar(x + i * w, [by[h]["loss"] for h in hooks], w, label=f"{lens} lens")
    model = [r for r in rows if r["lens"] == "model"]
    if model:
        ax1.axhline(model[0]["acc"], color="black", lw=0.8, label="model output")
        ax2.axhline(model[0]["loss"], color="black", lw=0.8)
    for ax, name in ((ax1, "accuracy"), (ax2, "loss (nats)")):
        ax.set_xticks(
            x + 0.4 - 0.4 / len(lenses), [h.replace("blocks.", "") for h in hooks], rotation=30, fontsize=7
        )
        ax.set_ylabel(name)
    ax2.set_yscale("log")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _scatter(ax, xy, colors, labels=None, title=""):
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, cmap="hsv", s=14)
    if labels is not None and len(labels) <= 40:
        for (x, y), t in zip(xy, labels, strict=True):
            ax.annotate(t, (x, y), fontsize=5)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def pca_small_multiples(
    steps: list[int],
    projections: np.ndarray,  # [checkpoints, tokens, k]
    explained: np.ndarray,  # [checkpoints, k]
    token_labels: list[str],
    max_panels: int = 12,
):
    """PC1 vs PC2 of the token rows at up to `max_panels` checkpoints."""
    idx = np.unique(np.linspace(0, len(steps) - 1, min(max_panels, len(steps))).round().astype(int))
    fig, axes = _grid(len(idx), size=2.6)
    colors = np.arange(projections.shape[1])
    for ax, i in zip(axes, idx, strict=True):
        ev = explained[i]
        _scatter(
            ax,
            projections[i, :, :2],
            colors,
            token_labels,
            f"step {steps[i]}  PC1 {ev[0]:.0%} PC2 {ev[1]:.0%}",
        )
    fig.tight_layout()
    return fig


def explained_variance_figure(steps: list[int], explained: np.ndarray):  # explained: [checkpoints, k]
    fig, axes = new_figure(size=(5, 3), layout=None)
    ax = axes[0, 0]
    for j in range(explained.shape[1]):
        ax.plot(steps, explained[:, j], label=f"PC{j + 1}")
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of variance")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pca_animation(
    steps: list[int],
    projections: np.ndarray,  # [checkpoints, tokens, k]
    explained: np.ndarray,  # [checkpoints, k]
    token_labels: list[str],
):
    """(Figure, FuncAnimation) of PC1 vs PC2 over checkpoints (save with `render.save_gif`)."""
    from matplotlib.animation import FuncAnimation

    fig, axes = new_figure(size=(4, 4), layout=None)
    ax = axes[0, 0]
    lim = np.abs(projections[:, :, :2]).max() * 1.1

    def draw(i):
        ax.clear()
        _scatter(
            ax,
            projections[i, :, :2],
            np.arange(projections.shape[1]),
            token_labels,
            f"step {steps[i]}  PC1 {explained[i][0]:.0%} PC2 {explained[i][1]:.0%}",
        )
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)

    return fig, FuncAnimation(fig, draw, frames=len(steps), interval=250)


def circles_figure(projections: np.ndarray, freqs: list[int], title: str = ""):  # [freqs, p, 2]
    """One panel per key frequency: the numbers on that frequency's cos/sin plane, coloured by value."""
    fig, axes = _grid(max(1, len(freqs)), size=2.6)
    p = projections.shape[1]
    for ax, f, xy in zip(axes, freqs, projections, strict=False):
        _scatter(ax, xy, np.arange(p), [str(i) for i in range(p)] if p <= 40 else None, f"frequency {f}")
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def heatmap_grid(
    tables: list[np.ndarray],  # each [rows, cols], e.g. [d_vocab, d_vocab] per head
    titles: list[str],
    xlabel: str,
    ylabel: str,
    xticks: list[str] | None = None,
    yticks: list[str] | None = None,
    suptitle: str = "",
):
    """Small multiples of heatmaps (diverging colour scale centred at 0)."""
    fig, axes = _grid(len(tables), size=3.2)
    for ax, t, title in zip(axes, tables, titles, strict=True):
        m = np.abs(t).max() or 1.0
        im = ax.imshow(t, cmap="RdBu_r", vmin=-m, vmax=m, aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        for ticks, setter, n in ((xticks, ax.set_xticks, t.shape[1]), (yticks, ax.set_yticks, t.shape[0])):
            if ticks is not None and n <= 32:
                setter(range(n), ticks[:n], fontsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- from the run folder
def _rows(path: Path) -> list[dict]:
    from grokscope.interp.io import read_csv

    return read_csv(path)


def last_step_rows(rows: list[dict]) -> list[dict]:
    """The rows of the latest checkpoint in a table (all rows where it has no step column)."""
    steps = [r["step"] for r in rows if r.get("step") is not None]
    return [r for r in rows if r.get("step") == max(steps)] if steps else rows


def _probe_by_position(folder: Path, key: str):
    rows = last_step_rows(_rows(folder / f"analysis/probes/{key}.csv"))
    return probe_by_position(rows) if rows else None


def _probe_by_step(folder: Path, key: str):
    rows = _rows(folder / f"analysis/probes/{key}.csv")
    return probe_by_step(rows) if len({r.get("step") for r in rows}) > 1 else None


def _lens(folder: Path, _key):
    rows = last_step_rows(_rows(folder / "analysis/lens/lens.csv"))
    return lens_figure(rows) if rows else None


_probe_keys = glob_keys("analysis/probes/*.csv", exclude_suffix="_geometry")
register_figure(
    FigureSpec(
        "probe_by_position",
        "Probe score by position",
        "Held-out score of a linear probe for each label column at each position and hook, at the last "
        "probed checkpoint; dotted: the control task, black: the majority baseline, green: the position "
        "whose answer needs the label.",
        "interp",
        ("analysis/probes/{key}.csv",),
        "analysis/probes/{key}_by_position.png",
        _probe_by_position,
        keys=_probe_keys,
    )
)
register_figure(
    FigureSpec(
        "probe_by_step",
        "Probe score across checkpoints",
        "Held-out probe score over training, at each hook's best position on the last checkpoint.",
        "interp",
        ("analysis/probes/{key}.csv",),
        "analysis/probes/{key}_by_step.png",
        _probe_by_step,
        keys=_probe_keys,
    )
)
register_figure(
    FigureSpec(
        "lens",
        "Logit lens and tuned lens",
        "Accuracy and loss of the true answer when each residual hook is decoded directly (logit lens) "
        "or through a fitted affine map (tuned lens), against the model's own output.",
        "interp",
        ("analysis/lens/lens.csv",),
        "analysis/lens/lens.png",
        _lens,
    )
)


# ----------------------------------------------------------------------------- PCA, circles, embedding space
# The verbs write these tensors into analysis/ (safetensors, names as JSON in the metadata); the
# figures below are made from them.


def _tensors(path: Path):
    from grokscope.files import read_tensors_metadata

    return read_tensors_metadata(path)


def pca_data(folder: Path, key: str) -> tuple[list[int], np.ndarray, np.ndarray, list[str]]:
    """(steps, projections [S, n, k], explained [S, k], token labels) of one PCA the `pca` verb wrote."""
    import json

    t, meta = _tensors(Path(folder) / PCA_DATA.format(key=key))
    return t["steps"].tolist(), t["projections"].numpy(), t["explained"].numpy(), json.loads(meta["labels"])


def _pca(folder: Path, key: str):
    steps, proj, explained, labels = pca_data(folder, key)
    return pca_small_multiples(steps, proj, explained, labels)


def _pca_explained(folder: Path, key: str):
    steps, _, explained, _ = pca_data(folder, key)
    return explained_variance_figure(steps, explained) if len(steps) > 1 else None


def pca_gif(folder: Path, key: str):
    """The animation of one PCA over checkpoints (save with `render.save_gif`)."""
    steps, proj, explained, labels = pca_data(folder, key)
    return pca_animation(steps, proj, explained, labels)[1]


def _circles(folder: Path, _key):
    t, meta = _tensors(Path(folder) / CIRCLES_DATA)
    return circles_figure(
        t["projections"].numpy(),
        t["freqs"].tolist(),
        f"step {meta.get('step')}: numbers on key-frequency planes",
    )


def _embspace(kind: str):
    def make(folder: Path, key: str):
        import json

        t, meta = _tensors(Path(folder) / EMBSPACE_DATA.format(key=key))
        names, out_names, step = json.loads(meta["names"]), json.loads(meta["out_names"]), meta.get("step")
        if kind == "qk":
            H = t["qk"].shape[0]
            return heatmap_grid(
                list(t["qk"].numpy()), [f"{key}H{h} QK" for h in range(H)], "key token", "query token",
                names, names, f"step {step}: E W_QK Eᵀ per head",
            )  # fmt: skip
        if kind == "ov":
            H = t["ov"].shape[0]
            return heatmap_grid(
                list(t["ov"].numpy()), [f"{key}H{h} OV" for h in range(H)], "output token",
                "attended token", out_names, names, f"step {step}: E W_OV W_U per head",
            )  # fmt: skip
        if "neuron_in" not in t:
            return None  # attention-only model
        n = t["neuron_in"].shape[0]
        return heatmap_grid(
            [t["neuron_in"].numpy(), t["neuron_out"].numpy()],
            [f"{key} input profile E W_in", f"{key} output profile W_out W_U"],
            "token", f"neuron (top {n} by |W_out|)", None, None, f"step {step}: MLP neurons in token space",
        )  # fmt: skip

    return make


_pca_keys = glob_keys("analysis/pca/*_pca.safetensors")
_layer_keys = glob_keys("analysis/embspace/*.safetensors")
for _name, _title, _explanation, _inputs, _output, _make, _keys in [
    (
        "pca",
        "PCA across checkpoints",
        "PC1 against PC2 of the token rows at up to 12 checkpoints, with each one's explained variance.",
        (PCA_DATA,),
        "analysis/pca/{key}_pca.png",
        _pca,
        _pca_keys,
    ),
    (
        "pca_explained",
        "Explained variance over training",
        "Fraction of the variance each principal component explains, at every analysed checkpoint.",
        (PCA_DATA,),
        "analysis/pca/{key}_explained.png",
        _pca_explained,
        _pca_keys,
    ),
    (
        "circles",
        "Key-frequency circles",
        "Each panel projects the number embeddings on the plane of one key frequency's cos/sin pair.",
        (CIRCLES_DATA,),
        "analysis/pca/circles.png",
        _circles,
        None,
    ),
    (
        "embspace_qk",
        "Query-key token table",
        "E·W_QK·Eᵀ per head (direct path; LayerNorm and positions ignored).",
        (EMBSPACE_DATA,),
        "analysis/embspace/{key}_qk.png",
        _embspace("qk"),
        _layer_keys,
    ),
    (
        "embspace_ov",
        "Output-value token table",
        "E·W_OV·W_U per head: which output token attending to a token promotes.",
        (EMBSPACE_DATA,),
        "analysis/embspace/{key}_ov.png",
        _embspace("ov"),
        _layer_keys,
    ),
    (
        "embspace_neurons",
        "MLP neurons in token space",
        "Input (E·W_in) and output (W_out·W_U) token profiles of the neurons with the largest output weights.",
        (EMBSPACE_DATA,),
        "analysis/embspace/{key}_neurons.png",
        _embspace("neurons"),
        _layer_keys,
    ),
]:
    register_figure(FigureSpec(_name, _title, _explanation, "interp", _inputs, _output, _make, keys=_keys))
