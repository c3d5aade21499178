"""`grokscope report DIR`: one self-contained HTML page about a run or a sweep (PNGs inlined, no network).

The report only reads files and walks two registries. Its sections are `ReportSection`s in
`grokscope.registry.REPORT_SECTIONS`, each a function of a `ReportContext` returning HTML, or None
when what it shows is absent. A study's section lists the tables (CSV) it finds in the folder and the
figures of `grokscope.registry.FIGURES` whose input files exist, rendering a figure only when its PNG
is missing or older than its inputs. A later feature adds a section without touching the others:

```python
from grokscope.report import register_section
register_section(lambda ctx: "<h2>Probes</h2>..." if (ctx.path / "analysis/probes.csv").is_file() else None)
```
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grokscope.analysis.phases import GROK_ACC
from grokscope.registry import REPORT_SECTIONS

RUN, SWEEP = "run", "sweep"  # the two kinds of folder a report is made of


@dataclass
class ReportContext:
    path: Path
    run: object | None  # Run (None for a sweep folder)
    config: object | None  # RunConfig (None for a sweep folder)
    metrics: list[dict]
    cache: dict = field(default_factory=dict)  # sections may share computed things here
    kind: str = RUN


Section = Callable[[ReportContext], str | None]


@dataclass(frozen=True)
class ReportSection:
    """A registered section: `build(ctx)` for folders of `kind`, shown in increasing `order`."""

    name: str
    build: Section
    kind: str = RUN
    order: float = 0.0

    def __call__(self, ctx: ReportContext) -> str | None:
        return self.build(ctx)


def is_sweep_folder(path: str | Path) -> bool:
    """A sweep (or length-study) folder: it has sweep.json and is not itself a run folder."""
    path = Path(path)
    return (path / "sweep.json").is_file() and not (path / "config.toml").is_file()


# ---------------------------------------------------------------------------- helpers for sections
def esc(x) -> str:
    return html.escape(str(x))


def img_tag(png: Path | bytes, alt: str = "") -> str:
    """An <img> with the PNG (or a GIF file) inlined as base64 (so the page opens offline, alone)."""
    data = png.read_bytes() if isinstance(png, Path) else png
    mime = "image/gif" if isinstance(png, Path) and png.suffix == ".gif" else "image/png"
    return f'<img alt="{esc(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


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


def csv_table_html(path: Path, caption: str = "", max_rows: int = 200, fold_over: int = 30) -> str:
    """A CSV file as an HTML table, its cells exactly as written; long tables fold into <details>."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return ""
    header, body = rows[0], [r for r in rows[1:] if r]
    shown = body[:max_rows]
    head = "".join(f"<th>{esc(c)}</th>" for c in header)
    cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in shown)
    more = (
        f"<p>First {max_rows} of {len(body)} rows; the rest are in the file.</p>"
        if len(body) > max_rows
        else ""
    )
    label = f"{esc(caption)} <code>{esc(path.name)}</code> ({len(body)} rows)"
    table = f"<table><tr>{head}</tr>{cells}</table>{more}"
    if len(body) > fold_over:
        return f"<details><summary>{label}</summary>{table}</details>"
    return f"<h3>{label}</h3>{table}"


def figure_blocks(ctx: ReportContext, study: str, under: Path | None = None) -> str:
    """The registered figures of `study` that the folder has inputs for (made only when stale);
    with `under`, only those whose PNG lies in that folder."""
    from grokscope.figures import figure_specs

    blocks = []
    for spec in figure_specs(study):
        for inst in spec.instances(ctx.path):
            if under is not None and inst.output.parent != under:
                continue
            png = inst.render()
            if png is not None:
                blocks.append(figure_block(inst.title, spec.explanation, png))
    return "".join(blocks)


