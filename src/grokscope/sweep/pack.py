"""Packing: trials that differ only in stackable settings (seed, lr, weight decay, Grokfast,
task.frac_train, ...; train/stacked.py) go into one process, trained stacked.

Each group of such trials is cut into at most `workers` packs of near-equal size, so every worker
still has work; a group of one stays a plain trial. The run folders are the same either way.
"""

from __future__ import annotations

from grokscope.sweep.local import Job


def pack_jobs(jobs: list[Job], workers: int) -> list[Job]:
    """`jobs` with each group of stackable trials replaced by at most `workers` pack jobs."""
    from grokscope.config import from_dict
    from grokscope.train.stacked import stack_key

    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(stack_key(from_dict(job.config)), []).append(job)
    out: list[Job] = []
    for group in groups.values():
        n_packs = max(1, min(workers, len(group)))
        for i in range(n_packs):
            members = group[i::n_packs]
            if len(members) == 1:
                out.append(members[0])
                continue
            first = members[0]
            out.append(
                Job(
                    f"pack:{first.name}",
                    first.run_dir,
                    first.config_path,
                    first.config,
                    first.log_path,
                    members,
                )
            )
    return out
