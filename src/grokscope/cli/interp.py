"""`grokscope probe | lens | pca | embspace | export-tl DIR ...`: the interpretability verbs.

Each handler opens the run, calls one study of `grokscope.interp` with its options dataclass (the
flags are made from it), renders the study's registered figures and prints a summary. Heavy
imports happen inside the handlers.
"""

from __future__ import annotations

from pathlib import Path

from grokscope.cli.options import add_options, options_from_args
from grokscope.interp.options import EmbspaceOptions, LensOptions, PCAOptions, ProbeOptions


def register(sub) -> None:
    p = sub.add_parser("probe", help="fit linear probes from a hook to a label, with baselines")
    p.add_argument("dir", help="run folder")
    add_options(p, ProbeOptions)
    p.set_defaults(handler=cmd_probe)

    p = sub.add_parser("lens", help="logit lens and tuned lens on residual-stream hooks")
    p.add_argument("dir", help="run folder")
    add_options(p, LensOptions)
    p.set_defaults(handler=cmd_lens)

    p = sub.add_parser("pca", help="PCA of token representations across checkpoints (+ Fourier circles)")
    p.add_argument("dir", help="run folder")
    add_options(p, PCAOptions)
    p.set_defaults(handler=cmd_pca)

    p = sub.add_parser(
        "embspace", help="per-head QK/OV token tables and neuron token profiles (Dar et al. 2023)"
    )
    p.add_argument("dir", help="run folder")
    add_options(p, EmbspaceOptions)
    p.set_defaults(handler=cmd_embspace)

    p = sub.add_parser("export-tl", help="export a checkpoint to TransformerLens and check its logits")
    p.add_argument("dir")
    p.add_argument("--step", type=int)
    p.add_argument("--out", help="folder for config.json + weights.safetensors (default DIR/analysis/tl)")
    p.set_defaults(handler=cmd_export_tl)


def _open(args):
    import torch

    from grokscope.run import Run

    torch.set_num_threads(1)  # small fits: thread start-up costs more than it saves
    return Run.open(args.dir)


# ----------------------------------------------------------------------------- probe