def study_section(
    study: str,
    title: str,
    intro: str = "",
    tables: tuple[tuple[str, str], ...] = (),
    body: Section | None = None,
) -> Section:
    """A section builder for one study: its intro, `body` (if any), the CSV tables matching each
    (glob, caption) and its registered figures; None when the folder has none of them."""

    def build(ctx: ReportContext) -> str | None:
        parts = []
        if body is not None and (b := body(ctx)):
            parts.append(b)
        for pattern, caption in tables:
            parts += [csv_table_html(p, caption) for p in sorted(ctx.path.glob(pattern)) if p.is_file()]
        figs = figure_blocks(ctx, study)
        if not parts and not figs:
            return None
        return f"<h2>{esc(title)}</h2>" + (f"<p>{intro}</p>" if intro else "") + "".join(parts) + figs

    build.__name__ = f"section_{study}"
    return build


# ---------------------------------------------------------------------------- run sections
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
    grok = next((r["step"] for r in ctx.metrics if r.get("test_acc", 0) >= GROK_ACC), None)
    if grok is None and not any("test_acc" in r for r in ctx.metrics):
        grok = "unknown (metrics.jsonl records no test accuracy)"
    rows.append((f"step of grokking (first evaluation with test accuracy >= {GROK_ACC:.0%})", fmt(grok)))
    return "<h2>Headline numbers</h2>" + table_html([(k, fmt(v)) for k, v in rows])


