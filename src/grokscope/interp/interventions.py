"""The intervention studies of a run folder: `ablate`, `patch`, `circuit` and circuit formation.

Each is a function of (Run, options) that picks checkpoints and examples, builds the counterfactual
pairs, calls the library (ablation, patching, attribution, circuits), and writes its tables under
`analysis/interventions/`:

    ablation.csv             one row per (step, hook, part, method): loss, acc, exact and their change
    patching.csv             node patching: (step, mode, node, position) exact and attribution effect
                             (this table, the edges', the curve and formation.csv hold the last
                             invocation: one set of pairs; ablation.csv merges rows by their part)
    patching_edges.csv       edge attribution against exact edge patching, per (step, mode, edge)
    patching_summary.json    correlations of attribution with exact patching, the baselines
    circuit.json             the circuit (edges), its faithfulness and size, the random baseline
    circuit_curve.csv        faithfulness against size (top-k by attribution) and random circuits
    formation.csv            node and edge attribution at every checkpoint (--all-checkpoints)
    formation_phases.json    the run's phases, for shading the formation figure
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from grokscope.devices import resolve_device
from grokscope.errors import GrokscopeError
from grokscope.files import atomic_write_text
from grokscope.interp.activations import check_hooks, parse_positions, parse_steps
from grokscope.interp.io import merge_csv
from grokscope.interp.options import AblateOptions, CircuitOptions, InterventionOptions, PatchOptions
from grokscope.interp.pairs import Pairs, make_pairs, read_pairs_jsonl
from grokscope.tasks import Batch

FOLDER = "interventions"


def out_dir(run):
    d = run.analysis_dir / FOLDER
    d.mkdir(parents=True, exist_ok=True)
    return d


def example_set(run, name: str, n: int, seed: int) -> Batch:
    """At most `n` examples of the run's set `name` (a seeded sample, in order)."""
    sets = run.task.eval_sets()
    if name not in sets:
        raise GrokscopeError(f"the task has no example set {name!r}; it has {', '.join(sets)}")
    b = sets[name]
    if n < 1:
        raise GrokscopeError("--n must be >= 1")
    if len(b) > n:
        g = torch.Generator().manual_seed(seed)
        b = b.select(torch.randperm(len(b), generator=g)[:n].sort().values)
    return b


def run_pairs(run, o: InterventionOptions) -> Pairs:
    """The counterfactual pairs the options ask for: --pairs FILE, or the task's own on --set-name."""
    if o.pairs:
        p = read_pairs_jsonl(o.pairs, run.task)
    else:
        base = example_set(run, o.set_name, 4 * o.n, o.seed)  # corruptions may reject some examples
        p = make_pairs(run.task, base, o.seed, o.operand, o.column, o.carry_column, o.carry_flip)
    if len(p) > o.n:
        p = p.select(torch.arange(o.n))
    return p


def _steps(run, spec: str, many: bool = True) -> list[int]:
    steps = parse_steps(spec, run.readable_steps())
    if not many and len(steps) > 1:
        raise GrokscopeError("--step takes one checkpoint here ('last' or a step)")
    return steps


# ----------------------------------------------------------------------------- ablate


def ablate_run(run, o: AblateOptions) -> list[dict]:
    """Ablate each --hook's part at each --step checkpoint (with random controls); ablation.csv."""
    from grokscope.interp.ablation import Part, ablate
    from grokscope.interp.directions import parse_directions, parse_units

    if not o.hook:
        raise GrokscopeError("name a hook to ablate: --hook blocks.0.attn.hook_z (repeat for several)")
    device = resolve_device(o.device)
    batch = example_set(run, o.set_name, o.n, o.seed)
    ref = example_set(run, o.reference, max(o.n, 1000), o.seed + 1)
    positions = (
        None
        if o.positions == "all"
        else parse_positions(o.positions, run.task.n_ctx, run.task.loss_positions)
    )
    rows = []
    for step, model in run.models(_steps(run, o.step)):
        model = model.to(device)
        for hook in o.hook:
            check_hooks(model, [hook])
            width = _width(model, hook, batch.to(device))
            part = Part(
                hook,
                heads=parse_units(o.heads, run, model, "--heads"),
                features=parse_units(o.neurons, run, model),
                positions=positions,
                directions=parse_directions(o.directions, run, model, width, o.seed),
            )
            res = ablate(
                model,
                batch.to(device),
                run.task.loss_positions,
                part,
                o.method,
                ref.to(device),
                o.controls,
                o.seed,
            )
            rows.append({"step": step, "hook": hook, "heads": o.heads, "neurons": o.neurons,
                         "positions": o.positions, "directions": o.directions, "n": len(batch), **res.row()})  # fmt: skip
    merge_csv(
        out_dir(run) / "ablation.csv",
        rows,
        ("step", "hook", "heads", "neurons", "positions", "directions", "method"),
    )
    return rows


def _width(model, hook: str, batch: Batch) -> int:
    """The size of the hook's last dimension, from one example's forward."""
    from grokscope.interp.ablation import reference_activations

    return int(reference_activations(model, batch.select(torch.arange(1)), hook).shape[-1])


# ----------------------------------------------------------------------------- patch


@dataclass
class PatchResult:
    steps: list[int]
    n_pairs: int
    description: str
    nodes: list[dict]
    edges: list[dict]
    summary: list[dict]


