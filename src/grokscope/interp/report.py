"""Report sections from what the interpretability verbs wrote under DIR/analysis/ (nothing is recomputed).

`interp_report_sections(run_dir)` -> [(title, html)], self-contained HTML (PNGs and GIFs embedded as
base64), one section per kind of result present: probes, lens, PCA, embedding space, TL export. The
report (`grokscope.report`) adds the registered figures (`grokscope.figures.interp`) to these
sections, and any other image (the PCA GIF) found in their folders.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from grokscope.interp.io import read_csv


def _img(path: Path, alt: str = "") -> str:
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<img alt="{html.escape(alt or path.name)}" src="data:{mime};base64,{data}" style="max-width:100%">'
    )


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _last_step(rows: list[dict]) -> list[dict]:
    steps = [r["step"] for r in rows if r.get("step") is not None]
    return [r for r in rows if r.get("step") == max(steps)] if steps else rows


def _probe_section(d: Path) -> str:
    from grokscope.interp.probes import GEOMETRY_COLUMNS

    parts = []
    for csv_path in sorted(p for p in d.glob("*.csv") if not p.stem.endswith("_geometry")):
        from grokscope.interp.probes import summary_rows

        rows = _last_step(read_csv(csv_path))
        shown, rule = summary_rows(rows)
        best = {(r["hook"], r["label"]): r for r in shown}
        cols = [
            c
            for c in (
                "hook",
                "label",
                "position",
                "metric",
                "score",
                "majority",
                "embed",
                "control",
                "selectivity",
            )
            if any(c in r for r in best.values())
        ]
        parts.append(
            f"<h3>label {html.escape(csv_path.stem)}</h3><p>Held-out score, {rule} (embed: the same probe "
            "on hook_embed; control: shuffled labels; selectivity = score - control).</p>"
        )
        parts.append(_table(list(best.values()), cols))
        geo_path = d / f"{csv_path.stem}_geometry.csv"
        if geo_path.is_file():
            geo = _last_step(read_csv(geo_path))
            at_best = {(r["label"], r["position"]) for r in best.values()}
            geo = [g for g in geo if (g["label"], g["position"]) in at_best] or geo
            if geo:
                parts.append(
                    f"<p>Probe directions, cosine between hooks (random |cos| mean "
                    f"{geo[0]['random_abs_cos_mean']:.3f}, 99th percentile {geo[0]['random_abs_cos_p99']:.3f})"
                    " and transfer of one hook's probe to the other:</p>"
                )
                parts.append(
                    _table(
                        geo,
                        list(GEOMETRY_COLUMNS),
                    )
                )
    return "".join(parts)


def _lens_section(d: Path) -> str:
    rows = _last_step(read_csv(d / "lens.csv"))
    rows = [r for r in rows if r["position"] == "all"]
    out = (
        "<p>Accuracy and loss of the true answer when each residual hook is decoded directly (logit lens) "
        "or through an affine map fitted on training examples (tuned lens). Tuned far above logit: the "
        "answer is present but not yet in the output basis; both low: it is not computed yet.</p>"
    )
    out += _table(rows, ["lens", "hook", "acc", "loss"])
    return out


def _pca_section(d: Path) -> str:
    tags = sorted(p.name[: -len("_explained.csv")] for p in d.glob("*_explained.csv"))
    out = "<p>Principal components of " + ", ".join(f"<code>{html.escape(t)}</code>" for t in tags)
    out += " over checkpoints (PC1 against PC2; explained variance per component).</p>"
    if (d / "circles.csv").is_file():
        out += (
            "<p>Key-frequency circles: the number embeddings projected on the plane of each key "
            "frequency's cos/sin pair; radius CV 0 is a perfect circle (circles.csv).</p>"
        )
    return out


def _embspace_section(d: Path) -> str:
    return (
        "<p>Direct-path token tables (Dar et al. 2023): E·W_QK·Eᵀ, E·W_OV·W_U per head, and MLP neurons' "
        "input (E·W_in) and output (W_out·W_U) token profiles. LayerNorm and positions are ignored.</p>"
    )


def _tl_section(d: Path) -> str:
    cfg = json.loads((d / "config.json").read_text())
    return (
        "<p>Exported to TransformerLens 4.x (config.json + weights.safetensors in analysis/tl/); "
        f"{cfg['n_layers']} layer(s), normalization {cfg['normalization_type']}, act {cfg['act_fn']}.</p>"
    )


def interp_report_parts(run_dir) -> list[tuple[str, Path, str]]:
    """[(title, folder, html)] for every interpretability result found under run_dir/analysis/.

    The html holds the tables (and the PCA / embedding-space images the verbs saved); the report adds
    the registered figures (`grokscope.figures.interp`) whose PNGs lie in the same folder."""
    base = Path(run_dir) / "analysis"
    parts = []
    for title, sub, marker, build in (
        ("Linear probes", "probes", "*.csv", _probe_section),
        ("Logit lens and tuned lens", "lens", "lens.csv", _lens_section),
        ("PCA across checkpoints", "pca", "*_explained.csv", _pca_section),
        ("Embedding-space views", "embspace", "*", _embspace_section),
        ("TransformerLens export", "tl", "config.json", _tl_section),
    ):
        d = base / sub
        if d.is_dir() and any(d.glob(marker)):
            parts.append((title, d, build(d)))
    return parts


def interp_report_sections(run_dir) -> list[tuple[str, str]]:
    """[(title, html)] for every interpretability result found under run_dir/analysis/."""
    return [(title, h) for title, _, h in interp_report_parts(run_dir)]