def _progress(ctx: ReportContext):
    """Load (once) the progress analysis and its phases; None when not analysed."""
    if "progress" not in ctx.cache:
        if not (ctx.path / "analysis" / "analysis_meta.json").is_file():
            ctx.cache["progress"] = None
        else:
            from grokscope.analysis import load_analysis, load_phases

            ctx.cache["progress"] = (load_analysis(ctx.path), load_phases(ctx.path))
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
    analysis, phases = got
    key, pr = analysis.key, analysis.progress
    rows = [
        ("key frequencies", ", ".join(map(str, key.key_freqs)) or "none found (has the run grokked?)"),
        ("  found on", f"checkpoint {key.step} ({key.source}; rule {key.rule})"),
        *(
            [
                (
                    "  restricted train loss they give (the model's own)",
                    f"{fmt(key.restricted_loss_train)} ({fmt(key.model_loss_train)})",
                )
            ]
            if key.restricted_loss_train is not None
            else []
        ),
        *(
            (
                f"  rule {r}",
                f"{', '.join(map(str, v['key_freqs'])) or 'none'}"
                + (
                    f" → restricted loss {fmt(v['restricted_loss_train'])}"
                    if "restricted_loss_train" in v
                    else ""
                ),
            )
            for r, v in key.by_rule.items()
            if r != key.rule
        ),
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
    _, phases = got
    from grokscope.analysis import phases as phase_rule

    items = []
    spans = phases.spans()
    for name, start, end in spans:
        items.append(f"<li><b>{esc(name)}</b>: steps {start} – {end}</li>")
    if not phases.known:
        items.append(
            "<li>Unknown: the run has one checkpoint and no loss curve (metrics.jsonl), so there is "
            "nothing to locate the phases on. Import its loss curves with it, or more checkpoints.</li>"
        )
    elif not spans:
        items.append("<li>Train accuracy never reached 99%: still memorizing.</li>")
    elif phases.cleanup_start is None:
        items.append(
            "<li>Test loss has not fallen tenfold from its peak: no grokking yet, so no cleanup.</li>"
        )
    where = {"metrics": "the evaluations in metrics.jsonl", "checkpoints": "the checkpoints' progress table"}
    if phases.known:
        items.append(f"<li>Located on {where.get(phases.source, phases.source)}.</li>")
    rule = esc("\n\n".join((phase_rule.__doc__ or "").split("\n\n")[1:4]).replace("**", ""))
    return (
        "<h2>Phases</h2><p>Training goes through three phases. <b>Memorization</b>: the network fits the "
        "training pairs by rote. <b>Circuit formation</b>: the Fourier circuit grows while test loss stays "
        "high. <b>Cleanup</b>: weight decay removes the memorizing parts and test loss drops — grokking.</p>"
        f"<ul>{''.join(items)}</ul><details><summary>How the phases are located</summary>"
        f'<p style="white-space:pre-line">{rule}</p></details>'
    )


def section_progress_figures(ctx: ReportContext) -> str | None:
    if _progress(ctx) is None:
        return None
    blocks = figure_blocks(ctx, "progress")
    return ("<h2>Figures</h2>" + blocks) if blocks else None


def section_interp(ctx: ReportContext) -> str | None:
    """Probes, lenses, PCA, embedding-space views, TL export: tables plus their registered figures."""
    from grokscope.figures import figure_specs
    from grokscope.interp.report import interp_report_parts

    claimed = {inst.output for spec in figure_specs("interp") for inst in spec.instances(ctx.path)}
    parts = []
    for title, folder, body in interp_report_parts(ctx.path):
        figs = figure_blocks(ctx, "interp", under=folder)
        others = [p for p in sorted(folder.iterdir()) if p.suffix in (".png", ".gif") and p not in claimed]
        extra = "".join(
            f"<figure>{img_tag(p, p.name)}<figcaption>{esc(p.name)}</figcaption></figure>" for p in others
        )
        parts.append(f"<h2>{esc(title)}</h2>{body}{figs}{extra}")
    return "".join(parts) or None


section_addition = study_section(
    "addition",
    "Addition: accuracy by operand length",
    "What <code>grokscope eval</code> measured: exact match per (digits of a, digits of b) cell and per "
    "carry class on the train and test sets (<code>exact</code>: teacher-forced, <code>gen_exact</code>: "
    "greedy generation), and with <code>--digits</code> a grid of longer operands.",
    tables=(
        ("analysis/accuracy_by_length.csv", "Accuracy by length and carry class"),
        ("analysis/exact_by_length_*.csv", "Greedy exact match by operand lengths"),
    ),
)


section_interventions = study_section(
    "interventions",
    "Interventions: what the model uses",
    "What <code>grokscope ablate</code>, <code>patch</code> and <code>circuit</code> measured: the loss "
    "when part of a hook is ablated, against random parts of the same size; which nodes and edges carry "
    "the clean-corrupted logit difference of counterfactual pairs; the edge circuit that keeps it, and how "
    "the components' attribution forms over training.",
    tables=(
        ("analysis/interventions/ablation.csv", "Ablations"),
        ("analysis/interventions/circuit_curve.csv", "Circuit faithfulness against size"),
    ),
)


# ---------------------------------------------------------------------------- sweep sections
def section_sweep_overview(ctx: ReportContext) -> str | None:
    manifest = json.loads((ctx.path / "sweep.json").read_text() or "{}")
    trials = manifest.get("trials", [])
    status: dict[str, int] = {}
    if (ctx.path / "trials.csv").is_file():
        with open(ctx.path / "trials.csv", newline="") as f:
            for r in csv.DictReader(f):
                status[r.get("status", "")] = status.get(r.get("status", ""), 0) + 1
    rows = [
        ("trials", len(trials)),
        ("swept settings", ", ".join(manifest.get("swept_keys", [])) or "—"),
        ("base", manifest.get("base", "—")),
    ] + [(f"trials {k or 'unknown'}", v) for k, v in sorted(status.items())]
    return "<h2>Sweep</h2>" + table_html([(k, fmt(v)) for k, v in rows])


section_sweeps = study_section(
    "sweeps",
    "Sweep summary",
    "One row per trial (<code>grokscope summarize</code>): its overrides, seed, status and headline "
    f"numbers; <code>grok_step</code> is the first evaluation with test accuracy >= {GROK_ACC:.0%}.",
    tables=(("summary.csv", "Trials"),),
)


def _lengths_md(ctx: ReportContext) -> str | None:
    md = ctx.path / "lengths.md"
    return f"<pre>{esc(md.read_text())}</pre>" if md.is_file() else None


section_lengths = study_section(
    "lengths",
    "Length generalization",
    "Each positional encoding trained on short operands, read with greedy decoding on a grid of longer "
    "ones (<code>grokscope lengths</code>).",
    tables=(("lengths_summary.csv", "Mean, spread, min and max over seeds per cell"),),
    body=_lengths_md,
)


def register_section(
    section: Section, before: Section | None = None, kind: str = RUN, name: str | None = None
) -> ReportSection:
    """Add a section (at the end, or just before another one); idempotent."""
    for _, s in REPORT_SECTIONS.items():
        if s.build is section or s is section:
            return s
    mine = [s for _, s in REPORT_SECTIONS.items() if s.kind == kind]
    ahead = next((s for s in mine if before is not None and (s.build is before or s is before)), None)
    order = ahead.order - 0.5 if ahead is not None else max((s.order for s in mine), default=0) + 10
    name = name or f"{getattr(section, '__qualname__', 'section')}@{id(section):x}"
    entry = ReportSection(name, section, kind, order)
    REPORT_SECTIONS.register(name, entry)
    return entry


def report_sections(kind: str = RUN) -> list[ReportSection]:
    """The registered sections for folders of `kind`, in order."""
    return sorted((s for _, s in REPORT_SECTIONS.items() if s.kind == kind), key=lambda s: s.order)


for _order, (_name, _build, _kind) in enumerate(
    [
        ("config", section_config, RUN),
        ("training", section_training, RUN),
        ("progress_summary", section_progress_summary, RUN),
        ("phases", section_phases, RUN),
        ("progress_figures", section_progress_figures, RUN),
        ("interp", section_interp, RUN),
        ("interventions", section_interventions, RUN),
        ("addition", section_addition, RUN),
        ("sweep", section_sweep_overview, SWEEP),
        ("sweeps", section_sweeps, SWEEP),
        ("lengths", section_lengths, SWEEP),
    ]
):
    REPORT_SECTIONS.register(_name, ReportSection(_name, _build, _kind, float(10 * (_order + 1))))


def section_stability(ctx: ReportContext) -> str | None:
    """The numerical-stability figure of a run that is not analysed (an analysed run shows it with
    the progress figures, beside the loss curves)."""
    if _progress(ctx) is not None:
        return None
    from grokscope.registry import FIGURES

    spec = FIGURES.get("stability")
    blocks = [
        figure_block(inst.title, spec.explanation, png)
        for inst in spec.instances(ctx.path)
        if (png := inst.render()) is not None
    ]
    return ("<h2>Numerical stability</h2>" + "".join(blocks)) if blocks else None


register_section(section_stability, before=section_progress_summary, name="stability")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45} h1{margin-bottom:0} table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top} th{background:#f6f6f6}
details{margin:.5em 0} figure{margin:1.5em 0;border-top:1px solid #eee} figure img{max-width:100%} figcaption{color:#444;max-width:80ch}
pre{background:#f6f6f6;padding:.6em;overflow:auto} code{background:#f3f3f3;padding:0 .2em}
"""


def build_report(path: str | Path, sections: list[Section] | None = None) -> str:
    """The report's HTML for the run folder or sweep folder at `path`."""
    path = Path(path)
    if is_sweep_folder(path):
        from grokscope.sweep.folder import SweepFolder

        folder = SweepFolder(path)
        ctx = ReportContext(folder.path, None, None, [], kind=SWEEP)
        name = folder.manifest().get("name", path.name)
        title = f"grokscope report: sweep {name}"
        subtitle = f"Sweep folder <code>{esc(ctx.path)}</code>"
    else:
        from grokscope.run import Run

        run = Run.open(path)
        ctx = ReportContext(path, run, run.config, run.read_metrics())
        title = f"grokscope report: {ctx.config.name}"
        subtitle = (
            f"Run folder <code>{esc(ctx.path)}</code>, "
            f"task <code>{esc(json.dumps(ctx.run.raw_config().get('task', {})))}</code>"
        )
    parts = []
    for section in sections if sections is not None else report_sections(ctx.kind):
        out = section(ctx)
        if out:
            parts.append(f"<section>{out}</section>")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>{subtitle}</p>"
        + "".join(parts)
        + "</body></html>"
    )


def write_report(path: str | Path) -> Path:
    """Write `DIR/report.html` (DIR: a run or sweep folder) and return its path."""
    from grokscope.files import atomic_write_text

    text = build_report(path)
    target = Path(path) / "report.html"
    atomic_write_text(target, text)
    return target