def patch_run(run, o: PatchOptions) -> PatchResult:
    """Node patching (exact and attribution) and edge attribution (against exact edge patching)."""
    from grokscope.interp.attribution import edge_attribution, edge_rows, exact_edge_patching
    from grokscope.interp.patching import correlation, patch_nodes

    device = resolve_device(o.device)
    modes = ["denoising", "noising"] if o.mode == "both" else [o.mode]
    pairs = run_pairs(run, o).to(device)
    node_rows, edge_out, summary = [], [], []
    steps = _steps(run, o.step)
    for step, model in run.models(steps):
        model = model.to(device)
        nodes = [
            {"step": step, **r, "pairs": pairs.description}
            for r in patch_nodes(model, pairs, modes, exact=o.exact)
        ]
        node_rows += nodes
        for mode in modes:
            s = {"step": step, "mode": mode, "n_pairs": len(pairs), "m_clean": nodes[0]["m_clean"],
                 "m_corrupt": nodes[0]["m_corrupt"]}  # fmt: skip
            got = [r for r in nodes if r["mode"] == mode and r["exact"] is not None]
            if got:
                s["node_corr"] = correlation([r["exact"] for r in got], [r["attribution"] for r in got])
            if o.edges:
                es = edge_attribution(model, pairs, mode)
                g, exact, _ = exact_edge_patching(model, pairs, mode, es.graph)
                rows = edge_rows(g, es.scores, exact)
                edge_out += [{"step": step, "mode": mode, **r} for r in rows]
                s["edge_corr"] = correlation([r["exact"] for r in rows], [r["attribution"] for r in rows])
            summary.append(s)
    d = out_dir(run)
    # one invocation is one experiment (one set of pairs): its tables replace the previous ones
    merge_csv(d / "patching.csv", node_rows, key=())
    if edge_out:
        merge_csv(d / "patching_edges.csv", edge_out, key=())
    atomic_write_text(
        d / "patching_summary.json", json.dumps({"pairs": pairs.description, "rows": summary}, indent=1)
    )
    return PatchResult(steps, len(pairs), pairs.description, node_rows, edge_out, summary)


# ----------------------------------------------------------------------------- circuit


def circuit_run(run, o: CircuitOptions):
    """The circuit at --step (circuit.json, circuit_curve.csv); with --all-checkpoints also the
    attribution scores at every checkpoint (formation.csv)."""
    from grokscope.interp.circuits import discover_circuit

    device = resolve_device(o.device)
    pairs = run_pairs(run, o).to(device)
    (step,) = _steps(run, o.step, many=False)
    model = run.model(step).to(device)
    c = discover_circuit(model, pairs, o.threshold, o.prune, o.random_circuits, o.seed)
    d = out_dir(run)
    summary = {"step": step, "pairs": pairs.description, "n_pairs": len(pairs), "threshold": o.threshold,
               "prune": o.prune, **c.summary(), "senders": c.graph.senders, "receivers": c.graph.receivers,
               "scores": {c.graph.edge_name(r, s): float(c.scores[r, s]) for r, s in c.graph.edges}}  # fmt: skip
    atomic_write_text(d / "circuit.json", json.dumps(summary, indent=1))
    merge_csv(d / "circuit_curve.csv", [{"step": step, **r} for r in c.curve], key=())  # replaces the last
    formation = formation_run(run, o, pairs, device) if o.all_checkpoints else None
    return c, summary, formation


def formation_run(
    run, o: InterventionOptions, pairs: Pairs, device, max_checkpoints: int = 200
) -> list[dict]:
    """Node and edge attribution (noising) at every checkpoint: formation.csv, formation_phases.json."""
    from grokscope.interp.attribution import edge_attribution, node_scores_from_edges

    cap = getattr(o, "max_checkpoints", max_checkpoints)
    steps = parse_steps("all", run.readable_steps(), max_steps=cap)
    rows = []
    for step, model in run.models(steps):
        model = model.to(device)
        es = edge_attribution(model, pairs, "noising")
        span = es.m_base - es.m_source
        common = {"step": step, "m_clean": es.m_base, "m_corrupt": es.m_source}
        for name, v in node_scores_from_edges(es.graph, es.scores).items():
            rows.append({**common, "kind": "node", "name": name, "score": v, "effect": _effect(v, span)})
        for r, s in es.graph.edges:
            v = float(es.scores[r, s])
            rows.append(
                {
                    **common,
                    "kind": "edge",
                    "name": es.graph.edge_name(r, s),
                    "score": v,
                    "effect": _effect(v, span),
                }
            )
    d = out_dir(run)
    merge_csv(d / "formation.csv", rows, key=())  # replaces the last
    atomic_write_text(d / "formation_phases.json", json.dumps(run_phase_spans(run), indent=1))
    return rows


def _effect(score: float, span: float) -> float | None:
    """The share of the clean-corrupt logit difference that patching destroys (noising)."""
    return -score / span if abs(span) > 1e-9 else None


def run_phase_spans(run) -> dict:
    """The run's phases: analysis/phases.json where `grokscope analyze` wrote one, else located on
    metrics.jsonl by `analysis.phases.run_phases` (any task: its rule reads accuracy and loss)."""
    from grokscope.analysis.phases import Phases, run_phases

    f = run.analysis_dir / "phases.json"
    ph = Phases(**json.loads(f.read_text())) if f.is_file() else run_phases(run.read_metrics(), None)
    return {"source": ph.source, "spans": [list(s) for s in ph.spans()], "phases": asdict(ph)}
