"""Figures of the intervention studies, from the tables under analysis/interventions/: the patching
heatmaps (node x position), the circuit (a graph, with its faithfulness against size) and circuit
formation (components x training step, the run's phases shaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from grokscope.figures.render import new_figure
from grokscope.figures.spec import FigureSpec, register_figure

D = "analysis/interventions"


def _rows(path: Path) -> list[dict]:
    from grokscope.interp.io import read_csv

    return read_csv(path)


# ----------------------------------------------------------------------------- patching


def patching_heatmaps(rows: list[dict]):
    """One heatmap per (mode, measure): rows are nodes in forward order, columns positions."""
    last = max(r["step"] for r in rows)
    rows = [r for r in rows if r["step"] == last]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    measures = [m for m in ("exact_effect", "attribution_effect") if any(r.get(m) is not None for r in rows)]
    nodes = list(dict.fromkeys(r["node"] for r in rows))
    T = max(r["position"] for r in rows) + 1
    fig, axes = new_figure(
        len(modes), len(measures), size=(0.45 * T * len(measures) + 3, 0.3 * len(nodes) * len(modes) + 1.5)
    )
    for i, mode in enumerate(modes):
        for j, measure in enumerate(measures):
            grid = np.full((len(nodes), T), np.nan)
            for r in rows:
                if r["mode"] == mode and r.get(measure) is not None:
                    grid[nodes.index(r["node"]), r["position"]] = r[measure]
            ax = axes[i, j]
            im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
            ax.set_yticks(range(len(nodes)), nodes, fontsize=7)
            ax.set_xticks(range(T), [str(t) for t in range(T)], fontsize=7)
            ax.set_xlabel("position")
            ax.set_title(f"{mode}: {measure.replace('_', ' ')} (step {last})", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def _patching(folder: Path, _key):
    rows = _rows(folder / D / "patching.csv")
    return patching_heatmaps(rows) if rows else None


register_figure(
    FigureSpec(
        "patching",
        "Activation patching by node and position",
        "Effect of patching one node (a head's output, an MLP's output, the residual stream) at one "
        "position: 1 = it alone carries the clean-corrupted logit difference (denoising: clean patched into "
        "the corrupted run; noising: corrupted into the clean run); exact patching beside its gradient "
        "estimate (attribution patching).",
        "interventions",
        (f"{D}/patching.csv",),
        f"{D}/patching.png",
        _patching,
    )
)


# ----------------------------------------------------------------------------- circuit


def _layout(senders: list[str], receivers: list[str]) -> dict[str, tuple[float, float]]:
    """Node positions: embed at the bottom, each layer's heads then its MLP above, logits on top."""
    pos = {"embed": (0.0, 0.0), "logits": (0.0, 0.0)}
    level = 0
    for s in senders[1:]:
        if s.startswith("L"):
            layer, head = s[1:].split("H")
            y = 1 + 2 * int(layer)
            pos[s] = (float(head), float(y))
        else:
            y = 2 + 2 * int(s[3:])
            pos[s] = (0.0, float(y))
        level = max(level, int(pos[s][1]))
    width = max([x for x, _ in pos.values()] + [0.0])
    pos["embed"] = (width / 2, 0.0)
    pos["logits"] = (width / 2, float(level + 1))
    for s in senders[1:]:
        if s.startswith("MLP"):
            pos[s] = (width / 2, pos[s][1])
    return pos


def circuit_figure(summary: dict, curve: list[dict]):
    fig, axes = new_figure(1, 2, size=(11, 4.5))
    ax = axes[0, 0]
    senders, receivers = summary["senders"], summary["receivers"]
    pos = _layout(senders, receivers)
    scores = summary["scores"]
    top = max([abs(v) for v in scores.values()] + [1e-12])
    kept = set(summary["edges"])
    for name, v in scores.items():
        s, r = name.split("->")
        node = r.split(".")[0]
        (x0, y0), (x1, y1) = pos[s], pos[node]
        inside = name in kept
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={
                "arrowstyle": "->",
                "color": "tab:red" if inside else "0.85",
                "lw": 0.5 + 3.5 * abs(v) / top if inside else 0.5,
                "connectionstyle": "arc3,rad=0.15",
            },
        )
        if inside and "." in r:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, r.split(".")[1], fontsize=7, color="tab:red")
    for name, (x, y) in pos.items():
        ax.text(
            x,
            y,
            name,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.4"},
        )
    xs, ys = zip(*pos.values(), strict=True)
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.axis("off")
    ax.set_title(
        f"circuit: {summary['size']} of {summary['n_edges']} edges, faithfulness {summary['faithfulness']:.3f}",
        fontsize=9,
    )
    ax = axes[0, 1]
    if curve:
        last = max(r["step"] for r in curve)
        c = sorted((r for r in curve if r["step"] == last), key=lambda r: r["size"])
        ax.plot(
            [r["size"] for r in c], [r["faithfulness"] for r in c], "o-", ms=3, label="top-k by attribution"
        )
        if any(r.get("random_faithfulness") is not None for r in c):
            k = [r["size"] for r in c if r.get("random_faithfulness") is not None]
            m = np.array([r["random_faithfulness"] for r in c if r.get("random_faithfulness") is not None])
            sd = np.array(
                [
                    r.get("random_faithfulness_sd") or 0.0
                    for r in c
                    if r.get("random_faithfulness") is not None
                ]
            )
            ax.plot(k, m, "s--", ms=3, color="0.4", label="random edges")
            ax.fill_between(k, m - sd, m + sd, color="0.8", alpha=0.6)
    ax.axhline(
        summary["threshold"], color="tab:red", lw=0.8, ls=":", label=f"threshold {summary['threshold']}"
    )
    ax.axvline(summary["size"], color="tab:red", lw=0.8, label=f"circuit ({summary['size']} edges, pruned)")
    ax.set_xlabel("edges kept")
    ax.set_ylabel("faithfulness")
    ax.legend(fontsize=7)
    ax.set_title("faithfulness against circuit size", fontsize=9)
    return fig


