"""The progress-measure figures of Nanda et al. (2023) for one analysed modular-arithmetic run.

The plot functions take plain arrays/tables and return a `Figure` (no I/O), so the same functions
serve the report, the notebook and a user's own script. The registered specs at the bottom make each
figure from the files `grokscope analyze` wrote into `analysis/` (tables, `phases.json`,
`snapshot.safetensors`): no figure loads a model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from grokscope.figures.render import new_figure
from grokscope.figures.spec import FigureSpec, register_figure

PHASE_COLORS = {
    "memorization": "#f4cccc",
    "circuit formation": "#fff2cc",
    "circuit formation?": "#fff2cc",
    "cleanup": "#d9ead3",
}


def shade_phases(ax, phases, label: bool = True) -> None:
    """Shade each located phase as a background band; label them once at the top."""
    if phases is None:
        return
    for name, start, end in phases.spans():
        ax.axvspan(start, end, color=PHASE_COLORS.get(name, "#eeeeee"), alpha=0.6, lw=0, zorder=0)
        if label:
            ax.text(
                (start + end) / 2,
                0.985,
                name,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                rotation=90 if (end - start) < 0.08 * ax.get_xlim()[1] else 0,
                fontsize=7,
                color="#555555",
            )


def _loss_axes(ax, progress, phases, train_label="train loss", test_label="test loss") -> None:
    ax.plot(progress["step"], progress["train_loss"], color="C0", label=train_label, lw=1.2)
    ax.plot(progress["step"], progress["test_loss"], color="C1", label=test_label, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    shade_phases(ax, phases)


def loss_and_accuracy(
    progress: dict[str, np.ndarray],  # columns [checkpoints]
    phases=None,
    curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,  # name -> (steps, values)
):
    """Train/test loss (log scale) and accuracy over training, phases shaded. `curves` (from
    metrics.jsonl: `train_loss`, `test_loss`, `train_acc`, `test_acc`, each optional) replace the
    per-checkpoint columns where given; accuracies missing from them come from the checkpoints."""
    curves = curves or {}

    def series(name):
        return curves.get(name) or (progress["step"], progress[name])

    fig, axes = new_figure(1, 2, size=(10, 3.8))
    ax = axes[0, 0]
    for i, split in enumerate(("train", "test")):
        x, y = series(f"{split}_loss")
        ax.plot(x, y, color=f"C{i}", label=f"{split} loss", lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    shade_phases(ax, phases)
    ax.set_ylabel("cross-entropy loss")
    ax.legend(loc="lower left", fontsize=8)
    ax = axes[0, 1]
    for i, split in enumerate(("train", "test")):
        x, y = series(f"{split}_acc")
        style = {} if f"{split}_acc" in curves or len(x) > 1 else {"marker": "o"}
        ax.plot(x, y, color=f"C{i}", label=f"{split} accuracy", **style)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    shade_phases(ax, phases)
    ax.legend(loc="center right", fontsize=8)
    return fig


def metrics_curves(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of each of train/test loss/accuracy that metrics.jsonl holds at >= 2 steps."""
    out = {}
    for name in ("train_loss", "test_loss", "train_acc", "test_acc"):
        pts = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
        if len(pts) >= 2:
            steps, values = zip(*sorted(pts), strict=True)
            out[name] = (np.asarray(steps), np.asarray(values, dtype=np.float64))
    return out


def fourier_norms(
    norms,  # [p]: one norm per Fourier component (const, cos 1, sin 1, ...)
    names: list[str],
    title: str,
    key_freqs: list[int] = (),
):
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


def attention_heads(attn_to_a, p: int):  # attn_to_a: [head_index, p, p] over (a, b)
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


def neuron_activations(
    neurons, p: int, which: list[int], freqs: list[int] | None = None, labels: list[int] | None = None
):
    """Activations of a few MLP neurons over all inputs (a, b): periodic in a+b for circuit neurons.

    neurons: [p², d_mlp] (or [p², n] example columns); which: the columns to show; labels: the neuron
    numbers to title them with (default: `which`)."""
    acts = np.asarray(neurons)
    n = len(which)
    fig, axes = new_figure(1, n, size=(2.6 * n, 2.9))
    for j, i in enumerate(which):
        ax = axes[0, j]
        ax.imshow(acts[:, i].reshape(p, p), origin="lower", cmap="magma")
        num = labels[j] if labels is not None else i
        ax.set_title(f"neuron {num}" + (f" (freq {freqs[j]})" if freqs else ""), fontsize=9)
        ax.set_xlabel("b")
        if j == 0:
            ax.set_ylabel("a")
    return fig


