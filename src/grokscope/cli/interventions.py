"""`grokscope ablate | patch | circuit RUN ...`: causal interventions on a run's checkpoints.

Each handler opens the run, calls one study of `grokscope.interp.interventions` with its options
dataclass (the flags are made from it), renders the study's registered figures and prints a summary.
"""

from __future__ import annotations

from grokscope.cli.options import add_options, options_from_args
from grokscope.interp.options import AblateOptions, CircuitOptions, PatchOptions


def register(sub) -> None:
    p = sub.add_parser("ablate", help="ablate part of a hook (heads, neurons, positions, a subspace)")
    p.add_argument("dir", help="run folder")
    add_options(p, AblateOptions)
    p.set_defaults(handler=cmd_ablate)

    p = sub.add_parser("patch", help="activation and attribution patching over nodes and edges")
    p.add_argument("dir", help="run folder")
    add_options(p, PatchOptions)
    p.set_defaults(handler=cmd_patch)

    p = sub.add_parser("circuit", help="edge-level circuit discovery (and its formation over checkpoints)")
    p.add_argument("dir", help="run folder")
    add_options(p, CircuitOptions)
    p.set_defaults(handler=cmd_circuit)


def _open(args):
    from grokscope.run import Run

    return Run.open(args.dir)


def cmd_ablate(args) -> int:
    from grokscope.interp.interventions import ablate_run
    from grokscope.interp.io import format_table

    o = options_from_args(AblateOptions, args)
    run = _open(args)
    rows = ablate_run(run, o)
    print(f"{run.path}: {o.method} ablation on {rows[0]['n']} {o.set_name!r} examples")
    cols = ["step", "part", "size", "clean_acc", "acc", "d_loss", "exact"]
    if o.controls:
        cols += ["control_acc", "control_acc_sd", "control_exact"]
    print(format_table(rows, cols))
    print(f"\nwrote {run.analysis_dir}/interventions/ablation.csv")
    return 0


def cmd_patch(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.interp.interventions import patch_run
    from grokscope.interp.io import format_table

    o = options_from_args(PatchOptions, args)
    run = _open(args)
    res = patch_run(run, o)
    render_figure("patching", run.path)
    last = res.steps[-1]
    print(f"{run.path} step {last}: patching on {res.n_pairs} pairs ({res.description})")
    print(
        format_table(
            [s for s in res.summary if s["step"] == last],
            ["mode", "m_clean", "m_corrupt", "node_corr", "edge_corr"],
        )
    )
    for mode in sorted({r["mode"] for r in res.nodes}):
        key = "exact_effect" if o.exact else "attribution_effect"
        top = sorted(
            (r for r in res.nodes if r["step"] == last and r["mode"] == mode and r[key] is not None),
            key=lambda r: -abs(r[key]),
        )[:8]
        print(f"\n{mode}: largest node effects ({key})")
        print(format_table(top, ["node", "position", "exact_effect", "attribution_effect"]))
    print(f"\nwrote {run.analysis_dir}/interventions/patching.csv, patching_edges.csv and the heatmap")
    return 0


def cmd_circuit(args) -> int:
    from grokscope.figures import render_figure
    from grokscope.interp.interventions import circuit_run

    o = options_from_args(CircuitOptions, args)
    run = _open(args)
    c, summary, formation = circuit_run(run, o)
    render_figure("circuit", run.path)
    rnd = summary["random_faithfulness"]
    print(
        f"{run.path} step {summary['step']}: circuit of {c.size} of {summary['n_edges']} edges, faithfulness "
        f"{c.faithfulness:.4f} (threshold {o.threshold}; random circuits of that size: "
        f"{'-' if rnd is None else f'{rnd:.4f}'}) on {summary['n_pairs']} pairs ({summary['pairs']})"
    )
    for name in c.edge_names():
        print(f"  {name}  (attribution {summary['scores'][name]:+.4f})")
    if formation is not None:
        render_figure("circuit_formation", run.path)
        n_steps = len({r["step"] for r in formation})
        print(f"\nattribution at {n_steps} checkpoints: {run.analysis_dir}/interventions/formation.csv")
    print(f"wrote {run.analysis_dir}/interventions/circuit.json, circuit_curve.csv and figures")
    return 0
