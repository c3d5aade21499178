"""Local engine: each trial a subprocess with one torch thread, as many at once as workers.

Subprocesses rather than a process pool: a trial that crashes hard (out of memory, a segfault)
takes only itself down, each trial gets its own log file, and Ctrl-C reaches every trial, which
saves its state and exits so that re-running the sweep resumes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokscope.sweep.trial import EXIT_INTERRUPTED

# Seconds a trial gets to save its state after Ctrl-C before it is killed.
STOP_GRACE_S = 60.0


@dataclass
class Job:
    name: str
    run_dir: Path
    config_path: Path
    config: dict[str, Any]
    log_path: Path
    # a pack: trials stacked in one process (train/stacked.py); this job stands for them all
    members: list[Job] = field(default_factory=list)

    def names(self) -> list[str]:
        return [m.name for m in self.members] if self.members else [self.name]

    def command(self) -> list[str]:
        if not self.members:
            return [sys.executable, "-m", "grokscope.sweep.trial", str(self.run_dir), str(self.config_path)]
        pairs = [str(p) for m in self.members for p in (m.run_dir, m.config_path)]
        return [sys.executable, "-m", "grokscope.sweep.trial", "--pack", *pairs]


# (kind: "start" | "end" | "tick", trial name, outcome); "tick" lets a display refresh its clock.
Event = Callable[[str, str, dict[str, Any]], None]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: a trial gets SIGTERM (saves state, exits) if the sweep driver dies without warning."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_local(jobs: list[Job], workers: int, on_event: Event, poll_s: float = 0.2) -> None:
    """Run `jobs`, at most `workers` at a time; report each start and end through `on_event`."""
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                job.log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(job.log_path, "a")  # noqa: SIM115 - closed when the trial ends
                log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} grokscope sweep: starting trial\n")
                if job.members:
                    log.write(f"stacked in one process with: {', '.join(job.names())}\n")
                    _note_pack(job)
                log.flush()
                proc = subprocess.Popen(
                    job.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
                )
                running[job.name] = (proc, time.perf_counter(), log)
                for name in job.names():
                    on_event("start", name, {})
            for name, (proc, started, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del running[name]
                job = next(j for j in jobs if j.name == name)
                outcome = _outcome(code, job.log_path, time.perf_counter() - started)
                for member in job.members or [job]:
                    on_event("end", member.name, _member_outcome(member, outcome, bool(job.members)))
            on_event("tick", "", {})
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop_all(running, on_event, jobs)
        raise


def _note_pack(job: Job) -> None:
    """Each member's own log says where its pack's output went."""
    for m in job.members[1:]:
        m.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(m.log_path, "a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} trained stacked; output in {job.log_path}\n")


def _member_outcome(member: Job, outcome: dict[str, Any], packed: bool) -> dict[str, Any]:
    """A pack member whose own state says finished is done, whatever became of the others."""
    if packed and outcome["status"] != "done":
        from grokscope.errors import GrokscopeError
        from grokscope.sweep.trial import trial_state

        try:
            if trial_state(member.run_dir) == "finished":
                return {"status": "done", "wall_s": outcome["wall_s"]}
        except GrokscopeError:  # a damaged state keeps the pack's outcome
            pass
    return outcome


def _stop_all(
    running: dict[str, tuple[subprocess.Popen, float, Any]], on_event: Event, jobs: list[Job] | None = None
) -> None:
    """Ask every running trial to save its state and stop; kill those that do not in time."""
    for proc, _, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.perf_counter() + STOP_GRACE_S
    for name, (proc, started, log) in running.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        job_names = next((j.names() for j in jobs or [] if j.name == name), [name])
        for member in job_names:
            on_event("end", member, {"status": "interrupted", "wall_s": time.perf_counter() - started})


def _outcome(code: int, log_path: Path, wall_s: float) -> dict[str, Any]:
    if code == 0:
        return {"status": "done", "wall_s": wall_s}
    if code in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM):
        return {"status": "interrupted", "wall_s": wall_s}
    return {"status": "failed", "wall_s": wall_s, "error": f"exit {code}: {last_line(log_path)}"}


def last_line(path: Path) -> str:
    """The last non-empty line of a log: the one-line error, or a traceback's final line."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