def logit_fourier(norms2d, names: list[str], key_freqs: list[int] = ()):  # norms2d: [p, p]
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


def neuron_frequency_summary(
    neuron_frac,  # [d_mlp]: variance fraction explained by each neuron's best frequency
    neuron_freq,  # [d_mlp]: that frequency
    threshold: float,
    K: int,
    key_freqs=(),
):
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


def progress_panels(progress: dict[str, np.ndarray], phases=None):  # columns [checkpoints]
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
    if key_freqs:  # no key frequency yet: nothing is labelled
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
        # one checkpoint (an imported run): a band half a step wide either side of it
        extent=(
            steps[0] - (steps[0] == steps[-1]) * 0.5,
            steps[-1] + (steps[0] == steps[-1]) * 0.5,
            -0.5,
            len(names) - 0.5,
        ),
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


# ----------------------------------------------------------------------------- from the run folder
META, KEY, PHASES = "analysis/analysis_meta.json", "analysis/key_frequencies.json", "analysis/phases.json"
PROGRESS, SNAPSHOT = "analysis/progress.csv", "analysis/snapshot.safetensors"


def _stamp(folder: Path, rel: str) -> int:
    return (folder / rel).stat().st_mtime_ns


@functools.lru_cache(maxsize=4)
def _analysis_at(folder: Path, _stamp: int):
    from grokscope.analysis import load_analysis

    return load_analysis(folder)


def analysis_of(folder: Path):
    """The run's `RunAnalysis` (read once per change of its tables)."""
    return _analysis_at(Path(folder), _stamp(folder, META) + _stamp(folder, PROGRESS))


def phases_of(folder: Path):
    """The `Phases` that `grokscope analyze` wrote to analysis/phases.json."""
    from grokscope.analysis.phases import Phases

    return Phases(**json.loads((Path(folder) / PHASES).read_text()))


def snapshot_of(folder: Path):
    from grokscope.analysis.snapshot import read_snapshot

    return read_snapshot(Path(folder) / SNAPSHOT)


def _names(folder: Path) -> list[str]:
    from grokscope.analysis.fourier import basis_names

    return basis_names(analysis_of(folder).p)


def _final_norms(folder: Path, table: str) -> list[float]:
    a = analysis_of(folder)
    t = a.fourier_W_E if table == "W_E" else a.fourier_W_L
    return [float(t[n.replace(" ", "_")][-1]) for n in _names(folder)]


def _loss_accuracy(folder, _key):
    from grokscope.run import Run

    curves = metrics_curves(Run(folder).read_metrics())  # the dense curves, when the run has them
    return loss_and_accuracy(analysis_of(folder).progress, phases_of(folder), curves)


def _progress_measures(folder, _key):
    return progress_panels(analysis_of(folder).progress, phases_of(folder))


def _fourier(which: str):
    def make(folder, _key):
        kf = analysis_of(folder).key.key_freqs
        return fourier_norms(_final_norms(folder, which), _names(folder), f"{which} Fourier components", kf)

    return make


def _attention(folder, _key):
    snap = snapshot_of(folder)
    return attention_heads(snap.attn_to_a, snap.p)


def _neurons(folder, _key):
    snap = snapshot_of(folder)
    return neuron_activations(
        snap.neurons, snap.p, list(range(len(snap.neuron_ids))), snap.neuron_freqs, labels=snap.neuron_ids
    )


def _logit_fourier(folder, _key):
    snap = snapshot_of(folder)
    return logit_fourier(snap.logit_fourier_norms, _names(folder), analysis_of(folder).key.key_freqs)


def _neuron_frequencies(folder, _key):
    from grokscope.analysis.fourier import n_freqs

    a = analysis_of(folder)
    k = a.key
    return neuron_frequency_summary(k.neuron_frac, k.neuron_freq, k.threshold, n_freqs(a.p), k.key_freqs)


def _cos_coefficients(folder, _key):
    a = analysis_of(folder)
    return cos_coefficients(a.cos_coeffs, a.key.key_freqs, phases_of(folder))


def _excluded_by_freq(folder, _key):
    a = analysis_of(folder)
    return excluded_loss_by_freq(a.excluded_by_freq, a.progress, phases_of(folder))


def _embedding_over_training(folder, _key):
    a = analysis_of(folder)
    return embedding_fourier_over_training(a.fourier_W_E, _names(folder), a.key.key_freqs, phases_of(folder))


