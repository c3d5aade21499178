"""Ray engine: each trial a Ray task (one CPU, one torch thread) on an existing or a local cluster.

Assumption: the sweep folder is on a filesystem every node sees at the same path (NFS, Lustre,
a SLURM home or scratch directory, or a single machine). Tasks write their run folders and logs
there directly; the driver reads them. Nothing is copied back. Ray is an optional extra
(`pip install 'grokscope[ray]'`) and is imported only when this engine is chosen.
"""

from __future__ import annotations

import time
from typing import Any

from grokscope.errors import GrokscopeError
from grokscope.sweep.local import Event, Job


def _import_ray():
    try:
        import ray
    except ImportError:
        raise GrokscopeError(
            "the ray engine needs Ray: pip install 'grokscope[ray]' (or use --engine local)"
        ) from None
    return ray


def run_ray(jobs: list[Job], workers: int | None, on_event: Event, address: str | None = None) -> None:
    """Run `jobs` as Ray tasks, at most `workers` in flight (default: the cluster's CPUs)."""
    ray = _import_ray()
    from grokscope.sweep.trial import ray_trial

    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        elif workers:
            kwargs["num_cpus"] = workers
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise GrokscopeError(
                f"cannot connect to the Ray cluster at {address or 'a new local one'}: {e}"
            ) from None
    try:
        if not workers:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1, max_retries=0)(ray_trial)
        pending = list(jobs)
        in_flight: dict[Any, tuple[str, float]] = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < workers:
                    job = pending.pop(0)
                    ref = remote.remote(str(job.run_dir.resolve()), job.config, str(job.log_path.resolve()))
                    in_flight[ref] = (job.name, time.perf_counter())
                    on_event("start", job.name, {})
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in done:
                    name, t0 = in_flight.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a lost worker or node fails this trial only
                        outcome = {"status": "failed", "error": f"ray: {type(e).__name__}: {e}"}
                    outcome.setdefault("wall_s", time.perf_counter() - t0)
                    on_event("end", name, outcome)
        except KeyboardInterrupt:
            for ref, (name, t0) in in_flight.items():
                ray.cancel(ref, force=True)
                on_event("end", name, {"status": "interrupted", "wall_s": time.perf_counter() - t0})
            raise
    finally:
        if started_here:
            ray.shutdown()
