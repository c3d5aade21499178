"""Render a run's progress-measure figures to `DIR/figures/*.png` (the plot functions do no I/O).

Each figure comes with a title and a short explanation; the report and the notebook show both.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FigureSpec:
    name: str  # file stem under DIR/figures/
    title: str
    explanation: str
    make: Callable  # () -> matplotlib Figure


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def progress_figure_specs(analysis, phases, snap) -> list[FigureSpec]:
    """Every figure of issue 3 for an analysed run (`snap`: the final checkpoint's `Snapshot`)."""
    from grokscope.analysis.fourier import basis_names, n_freqs
    from grokscope.plots import progress as P

    p, key, pr = analysis.p, analysis.key, analysis.progress
    kf = key.key_freqs
    names = basis_names(p)
    last = {n: float(analysis.fourier_W_E[n.replace(" ", "_")][-1]) for n in names}
    last_L = {n: float(analysis.fourier_W_L[n.replace(" ", "_")][-1]) for n in names}
    # example neurons: the most-explained neuron of each key frequency (up to 4)
    ex, ex_f = [], []
    for k in kf[:4]:
        cands = [
            (f, i) for i, (g, f) in enumerate(zip(key.neuron_freq, key.neuron_frac, strict=True)) if g == k
        ]
        if cands:
            ex.append(max(cands)[1])
            ex_f.append(k)
    if not ex:
        ex, ex_f = [0, 1, 2, 3][: len(key.neuron_freq)], None
    return [
        FigureSpec(
            "loss_accuracy",
            "Loss and accuracy",
            "Train loss falls first: the network memorizes the training pairs. Test loss stays high for "
            "a long time and then falls suddenly: that is grokking. The shaded bands are the three phases "
            "found automatically (see the Phases section).",
            lambda: P.loss_and_accuracy(pr, phases),
        ),
        FigureSpec(
            "progress_measures",
            "Progress measures",
            "Restricted loss keeps only the key-frequency part of the logits; it falls well before test "
            "loss, so the generalizing circuit exists before it shows in the test loss. Excluded loss "
            "removes that part; it rises while train loss stays low, so the network relies more and more "
            "on the circuit. Gini coefficients measure how sparse W_E and W_L are in the Fourier basis, "
            "and the sum of squared weights falls as weight decay cleans up the memorization.",
            lambda: P.progress_panels(pr, phases),
        ),
        FigureSpec(
            "fourier_W_E",
            "Embedding in the Fourier basis (final checkpoint)",
            "The norm of each Fourier component of the token embeddings W_E. A grokked network embeds "
            "each number through a few frequencies only (the key frequencies): a sparse bar chart.",
            lambda: P.fourier_norms(list(last.values()), names, "W_E Fourier components", kf),
        ),
        FigureSpec(
            "fourier_W_L",
            "Neuron-logit map in the Fourier basis (final checkpoint)",
            "W_L = W_out · W_U maps neuron activations to answer logits. Along the answer axis it also uses "
            "only the key frequencies: the neurons write cos/sin of k·c for the answer c.",
            lambda: P.fourier_norms(list(last_L.values()), names, "W_L Fourier components", kf),
        ),
        FigureSpec(
            "attention",
            "Attention from '=' to a",
            "How much each head at the '=' position looks at the first number a (the rest goes mostly to "
            "b). Periodic stripes mean the heads already compute trigonometric functions of a and b.",
            lambda: P.attention_heads(snap.attn_to_a, p),
        ),
        FigureSpec(
            "neurons",
            "Example neuron activations",
            "Activation of a few MLP neurons over all inputs (a, b). Circuit neurons are periodic along "
            "the anti-diagonals a + b = const: they respond to cos/sin of k(a+b).",
            lambda: P.neuron_activations(snap.neurons, p, ex, ex_f),
        ),
        FigureSpec(
            "logit_fourier",
            "Logits in the 2D Fourier basis",
            "Norm of the logits' 2D Fourier components over (a, b). The mass sits on the key frequencies "
            "in the (cos a·cos b, sin a·sin b) blocks, which is what cos(k(a+b)) looks like.",
            lambda: P.logit_fourier(snap.logit_fourier_norms, names, kf),
        ),
        FigureSpec(
            "neuron_frequencies",
            "Neurons and their frequencies",
            "Left: for each neuron, the share of its variance explained by its best single frequency; "
            "neurons right of the dashed line count. Right: how many counting neurons use each frequency; "
            "a frequency with at least 2% of the neurons is a key frequency.",
            lambda: P.neuron_frequency_summary(
                key.neuron_frac, key.neuron_freq, key.threshold, n_freqs(p), kf
            ),
        ),
        FigureSpec(
            "cos_coefficients",
            "cos(k(a+b−c)) in the logits over training",
            "The coefficient of cos(k(a+b−c)) in the logits, per frequency k. The algorithm's output is a "
            "sum of these terms for the key frequencies (coloured); their coefficients grow during circuit "
            "formation while all other frequencies (grey) stay near zero.",
            lambda: P.cos_coefficients(analysis.cos_coeffs, kf, phases),
        ),
        FigureSpec(
            "excluded_by_freq",
            "Excluded loss per key frequency",
            "Train loss after removing a single key frequency from the logits. Each one matters: removing "
            "any of them hurts once the circuit has formed.",
            lambda: P.excluded_loss_by_freq(analysis.excluded_by_freq, pr, phases),
        ),
        FigureSpec(
            "embedding_over_training",
            "Embedding Fourier norms over training",
            "Each column is a checkpoint, each row a Fourier component of W_E. Early on every component is "
            "used a little; over training the embedding concentrates on the key frequencies.",
            lambda: P.embedding_fourier_over_training(analysis.fourier_W_E, names, kf, phases),
        ),
    ]


@dataclass
class WrittenFigure:
    name: str
    path: Path
    title: str
    explanation: str


def write_progress_figures(path: str | Path) -> list[WrittenFigure]:
    """Render every progress figure of an analysed run to `DIR/figures/NAME.png`; also phases.json."""
    from grokscope.analysis import detect_phases, load_analysis
    from grokscope.analysis.run_analysis import torch_threads
    from grokscope.analysis.snapshot import snapshot
    from grokscope.files import atomic_write_bytes, atomic_write_text
    from grokscope.run import Run

    analysis = load_analysis(path)
    phases = detect_phases(analysis.progress)
    run = Run.open(path)
    atomic_write_text(run.subdir("analysis") / "phases.json", json.dumps(phases.to_dict(), indent=1))
    step = int(analysis.steps[-1])
    task = run.task
    model = run.model(step)
    with torch_threads(1):
        snap = snapshot(model, task, step)
    out_dir = run.subdir("figures")
    written = []
    for spec in progress_figure_specs(analysis, phases, snap):
        target = out_dir / f"{spec.name}.png"
        atomic_write_bytes(target, figure_png(spec.make()))
        written.append(WrittenFigure(spec.name, target, spec.title, spec.explanation))
    return written
