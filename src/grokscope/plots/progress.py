"""The figures of Nanda et al. (2023) for one run: one function each, each returns a Figure.

Inputs are plain arrays/tables (from `analysis.load_analysis` and `analysis.snapshot`), so the same
functions serve the report, the notebook and a user's own script.
"""

from __future__ import annotations

import numpy as np

from grokscope.plots.common import new_figure, shade_phases


def _loss_axes(ax, progress, phases, train_label="train loss", test_label="test loss") -> None:
    ax.plot(progress["step"], progress["train_loss"], color="C0", label=train_label, lw=1.2)
    ax.plot(progress["step"], progress["test_loss"], color="C1", label=test_label, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    shade_phases(ax, phases)


def loss_and_accuracy(progress: dict, phases=None):
    """Train/test loss (log scale) and accuracy over training, phases shaded."""
    fig, axes = new_figure(1, 2, size=(10, 3.8))
    ax = axes[0, 0]
    _loss_axes(ax, progress, phases)
    ax.set_ylabel("cross-entropy loss")
    ax.legend(loc="lower left", fontsize=8)
    ax = axes[0, 1]
    ax.plot(progress["step"], progress["train_acc"], color="C0", label="train accuracy")
    ax.plot(progress["step"], progress["test_acc"], color="C1", label="test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    shade_phases(ax, phases)
    ax.legend(loc="center right", fontsize=8)
    return fig


def fourier_norms(norms, names: list[str], title: str, key_freqs: list[int] = ()):
    """Bar chart of the norm of each Fourier component; cos and sin in two colours, key freqs marked."""
    norms = np.asarray(norms)
    fig, axes = new_figure(size=(10, 3.2))
    ax = axes[0, 0]
    colors = ["#666666"] + ["C0" if n.startswith("cos") else "C3" for n in names[1:]]
    ax.bar(np.arange(len(norms)), norms, color=colors, width=0.8)
    ax.set_xlim(-1, len(norms))
    step = max(1, len(names) // 24)
    ticks = [0] + [i for i in range(1, len(names)) if (i + 1) // 2 % step == 0 or (i + 1) // 2 in key_freqs]
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=7)
    for k in key_freqs:
        ax.axvspan(2 * k - 1.5, 2 * k + 0.5, color="#ffe599", alpha=0.5, lw=0, zorder=0)
    ax.set_ylabel("norm")
    ax.set_title(title + "  (blue: cos, red: sin, yellow: key frequencies)", fontsize=10)
    return fig


def attention_heads(attn_to_a, p: int):
    """Attention from '=' to the first operand a, per head, over all inputs (a, b)."""
    attn = np.asarray(attn_to_a)
    H = attn.shape[0]
    fig, axes = new_figure(1, H, size=(2.6 * H + 0.6, 2.9))
    for h in range(H):
        ax = axes[0, h]
        im = ax.imshow(attn[h], origin="lower", vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xlabel("b")
        if h == 0:
            ax.set_ylabel("a")
    fig.colorbar(im, ax=axes[0, -1], shrink=0.8, label="attention to a")
    return fig


def neuron_activations(neurons, p: int, which: list[int], freqs: list[int] | None = None):
    """Activations of a few MLP neurons over all inputs (a, b): periodic in a+b for circuit neurons."""
    acts = np.asarray(neurons)
    n = len(which)
    fig, axes = new_figure(1, n, size=(2.6 * n, 2.9))
    for j, i in enumerate(which):
        ax = axes[0, j]
        ax.imshow(acts[:, i].reshape(p, p), origin="lower", cmap="magma")
        ax.set_title(f"neuron {i}" + (f" (freq {freqs[j]})" if freqs else ""), fontsize=9)
        ax.set_xlabel("b")
        if j == 0:
            ax.set_ylabel("a")
    return fig


def logit_fourier(norms2d, names: list[str], key_freqs: list[int] = ()):
    """Norm of the logits' 2D Fourier components (over a, b): bright where the circuit writes."""
    z = np.asarray(norms2d)
    fig, axes = new_figure(size=(6.2, 5.4))
    ax = axes[0, 0]
    im = ax.imshow(z, origin="lower", cmap="Blues")
    ticks = [0] + [2 * k - 1 for k in key_freqs] + [2 * k for k in key_freqs]
    ticks = sorted(set(ticks))
    ax.set_xticks(ticks, [names[t] for t in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=7)
    ax.set_xlabel("Fourier component over b")
    ax.set_ylabel("Fourier component over a")
    fig.colorbar(im, ax=ax, shrink=0.8, label="norm over answers")
    return fig


def neuron_frequency_summary(neuron_frac, neuron_freq, threshold: float, K: int, key_freqs=()):
    """Histogram of each neuron's fraction explained by its best frequency, and neurons per frequency."""
    frac = np.asarray(neuron_frac)
    freq = np.asarray(neuron_freq)
    fig, axes = new_figure(1, 2, size=(10, 3.4))
    ax = axes[0, 0]
    ax.hist(frac, bins=40, range=(0, 1), color="C0")
    ax.axvline(threshold, color="k", ls="--", lw=1)
    ax.set_xlabel("fraction of variance explained by the neuron's frequency")
    ax.set_ylabel("neurons")
    ax.set_title(f"{(frac >= threshold).mean():.0%} of neurons have >= {threshold:g}", fontsize=10)
    ax = axes[0, 1]
    counts = np.bincount(freq[frac >= threshold], minlength=K + 1)[1:]
    colors = ["C2" if k in key_freqs else "C7" for k in range(1, K + 1)]
    ax.bar(np.arange(1, K + 1), counts, color=colors)
    ax.set_xlabel("frequency k")
    ax.set_ylabel("neurons (fraction >= threshold)")
    ax.set_title("neurons per frequency (green: key frequencies)", fontsize=10)
    return fig


def progress_panels(progress: dict, phases=None):
    """The paper's progress measures, each beside train/test loss: the circuit forms before test loss falls."""
    fig, axes = new_figure(2, 2, size=(11, 7))
    panels = [
        ("excluded loss", [("excluded_loss_train", "excluded loss (train)", "C3")], True),
        (
            "restricted loss",
            [
                ("restricted_loss_train", "restricted loss (train)", "C2"),
                ("restricted_loss_test", "restricted loss (test)", "C4"),
            ],
            True,
        ),
        ("Gini of Fourier norms", [("gini_W_E", "Gini W_E", "C5"), ("gini_W_L", "Gini W_L", "C6")], False),
        ("sum of squared weights", [("sum_sq_weights", "Σ weights²", "C8")], False),
    ]
    for ax, (title, series, same_axis) in zip(axes.flat, panels, strict=True):
        _loss_axes(ax, progress, phases)
        target = ax if same_axis else ax.twinx()
        for col, label, color in series:
            target.plot(progress["step"], progress[col], color=color, label=label, lw=1.6)
        if not same_axis:
            target.set_ylabel(title)
        ax.set_title(title, fontsize=10)
        handles = ax.get_legend_handles_labels()
        if target is not ax:
            h2 = target.get_legend_handles_labels()
            handles = (handles[0] + h2[0], handles[1] + h2[1])
        ax.legend(*handles, fontsize=7, loc="lower left")
    return fig


def cos_coefficients(cos_table: dict, key_freqs: list[int], phases=None):
    """Coefficient of cos(k(a+b−c)) in the logits over training: key frequencies grow, others stay ~0."""
    fig, axes = new_figure(size=(9, 4))
    ax = axes[0, 0]
    steps = cos_table["step"]
    for name, vals in cos_table.items():
        if name == "step":
            continue
        k = int(name[1:])
        if k in key_freqs:
            ax.plot(steps, vals, lw=1.8, label=f"k = {k}")
        else:
            ax.plot(steps, vals, color="#bbbbbb", lw=0.6)
    shade_phases(ax, phases)
    ax.set_xlabel("step")
    ax.set_ylabel("coefficient of cos(k(a+b−c))")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def excluded_loss_by_freq(excl_table: dict, progress: dict, phases=None):
    """Train loss with one key frequency removed at a time, beside the train/test loss."""
    fig, axes = new_figure(size=(9, 4))
    ax = axes[0, 0]
    _loss_axes(ax, progress, phases)
    for name, vals in excl_table.items():
        if name != "step":
            ax.plot(excl_table["step"], vals, lw=1.4, label=f"excluded loss, k = {name[1:]}")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def embedding_fourier_over_training(fourier_table: dict, names: list[str], key_freqs=(), phases=None):
    """Norm of each Fourier component of W_E at every checkpoint: it becomes sparse as the circuit forms."""
    steps = fourier_table["step"]
    z = np.stack([fourier_table[n.replace(" ", "_")] for n in names], axis=1)  # [checkpoints, p]
    fig, axes = new_figure(size=(10, 4.2))
    ax = axes[0, 0]
    im = ax.imshow(
        z.T,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(steps[0], steps[-1], -0.5, len(names) - 0.5),
        interpolation="nearest",
    )
    ticks = sorted({0, *[2 * k - 1 for k in key_freqs], *[2 * k for k in key_freqs]})
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("Fourier component of W_E")
    if phases is not None:
        for _, start, _ in phases.spans()[1:]:
            ax.axvline(start, color="w", ls="--", lw=1)
    fig.colorbar(im, ax=ax, label="norm")
    return fig