def _spec(name, title, explanation, inputs, make) -> FigureSpec:
    return register_figure(
        FigureSpec(name, title, explanation, "progress", (META, *inputs), f"figures/{name}.png", make)
    )


_spec(
    "loss_accuracy",
    "Loss and accuracy",
    "Train loss falls first: the network memorizes the training pairs. Test loss stays high for "
    "a long time and then falls suddenly: that is grokking. The shaded bands are the three phases "
    "found automatically (see the Phases section).",
    (PROGRESS, PHASES),
    _loss_accuracy,
)
_spec(
    "progress_measures",
    "Progress measures",
    "Restricted loss keeps only the key-frequency part of the logits; it falls well before test "
    "loss, so the generalizing circuit exists before it shows in the test loss. Excluded loss "
    "removes that part; it rises while train loss stays low, so the network relies more and more "
    "on the circuit. Gini coefficients measure how sparse W_E and W_L are in the Fourier basis, "
    "and the sum of squared weights falls as weight decay cleans up the memorization.",
    (PROGRESS, PHASES),
    _progress_measures,
)
_spec(
    "fourier_W_E",
    "Embedding in the Fourier basis (final checkpoint)",
    "The norm of each Fourier component of the token embeddings W_E. A grokked network embeds "
    "each number through a few frequencies only (the key frequencies): a sparse bar chart.",
    ("analysis/fourier_W_E.csv", KEY),
    _fourier("W_E"),
)
_spec(
    "fourier_W_L",
    "Neuron-logit map in the Fourier basis (final checkpoint)",
    "W_L = W_out · W_U maps neuron activations to answer logits. Along the answer axis it also uses "
    "only the key frequencies: the neurons write cos/sin of k·c for the answer c.",
    ("analysis/fourier_W_L.csv", KEY),
    _fourier("W_L"),
)
_spec(
    "attention",
    "Attention from '=' to a",
    "How much each head at the '=' position looks at the first number a (the rest goes mostly to "
    "b). Periodic stripes mean the heads already compute trigonometric functions of a and b.",
    (SNAPSHOT,),
    _attention,
)
_spec(
    "neurons",
    "Example neuron activations",
    "Activation of a few MLP neurons over all inputs (a, b). Circuit neurons are periodic along "
    "the anti-diagonals a + b = const: they respond to cos/sin of k(a+b).",
    (SNAPSHOT,),
    _neurons,
)
_spec(
    "logit_fourier",
    "Logits in the 2D Fourier basis",
    "Norm of the logits' 2D Fourier components over (a, b). The mass sits on the key frequencies "
    "in the (cos a·cos b, sin a·sin b) blocks, which is what cos(k(a+b)) looks like.",
    (SNAPSHOT, KEY),
    _logit_fourier,
)
_spec(
    "neuron_frequencies",
    "Neurons and their frequencies",
    "Left: for each neuron, the share of its variance explained by its best single frequency; "
    "neurons right of the dashed line count. Right: how many counting neurons use each frequency; "
    "a frequency with at least 2% of the neurons is a key frequency.",
    (KEY,),
    _neuron_frequencies,
)
_spec(
    "cos_coefficients",
    "cos(k(a+b−c)) in the logits over training",
    "The coefficient of cos(k(a+b−c)) in the logits, per frequency k. The algorithm's output is a "
    "sum of these terms for the key frequencies (coloured); their coefficients grow during circuit "
    "formation while all other frequencies (grey) stay near zero.",
    ("analysis/cos_coeffs.csv", KEY, PHASES),
    _cos_coefficients,
)
_spec(
    "excluded_by_freq",
    "Excluded loss per key frequency",
    "Train loss after removing a single key frequency from the logits. Each one matters: removing "
    "any of them hurts once the circuit has formed.",
    ("analysis/excluded_loss_by_freq.csv", PROGRESS, PHASES),
    _excluded_by_freq,
)
_spec(
    "embedding_over_training",
    "Embedding Fourier norms over training",
    "Each column is a checkpoint, each row a Fourier component of W_E. Early on every component is "
    "used a little; over training the embedding concentrates on the key frequencies.",
    ("analysis/fourier_W_E.csv", KEY, PHASES),
    _embedding_over_training,
)


def write_progress_figures(path: str | Path, force: bool = True):
    """Render every progress figure of an analysed run to `DIR/figures/NAME.png` (list of WrittenFigure)."""
    from grokscope.figures.spec import write_figures

    return write_figures(path, "progress", force=force)
