"""grokscope: train small transformers on algorithmic tasks and explain what they learned."""

import os
import sys

__version__ = "0.1.0"

# OpenMP threads that spin while they wait for a core another process holds slow a training step
# several-fold on a shared machine (benchmarks/bench_contention.py: 1061 -> 277 ms/step for the
# mainline at load 5 on 2 cores). Set before torch loads; a user's own setting wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Version of the run-folder layout; bumped when a run folder written earlier can no longer be read.
RUN_FORMAT_VERSION = 1