def _circuit(folder: Path, _key):
    summary = json.loads((folder / D / "circuit.json").read_text())
    return circuit_figure(summary, _rows(folder / D / "circuit_curve.csv"))


register_figure(
    FigureSpec(
        "circuit",
        "Discovered circuit",
        "Edges kept by circuit discovery (red, width by attribution; the rest grey), with faithfulness — the "
        "share of the clean-corrupted logit difference the circuit keeps when every other edge is fed from "
        "the corrupted input — against the number of edges, next to random circuits of each size.",
        "interventions",
        (f"{D}/circuit.json", f"{D}/circuit_curve.csv"),
        f"{D}/circuit.png",
        _circuit,
    )
)


# ----------------------------------------------------------------------------- formation


def formation_figure(rows: list[dict], phases: dict, n_edges: int = 16):
    """Nodes (and the edges that ever matter most) x checkpoint: the share of the logit difference
    that noising each destroys, with the phases shaded above."""
    steps = sorted({r["step"] for r in rows})
    by = {}
    for r in rows:
        by.setdefault((r["kind"], r["name"]), {})[r["step"]] = r["score"]
    nodes = [k for k in by if k[0] == "node"]
    edges = sorted((k for k in by if k[0] == "edge"), key=lambda k: -max(abs(v) for v in by[k].values()))[
        :n_edges
    ]
    fig, axes = new_figure(3, 1, size=(10, 2 + 0.25 * (len(nodes) + len(edges)) + 2),
                           gridspec_kw={"height_ratios": [1.2, max(1, len(nodes)) * 0.3, max(1, len(edges)) * 0.3]},
                           sharex=True)  # fmt: skip
    span = {r["step"]: r["m_clean"] - r["m_corrupt"] for r in rows}
    ax = axes[0, 0]
    ax.plot(steps, [span[s] for s in steps], "k-", lw=1)
    ax.set_ylabel("clean - corrupt\nlogit diff", fontsize=8)
    colors = {"memorization": "tab:blue", "circuit formation": "tab:orange", "cleanup": "tab:green"}
    for name, start, end in phases.get("spans", []):
        for a in axes[:, 0]:
            a.axvspan(start, end, color=colors.get(name.rstrip("?"), "0.8"), alpha=0.12, lw=0)
        ax.text((start + end) / 2, ax.get_ylim()[1], name, ha="center", va="top", fontsize=7)
    for a, keys, title in ((axes[1, 0], nodes, "nodes"), (axes[2, 0], edges, f"top {len(edges)} edges")):
        if not keys:
            a.axis("off")
            continue
        grid = np.array([[-by[k].get(s, np.nan) for s in steps] for k in keys])
        m = np.nanmax(np.abs(grid)) or 1.0
        edges_x = np.concatenate([[steps[0]], (np.array(steps[1:]) + np.array(steps[:-1])) / 2, [steps[-1]]])
        im = a.pcolormesh(
            edges_x, np.arange(len(keys) + 1), grid, cmap="RdBu_r", vmin=-m, vmax=m, shading="flat"
        )
        a.set_yticks(np.arange(len(keys)) + 0.5, [k[1] for k in keys], fontsize=7)
        a.invert_yaxis()
        a.set_title(f"{title}: logit difference destroyed by noising (attribution)", fontsize=8)
        fig.colorbar(im, ax=a, fraction=0.03)
    axes[2, 0].set_xlabel("training step")
    return fig


def _formation(folder: Path, _key):
    rows = _rows(folder / D / "formation.csv")
    if len({r["step"] for r in rows}) < 2:
        return None
    phases = json.loads((folder / D / "formation_phases.json").read_text())
    return formation_figure(rows, phases)


register_figure(
    FigureSpec(
        "circuit_formation",
        "Circuit formation across checkpoints",
        "Edge attribution patching at every checkpoint: for each component (and the edges that matter most) "
        "the logit difference that replacing it by its corrupted-input value would remove, over training, "
        "with the run's phases shaded (modular runs: from grokscope analyze when it ran).",
        "interventions",
        (f"{D}/formation.csv", f"{D}/formation_phases.json"),
        f"{D}/formation.png",
        _formation,
    )
)
