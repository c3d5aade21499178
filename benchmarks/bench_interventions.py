"""Speed of the intervention studies, measured inside one process (perf_counter), on a trained
five-digit-addition run and a modular run with many checkpoints:

    PYTHONPATH=src python3 -m grokscope train five_digit_addition --out /tmp/interv/fda --set train.steps=4000
    PYTHONPATH=src python3 -m grokscope train tiny --out /tmp/interv/tiny \
        --set train.checkpoint.every=20 --set train.checkpoint.dense_every=20
    PYTHONPATH=src python3 benchmarks/bench_interventions.py /tmp/interv/fda /tmp/interv/tiny

Targets (issue 14): edge attribution over all edges on 1000 pairs < 10 s; exact node patching over
every (component, position) on 1000 pairs < 60 s; circuit discovery < 10 min; attribution at every
checkpoint of a ~100-checkpoint run (the formation figure) < 10 min.

Measured 2026-12-02 on the 2-core CPU while shared (load average 7-8): edge attribution 5.02 s;
exact edge patching (23 edges) 27.4 s; exact node patching (noising, 144 node-positions) 13.1 s;
circuit discovery 247 s; attribution at 101 checkpoints of the tiny run (481 pairs) 88 s.
"""

from __future__ import annotations

import sys
import time

import torch

from grokscope.interp.attribution import edge_attribution, exact_edge_patching
from grokscope.interp.circuits import discover_circuit
from grokscope.interp.interventions import formation_run, run_pairs
from grokscope.interp.options import CircuitOptions, PatchOptions
from grokscope.interp.patching import exact_node_patching, node_list
from grokscope.run import Run


def timed(label: str, fn, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{label}: {best:.2f} s (best of {repeat})", flush=True)
    return out


def main(fda: str, modular: str | None) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    run = Run.open(fda)
    model = run.model()
    pairs = run_pairs(run, PatchOptions(n=1000))
    graph_edges = edge_attribution(model, pairs).graph.edges
    n_nodes = len(node_list(model)) * pairs.clean.tokens.shape[1]
    print(f"{fda}: {len(pairs)} pairs, {len(graph_edges)} edges, {n_nodes} (node, position) pairs")
    timed("edge attribution, all edges, 1000 pairs", lambda: edge_attribution(model, pairs), repeat=3)
    timed("exact edge patching, all edges, 1000 pairs", lambda: exact_edge_patching(model, pairs))
    timed("exact node patching (noising), every (node, position), 1000 pairs",
          lambda: exact_node_patching(model, pairs, "noising"))  # fmt: skip
    c = timed("circuit discovery, 1000 pairs", lambda: discover_circuit(model, pairs))
    print(f"  circuit: {c.size} edges, faithfulness {c.faithfulness:.4f}")
    if modular:
        mrun = Run.open(modular)
        o = CircuitOptions(n=1000, set_name="test")
        mp = run_pairs(mrun, o)
        steps = mrun.readable_steps()
        rows = timed(f"formation: attribution at {len(steps)} checkpoints of {modular}, {len(mp)} pairs",
                     lambda: formation_run(mrun, o, mp, torch.device("cpu")))  # fmt: skip
        print(f"  {len(rows)} rows")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
