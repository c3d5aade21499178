"""`grokscope report DIR`: one self-contained HTML page about a run (PNGs inlined, no network).

The page is a list of sections. Each section builder takes a `ReportContext` and returns HTML, or
None when the analysis it shows is absent, so later features add a section by appending to SECTIONS
(or calling `register_section`) without touching the others:

```python
from grokscope.report import register_section
register_section(lambda ctx: "<h2>Probes</h2>..." if (ctx.path / "analysis/probes.csv").is_file() else None)
```
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ReportContext:
    path: Path
    run: object  # Run
    config: object  # RunConfig
    metrics: list[dict]
    cache: dict = field(default_factory=dict)  # sections may share computed things here


Section = Callable[[ReportContext], str | None]


# ---------------------------------------------------------------------------- helpers for sections
def esc(x) -> str:
    return html.escape(str(x))


def img_tag(png: Path | bytes, alt: str = "") -> str:
    """An <img> with the PNG inlined as base64 (so the page opens offline, alone)."""
    data = png.read_bytes() if isinstance(png, Path) else png
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def figure_block(title: str, explanation: str, png: Path | bytes) -> str:
    return f"<figure><h3>{esc(title)}</h3>{img_tag(png, title)}<figcaption>{esc(explanation)}</figcaption></figure>"


def table_html(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:.{digits}g}"
    return str(x)


# ---------------------------------------------------------------------------- sections
def section_config(ctx: ReportContext) -> str:
    from grokscope.config import dumps_toml

    text = dumps_toml(ctx.run.raw_config())
    return (
        "<h2>Run configuration</h2><p>Everything needed to reproduce this run "
        "(<code>grokscope train CONFIG</code> with this file).</p>"
        f"<details><summary>config.toml</summary><pre>{esc(text)}</pre></details>"
    )


def section_training(ctx: ReportContext) -> str | None:
    if not ctx.metrics:
        return None
    last = ctx.metrics[-1]
    rows = [("steps trained", last.get("step"))]
    for k in ("train_loss", "test_loss", "train_acc", "test_acc"):
        if k in last:
            rows.append((f"final {k.replace('_', ' ')}", fmt(last[k])))
    grok = next((r["step"] for r in ctx.metrics if r.get("test_acc", 0) >= 0.99), None)
    rows.append(("step of grokking (first evaluation with test accuracy >= 99%)", fmt(grok)))
    return "<h2>Headline numbers</h2>" + table_html([(k, fmt(v)) for k, v in rows])


def _progress(ctx: ReportContext):
    """Load (once) the progress analysis, its phases and figures; None when not analysed."""
    if "progress" not in ctx.cache:
        if not (ctx.path / "analysis" / "analysis_meta.json").is_file():
            ctx.cache["progress"] = None
        else:
            from grokscope.analysis import detect_phases, load_analysis
            from grokscope.figures import write_progress_figures

            analysis = load_analysis(ctx.path)
            ctx.cache["progress"] = (
                analysis,
                detect_phases(analysis.progress),
                write_progress_figures(ctx.path),
            )
    return ctx.cache["progress"]


def section_progress_summary(ctx: ReportContext) -> str | None:
    got = _progress(ctx)
    if got is None:
        if ctx.config.task.kind == "modular":
            return (
                "<h2>Progress measures</h2><p>Not computed yet: run "
                f"<code>grokscope analyze {esc(ctx.path)}</code> and then the report again.</p>"
            )
        return None
    analysis, phases, _ = got
    key, pr = analysis.key, analysis.progress
    rows = [
        ("key frequencies", ", ".join(map(str, key.key_freqs)) or "none found (has the run grokked?)"),
        ("  found on", f"checkpoint {key.step} ({key.source})"),
        (
            "neurons explained by one frequency",
            f"{key.frac_neurons_explained:.0%} (fraction of variance >= {key.threshold:g})",
        ),
        (
            "final restricted loss (train / test)",
            f"{fmt(pr['restricted_loss_train'][-1])} / {fmt(pr['restricted_loss_test'][-1])}",
        ),
        ("final excluded loss (train)", fmt(float(pr["excluded_loss_train"][-1]))),
        (
            "Gini W_E, W_L: first → last",
            f"{pr['gini_W_E'][0]:.3f} → {pr['gini_W_E'][-1]:.3f}, {pr['gini_W_L'][0]:.3f} → {pr['gini_W_L'][-1]:.3f}",
        ),
        (
            "sum of squared weights: max → last",
            f"{pr['sum_sq_weights'].max():.4g} → {pr['sum_sq_weights'][-1]:.4g}",
        ),
        ("checkpoints analysed", f"{len(pr['step'])} (steps {pr['step'][0]}–{pr['step'][-1]})"),
    ]
    intro = (
        "<h2>Progress measures</h2><p>The network learns modular addition with a Fourier-multiplication "
        "algorithm (Nanda et al. 2023): it embeds a and b as cos/sin of a few <em>key frequencies</em> k, "
        "multiplies them into cos(k(a+b)) and sin(k(a+b)) in the MLP, and reads the answer c off "
        "cos(k(a+b−c)). The measures below track that circuit at every checkpoint.</p>"
    )
    return intro + table_html(rows)


def section_phases(ctx: ReportContext) -> str | None:
    got = _progress(ctx)
    if got is None:
        return None
    _, phases, _ = got
    from grokscope.analysis import phases as phase_rule

    items = []
    spans = phases.spans()
    for name, start, end in spans:
        items.append(f"<li><b>{esc(name)}</b>: steps {start} – {end}</li>")
    if not spans:
        items.append("<li>Train accuracy never reached 99%: still memorizing.</li>")
    elif phases.cleanup_start is None:
        items.append(
            "<li>Test loss has not fallen tenfold from its peak: no grokking yet, so no cleanup.</li>"
        )
    rule = esc("\n\n".join((phase_rule.__doc__ or "").split("\n\n")[1:4]).replace("**", ""))
    return (
        "<h2>Phases</h2><p>Training goes through three phases. <b>Memorization</b>: the network fits the "
        "training pairs by rote. <b>Circuit formation</b>: the Fourier circuit grows while test loss stays "
        "high. <b>Cleanup</b>: weight decay removes the memorizing parts and test loss drops — grokking.</p>"
        f"<ul>{''.join(items)}</ul><details><summary>How the phases are located</summary>"
        f'<p style="white-space:pre-line">{rule}</p></details>'
    )


def section_progress_figures(ctx: ReportContext) -> str | None:
    got = _progress(ctx)
    if got is None:
        return None
    _, _, figures = got
    return "<h2>Figures</h2>" + "".join(figure_block(f.title, f.explanation, f.path) for f in figures)


SECTIONS: list[Section] = [
    section_config,
    section_training,
    section_progress_summary,
    section_phases,
    section_progress_figures,
]


def register_section(section: Section, before: Section | None = None) -> None:
    """Add a section (at the end, or before another one); idempotent."""
    if section in SECTIONS:
        return
    if before is not None and before in SECTIONS:
        SECTIONS.insert(SECTIONS.index(before), section)
    else:
        SECTIONS.append(section)


# probes, lens, PCA, embedding-space views (issue 5); imported lazily
register_section(lambda c: __import__("grokscope.interp.report").interp.report.interp_section(c))

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45} h1{margin-bottom:0} table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top} th{background:#f6f6f6}
figure{margin:1.5em 0;border-top:1px solid #eee} figure img{max-width:100%} figcaption{color:#444;max-width:80ch}
pre{background:#f6f6f6;padding:.6em;overflow:auto} code{background:#f3f3f3;padding:0 .2em}
"""


def build_report(path: str | Path, sections: list[Section] | None = None) -> str:
    """The report's HTML for the run folder at `path`."""
    from grokscope.run import Run

    run = Run.open(path)
    ctx = ReportContext(Path(path), run, run.config, run.read_metrics())
    parts = []
    for section in sections if sections is not None else SECTIONS:
        out = section(ctx)
        if out:
            parts.append(f"<section>{out}</section>")
    title = f"grokscope report: {ctx.config.name}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>Run folder <code>{esc(ctx.path)}</code>, "
        f"task <code>{esc(json.dumps(ctx.run.raw_config().get('task', {})))}</code></p>"
        + "".join(parts)
        + "</body></html>"
    )


def write_report(path: str | Path) -> Path:
    """Write `DIR/report.html` and return its path."""
    from grokscope.files import atomic_write_text

    text = build_report(path)
    target = Path(path) / "report.html"
    atomic_write_text(target, text)
    return target