def cmd_probe(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.interp.io import format_table, safe_name
    from grokscope.interp.probes import GEOMETRY_COLUMNS, probe_run, summary_rows

    o = options_from_args(ProbeOptions, args)
    run = _open(args)
    result = probe_run(run, o)
    rows, geo, steps = result.rows, result.geometry, result.steps
    name = safe_name(o.label)
    last = steps[-1]
    final = [r for r in rows if r["step"] == last]
    render_figure("probe_by_position", run.path, key=name)  # from the merged table's last step
    if len(steps) > 1:
        render_figure("probe_by_step", run.path, key=name)

    shown, rule = summary_rows(final)
    cols = ["hook", "label", "position", "metric", "score", "majority"]
    if o.baselines:
        cols += ["embed", "control", "selectivity"]
    print(
        f"{run.path} step {last}: probes for {o.label!r}, fitted on {result.n_fit} {o.fit!r} examples, "
        f"scored on {result.n_score} {o.score!r} examples; {rule}"
    )
    print(format_table(shown, cols))
    if result.skipped:
        print(f"(skipped label columns constant on the fit examples: {', '.join(result.skipped)})")
    if geo:
        keep = {(r["label"], r["position"]) for r in shown if r["hook"] == o.hook[0]}
        g = [r for r in geo if r["step"] == last and (r["label"], r["position"]) in keep]
        if g:
            print(
                f"\nprobe geometry (a = {o.hook[0]}) at those positions; cosine of probe directions, "
                f"random |cos| mean {g[0]['random_abs_cos_mean']:.3f}, 99th pct {g[0]['random_abs_cos_p99']:.3f}"
            )
            print(format_table(g, list(GEOMETRY_COLUMNS[1:])))
    if len(steps) > 1:
        print(f"\n{len(steps)} checkpoints probed ({steps[0]}..{last}); by-step figure written")
    print(f"\nwrote {result.table} and figures")
    return 0


# ----------------------------------------------------------------------------- lens


def cmd_lens(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.interp.io import format_table
    from grokscope.interp.lens import lens_run

    o = options_from_args(LensOptions, args)
    run = _open(args)
    rows, steps, n_fit, n_score = lens_run(run, o)
    final = [r for r in rows if r["step"] == steps[-1]]
    render_figure("lens", run.path)
    print(
        f"{run.path} step {steps[-1]}: lens on {n_score} {o.score!r} examples (tuned lens fitted on "
        f"{n_fit} {o.fit!r} examples); all loss positions together"
    )
    print(format_table([r for r in final if r["position"] == "all"], ["lens", "hook", "acc", "loss"]))
    print(f"\nper-position rows in {run.path}/analysis/lens/lens.csv")
    return 0


# ----------------------------------------------------------------------------- pca


def cmd_pca(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.figures.interp import pca_gif
    from grokscope.figures.render import save_gif
    from grokscope.interp.pca import pca_run

    o = options_from_args(PCAOptions, args)
    run = _open(args)
    r = pca_run(run, o)
    out = run.subdir("analysis") / "pca"
    render_figure("pca", run.path, key=r.tag)
    if len(r.steps) > 1:
        render_figure("pca_explained", run.path, key=r.tag)
        if o.gif:
            save_gif(pca_gif(run.path, r.tag), out / f"{r.tag}_pca.gif")
    print(
        f"{run.path}: PCA of {o.of} over {len(r.steps)} checkpoints ({r.steps[0]}..{r.steps[-1]}), basis {o.basis}"
    )
    table = r.explained
    for row in (
        table[i] for i in sorted(set(range(0, len(table), max(1, len(table) // 8))) | {len(table) - 1})
    ):
        k = sum(1 for c in row if c.startswith("pc"))
        pcs = " ".join(f"{row[f'pc{j + 1}']:.3f}" for j in range(min(4, k)))
        print(f"  step {row['step']:>7}: explained variance PC1.. {pcs}")
    if r.radius_cv or (o.of == "W_E" and getattr(run.config.task, "kind", None) == "modular"):
        render_figure("circles", run.path)
        print(
            f"key frequencies at step {r.steps[-1]}: {r.freqs} (W_E norm share "
            + ", ".join(f"{x:.2f}" for x in r.norm_share)
            + "); circle radius CV (0 = perfect circle): "
            + ", ".join(f"{c['radius_cv']:.3f}" for c in r.radius_cv[-len(r.freqs) :] if r.freqs)
        )
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- embedding space


def cmd_embspace(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.interp.embedding_space import embspace_run

    run = _open(args)
    step, n_layers = embspace_run(run, options_from_args(EmbspaceOptions, args))
    for layer in range(n_layers):
        for figure in ("embspace_qk", "embspace_ov", "embspace_neurons"):
            render_figure(figure, run.path, key=f"L{layer}")
    print(
        f"{run.path} step {step}: embedding-space heatmaps for {n_layers} layer(s) in {run.path}/analysis/embspace"
    )
    return 0


# ----------------------------------------------------------------------------- TransformerLens


def cmd_export_tl(args) -> int:
    from grokscope.interp.export_tl import export_run

    out = export_run(args.dir, step=args.step, out=Path(args.out) if args.out else None)
    print(
        f"TransformerLens 4.x model matches grokscope logits on {out.n_examples} test examples: max |diff| "
        f"{out.max_diff:.2e} with both in float64, {out.max_diff_fp32:.2e} in float32"
    )
    print(
        f"wrote {out.path}/config.json and weights.safetensors; load with "
        "transformer_lens.model_bridge.sources.native.boot(TransformerBridgeConfig.from_dict(config)) and "
        "load_state_dict(convert_tl_checkpoint(weights, cfg))"
    )
    return 0
