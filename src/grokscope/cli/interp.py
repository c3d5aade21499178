"""`grokscope probe | lens | pca | embspace | export-tl DIR ...`: the interpretability verbs.

Each handler loads the run, computes one table, prints it, and writes CSVs and figures under
DIR/analysis/{probes,lens,pca,embspace,tl}/. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("probe", help="fit linear probes from a hook to a label, with baselines")
    _common(p)
    p.add_argument(
        "--hook",
        action="append",
        required=True,
        metavar="HOOK",
        help="hook name, e.g. blocks.0.hook_resid_mid (repeat for several)",
    )
    p.add_argument(
        "--label", required=True, help="label NAME or NAME.COLUMN (e.g. carry_out, carry_out.2, token.0)"
    )
    p.add_argument("--position", default="all", help="'all' (default), 'loss', or a comma list of positions")
    p.add_argument(
        "--l2", type=float, default=1e-3, help="L2 penalty on standardised features (default 1e-3)"
    )
    p.add_argument("--backend", default="torch", choices=("torch", "sklearn"))
    p.add_argument("--no-baselines", action="store_true", help="skip the hook_embed and control-task probes")
    p.set_defaults(handler=cmd_probe)

    p = sub.add_parser("lens", help="logit lens and tuned lens on residual-stream hooks")
    _common(p)
    p.add_argument(
        "--hook", action="append", metavar="HOOK", help="residual hook (default: every resid_pre/mid/post)"
    )
    p.add_argument("--no-tuned", action="store_true", help="logit lens only")
    p.set_defaults(handler=cmd_lens)

    p = sub.add_parser("pca", help="PCA of token representations across checkpoints (+ Fourier circles)")
    p.add_argument("dir")
    p.add_argument("--of", default="W_E", help="W_E (default) or a hook name (mean activation per token)")
    p.add_argument("--position", type=int, default=0, help="position the hook is read at")
    p.add_argument(
        "--group-position", type=int, help="position whose token groups the examples (default --position)"
    )
    p.add_argument(
        "--step", default="every:12", help="'all', 'every:N' (default every:12), 'last', or a list"
    )
    p.add_argument("--basis", default="each", choices=("each", "final"))
    p.add_argument("--data", default="test", help="example set for hook activations (default test)")
    p.add_argument("--no-gif", action="store_true")
    p.set_defaults(handler=cmd_pca)

    p = sub.add_parser(
        "embspace", help="per-head QK/OV token tables and neuron token profiles (Dar et al. 2023)"
    )
    p.add_argument("dir")
    p.add_argument("--step", default="last")
    p.add_argument("--neurons", type=int, default=32, help="neurons shown (largest output norms)")
    p.set_defaults(handler=cmd_embspace)

    p = sub.add_parser("export-tl", help="export a checkpoint to TransformerLens and check its logits")
    p.add_argument("dir")
    p.add_argument("--step", type=int)
    p.add_argument("--out", help="folder for config.json + weights.safetensors (default DIR/analysis/tl)")
    p.set_defaults(handler=cmd_export_tl)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="run folder")
    p.add_argument(
        "--step", default="last", help="'last' (default), 'all', 'every:N', or a comma list of steps"
    )
    p.add_argument("--fit", default="train", help="example set the probe/lens is fitted on (default train)")
    p.add_argument("--score", default="test", help="example set it is scored on (default test)")
    p.add_argument("--max-examples", type=int, default=5000, help="cap per set (default 5000)")
    p.add_argument("--seed", type=int, default=0)


def _setup(args):
    import torch

    from grokscope.interp.activations import example_sets, parse_steps
    from grokscope.run import Run

    torch.set_num_threads(1)  # small fits: thread start-up costs more than it saves
    run = Run.open(args.dir)
    config = run.config
    task = run.task
    steps = parse_steps(args.step, run.readable_steps())
    fit, score = (
        example_sets(task, args.fit, args.score, args.max_examples, args.seed)
        if hasattr(args, "fit")
        else (None, None)
    )
    return run, config, task, steps, fit, score


# ----------------------------------------------------------------------------- probe


def cmd_probe(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.interp.activations import check_hooks, parse_positions
    from grokscope.interp.io import format_table, merge_csv, safe_name
    from grokscope.interp.labels import resolve_label
    from grokscope.interp.probes import probe_geometry, probe_model, summary_rows

    run, config, task, steps, fit, score = _setup(args)
    resolve_label(fit, args.label)  # fail fast on a bad label
    positions = parse_positions(args.position, fit.tokens.shape[1], task.loss_positions)
    rows, geo = [], []
    for step, model in run.models(steps):
        check_hooks(model, args.hook)
        study = probe_model(
            model,
            fit,
            score,
            args.hook,
            args.label,
            positions,
            l2=args.l2,
            seed=args.seed,
            baselines=not args.no_baselines,
            backend=args.backend,
            step=step,
            loss_positions=task.loss_positions,
        )
        rows += study.rows
        for other in args.hook[1:]:
            geo += probe_geometry(study, args.hook[0], other, step=step)
    out = run.subdir("analysis") / "probes"
    name = safe_name(args.label)
    merge_csv(out / f"{name}.csv", rows, ("step", "hook", "position", "label"))
    if geo:
        merge_csv(out / f"{name}_geometry.csv", geo, ("step", "hook_a", "hook_b", "position", "label"))
    last = steps[-1]
    final = [r for r in rows if r["step"] == last]
    render_figure("probe_by_position", run.path, key=name)  # from the merged table's last step
    if len(steps) > 1:
        render_figure("probe_by_step", run.path, key=name)

    shown, rule = summary_rows(final)
    cols = ["hook", "label", "position", "metric", "score", "majority"]
    if not args.no_baselines:
        cols += ["embed", "control", "selectivity"]
    print(
        f"{run.path} step {last}: probes for {args.label!r}, fitted on {len(fit)} {args.fit!r} examples, "
        f"scored on {len(score)} {args.score!r} examples; {rule}"
    )
    print(format_table(shown, cols))
    if study.skipped:
        print(f"(skipped label columns constant on the fit examples: {', '.join(study.skipped)})")
    if geo:
        keep = {(r["label"], r["position"]) for r in shown if r["hook"] == args.hook[0]}
        g = [r for r in geo if r["step"] == last and (r["label"], r["position"]) in keep]
        if g:
            print(
                f"\nprobe geometry (a = {args.hook[0]}) at those positions; cosine of probe directions, "
                f"random |cos| mean {g[0]['random_abs_cos_mean']:.3f}, 99th pct {g[0]['random_abs_cos_p99']:.3f}"
            )
            gcols = [
                "hook_b",
                "label",
                "position",
                "cosine",
                "score_a",
                "score_b",
                "a_probe_on_b",
                "b_probe_on_a",
            ]
            print(format_table(g, gcols))
    if len(steps) > 1:
        print(f"\n{len(steps)} checkpoints probed ({steps[0]}..{last}); by-step figure written")
    print(f"\nwrote {out}/{name}.csv and figures")
    return 0


# ----------------------------------------------------------------------------- lens


def cmd_lens(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.interp.activations import check_hooks
    from grokscope.interp.io import format_table, merge_csv
    from grokscope.interp.lens import default_lens_hooks, lens_rows

    run, config, task, steps, fit, score = _setup(args)
    rows = []
    for step, model in run.models(steps):
        hooks = args.hook or default_lens_hooks(model)
        check_hooks(model, hooks)
        rows += lens_rows(model, fit, score, hooks, task.loss_positions, tuned=not args.no_tuned, step=step)
    out = run.subdir("analysis") / "lens"
    merge_csv(out / "lens.csv", rows, ("step", "lens", "hook", "position"))
    last = steps[-1]
    final = [r for r in rows if r["step"] == last]
    render_figure("lens", run.path)
    print(
        f"{run.path} step {last}: lens on {len(score)} {args.score!r} examples (tuned lens fitted on "
        f"{len(fit)} {args.fit!r} examples); all loss positions together"
    )
    print(format_table([r for r in final if r["position"] == "all"], ["lens", "hook", "acc", "loss"]))
    print(f"\nper-position rows in {out}/lens.csv")
    return 0


# ----------------------------------------------------------------------------- pca


def cmd_pca(args) -> int:
    import json

    import torch

    from grokscope.errors import GrokscopeError
    from grokscope.figures import render_figure
    from grokscope.figures.interp import CIRCLES_DATA, PCA_DATA, pca_gif
    from grokscope.figures.render import save_gif
    from grokscope.files import write_tensors
    from grokscope.interp import pca as P
    from grokscope.interp.activations import check_hooks, parse_steps
    from grokscope.interp.io import merge_csv, safe_name
    from grokscope.run import Run

    run = Run.open(args.dir)
    config = run.config
    task = run.task
    steps = parse_steps(args.step, run.readable_steps())
    batch = None
    if args.of != "W_E":
        sets = task.eval_sets()
        if args.data not in sets:
            raise GrokscopeError(f"the task has no example set {args.data!r}; it has {', '.join(sets)}")
        batch = sets[args.data]
        if not -batch.tokens.shape[1] <= args.position < batch.tokens.shape[1]:
            raise GrokscopeError(f"position {args.position} is outside the context ({batch.tokens.shape[1]})")
    modular = getattr(config.task, "kind", None) == "modular"
    names = task.token_names()
    rows_by_step, W_numbers, tokens = {}, {}, None
    for step, model in run.models(steps):
        if args.of != "W_E":
            check_hooks(model, [args.of])
        rows, tokens = P.token_rows(model, args.of, batch, args.position, args.group_position)
        if modular and args.of == "W_E":
            rows, tokens = rows[: task.p], tokens[: task.p]  # the numbers; '=' is not on the circle
        rows_by_step[step] = rows
        if modular:
            W_numbers[step] = model.embed.W_E.detach()[: task.p].double()
    result = P.pca_over_checkpoints(rows_by_step, tokens, k=6, basis=args.basis)
    out = run.subdir("analysis") / "pca"
    tag = safe_name(args.of if args.of == "W_E" else f"{args.of}@{args.position}")
    labels = [names[t] for t in tokens.tolist()]
    table = [
        {
            "of": tag,
            "step": s,
            **{f"pc{j + 1}": result.explained[i, j].item() for j in range(result.explained.shape[1])},
        }
        for i, s in enumerate(result.steps)
    ]
    merge_csv(out / f"{tag}_explained.csv", table, ("of", "step"))
    pca_tensors = {
        "steps": torch.tensor(list(result.steps), dtype=torch.int64),
        "projections": result.projections,  # [checkpoints, tokens, k]
        "explained": result.explained,  # [checkpoints, k]
    }
    write_tensors(run.path / PCA_DATA.format(key=tag), pca_tensors, {"labels": json.dumps(labels)})
    render_figure("pca", run.path, key=tag)
    if len(steps) > 1:
        render_figure("pca_explained", run.path, key=tag)
        if not args.no_gif:
            save_gif(pca_gif(run.path, tag), out / f"{tag}_pca.gif")
    print(
        f"{run.path}: PCA of {args.of} over {len(steps)} checkpoints ({steps[0]}..{steps[-1]}), basis {args.basis}"
    )
    shown = sorted(set(range(0, len(table), max(1, len(table) // 8))) | {len(table) - 1})
    for row in (table[i] for i in shown):
        pcs = " ".join(f"{row[f'pc{j + 1}']:.3f}" for j in range(min(4, result.explained.shape[1])))
        print(f"  step {row['step']:>7}: explained variance PC1.. {pcs}")
    if modular and args.of == "W_E":
        last = steps[-1]
        freqs = P.circle_frequencies(model, task)  # `model` holds the last step's weights
        circ = [P.circle_projections(W_numbers[s], freqs) for s in steps]
        circles = {"projections": circ[-1], "freqs": torch.tensor(freqs, dtype=torch.int64)}
        write_tensors(run.path / CIRCLES_DATA, circles, {"step": str(last)})
        render_figure("circles", run.path)
        radius_cv = [
            {
                "step": s,
                "freq": f,
                "radius_cv": (c[i].norm(dim=1).std() / c[i].norm(dim=1).mean()).item(),
                "radius": c[i].norm(dim=1).mean().item(),
            }
            for s, c in zip(steps, circ, strict=True)
            for i, f in enumerate(freqs)
        ]
        merge_csv(out / "circles.csv", radius_cv, ("step", "freq"))
        norms = P.embedding_frequency_norms(W_numbers[last])
        print(
            f"key frequencies at step {last}: {freqs} (W_E norm share "
            + ", ".join(f"{(norms[f - 1] / norms.sum()).item():.2f}" for f in freqs)
            + "); circle radius CV (0 = perfect circle): "
            + ", ".join(f"{r['radius_cv']:.3f}" for r in radius_cv[-len(freqs) :])
        )
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- embedding space


def cmd_embspace(args) -> int:
    import json

    from grokscope.figures import render_figure
    from grokscope.figures.interp import EMBSPACE_DATA
    from grokscope.files import write_tensors
    from grokscope.interp import embedding_space as ES
    from grokscope.interp.activations import parse_steps
    from grokscope.run import Run

    run = Run.open(args.dir)
    task = run.task
    steps = parse_steps(args.step, run.readable_steps())
    out = run.subdir("analysis") / "embspace"
    names = task.token_names()
    out_names = names[: task.d_vocab_out]
    for step, model in run.models(steps[-1:]):
        meta = {"step": str(step), "names": json.dumps(names), "out_names": json.dumps(out_names)}
        for layer in range(len(model.blocks)):
            qk, ov = ES.head_tables(model, layer)
            tables = {"qk": qk.float(), "ov": ov.float()}  # [head_index, d_vocab, d_vocab(_out)]
            if not model.cfg.attn_only:
                idx = ES.top_neurons(model, layer, args.neurons)
                win, wout = ES.neuron_profiles(model, layer)
                tables |= {
                    "neuron_in": win[:, idx].T.float(),
                    "neuron_out": wout[idx].float(),
                    "neuron_ids": idx,
                }
            write_tensors(run.path / EMBSPACE_DATA.format(key=f"L{layer}"), tables, meta)
            for figure in ("embspace_qk", "embspace_ov", "embspace_neurons"):
                render_figure(figure, run.path, key=f"L{layer}")
        print(f"{run.path} step {step}: embedding-space heatmaps for {len(model.blocks)} layer(s) in {out}")
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
