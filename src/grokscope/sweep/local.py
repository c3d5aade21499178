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
from dataclasses import dataclass
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
                log.flush()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "grokscope.sweep.trial", str(job.run_dir), str(job.config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
                )
                running[job.name] = (proc, time.perf_counter(), log)
                on_event("start", job.name, {})
            for name, (proc, started, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del running[name]
                job = next(j for j in jobs if j.name == name)
                on_event("end", name, _outcome(code, job.log_path, time.perf_counter() - started))
            on_event("tick", "", {})
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop_all(running, on_event)
        raise


def _stop_all(running: dict[str, tuple[subprocess.Popen, float, Any]], on_event: Event) -> None:
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
        on_event("end", name, {"status": "interrupted", "wall_s": time.perf_counter() - started})


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
