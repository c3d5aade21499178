"""`run_sweep`: prepare the sweep folder, skip finished trials, run the rest on an engine, keep the table.

Re-running the same sweep is how it resumes: a trial whose state file says it finished is skipped,
one with a state file continues from it, one never started starts. A trial that fails is recorded
(status, error, log) and the others go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from grokscope.errors import GrokscopeError
from grokscope.sweep.folder import SweepFolder
from grokscope.sweep.local import Job, run_local
from grokscope.sweep.spec import SweepSpec
from grokscope.sweep.trial import trial_state
from grokscope.train import Interrupted


class SweepInterrupted(Interrupted):
    """The sweep was stopped; running trials saved their state (the CLI exits 130)."""


@dataclass
class SweepResult:
    folder: SweepFolder
    rows: dict[str, dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def names(self, status: str) -> list[str]:
        return [n for n, r in self.rows.items() if r.get("status") == status]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    pack: bool = True,
) -> SweepResult:
    """Run every unfinished trial of `spec` under `out`; returns each trial's row of the trials table.
    With `pack` (local engine), trials that differ only in stackable settings share one process
    per worker, trained stacked (sweep/pack.py); the folders are the same as unpacked."""
    if engine not in ("local", "ray"):
        raise GrokscopeError(f"unknown engine {engine!r}; use local or ray")
    if workers is not None and workers < 1:
        raise GrokscopeError(f"--workers must be >= 1, got {workers}")
    if address and engine != "ray":
        raise GrokscopeError("--address is for --engine ray")
    folder = SweepFolder(out)
    t0 = time.perf_counter()
    with folder.lock():
        folder.prepare(spec)
        rows: dict[str, dict[str, Any]] = {}
        jobs: list[Job] = []
        skipped: list[str] = []
        for trial in spec.trials:
            run_dir = folder.run_dir(trial.name)
            if _state(run_dir) == "finished":
                rows[trial.name] = {"status": "done", **_run_figures(run_dir)}
                skipped.append(trial.name)
            else:
                rows[trial.name] = {"status": "pending"}
                jobs.append(
                    Job(
                        trial.name,
                        run_dir,
                        folder.config_path(trial.name),
                        trial.config,
                        folder.log_path(trial.name),
                    )
                )
        folder.write_table(spec, rows)
        display = Progress(spec.name, len(spec.trials), len(skipped), stream or sys.stderr, enabled=progress)

        def on_event(kind: str, name: str, outcome: dict[str, Any]) -> None:
            if kind == "tick":
                display.update(rows)
                return
            if kind == "start":
                rows[name] = {"status": "running"}
            else:
                row = {"status": outcome["status"], "wall_s": round(outcome.get("wall_s", 0.0), 1)}
                row.update(_run_figures(folder.run_dir(name)))
                if outcome.get("error"):
                    row["error"] = outcome["error"]
                rows[name] = row
                display.trial_ended(name, row)
            folder.write_table(spec, rows)
            display.update(rows)

        workers = workers or (None if engine == "ray" else default_workers())
        if pack and engine == "local":
            from grokscope.sweep.pack import pack_jobs

            jobs = pack_jobs(jobs, workers)
        display.update(rows)
        try:
            with _sigterm_as_interrupt():
                if engine == "local":
                    run_local(jobs, min(workers, max(1, len(jobs))), on_event)
                else:
                    from grokscope.sweep.ray_engine import run_ray

                    run_ray(jobs, workers, on_event, address=address)
        except KeyboardInterrupt:
            for name, row in rows.items():
                if row["status"] in ("running", "pending"):
                    rows[name] = {**row, "status": "interrupted" if row["status"] == "running" else "pending"}
            folder.write_table(spec, rows)
            display.close()
            raise SweepInterrupted(
                f"sweep stopped; finished trials are kept and running ones saved their state. "
                f"Re-run the same command to continue ({folder.path})"
            ) from None
        display.close()
    stopped = [n for n, r in rows.items() if r["status"] == "interrupted"]
    if stopped:  # the trials were stopped from outside (signals sent to them, not to this driver)
        raise SweepInterrupted(
            f"{len(stopped)} trial(s) were stopped and saved their state ({', '.join(stopped[:3])}"
            f"{', ...' if len(stopped) > 3 else ''}). Re-run the same command to continue ({folder.path})"
        )
    return SweepResult(folder, rows, skipped, time.perf_counter() - t0)


def _state(run_dir: Path) -> str:
    """A damaged state file makes its trial fail when it runs, not the whole sweep now."""
    try:
        return trial_state(run_dir)
    except GrokscopeError:
        return "partial"


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (e.g. a scheduler ending the job) stops the sweep the same careful way as Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _run_figures(run_dir: Path) -> dict[str, Any]:
    """Step, finish reason and test accuracy as the run folder records them."""
    from grokscope.run import Run

    out: dict[str, Any] = {}
    try:
        state = Run(run_dir).load_state() if (run_dir / "config.toml").is_file() else None
        if state is not None:
            out["step"] = state[1].get("step", "")
            out["finished_reason"] = state[1].get("finished_reason", "")
        rows = Run(run_dir).read_metrics()
        if rows and "test_acc" in rows[-1]:
            out["test_acc"] = round(rows[-1]["test_acc"], 4)
    except GrokscopeError:
        pass
    return out


class Progress:
    """One status line (rewritten in place on a terminal, printed per change otherwise)."""

    def __init__(self, name: str, total: int, skipped: int, stream: TextIO, enabled: bool = True):
        self.name, self.total, self.skipped, self.stream, self.enabled = name, total, skipped, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()
        self.last = ""
        if enabled and skipped:
            self._print(f"{name}: {skipped} of {total} trials already finished; skipping them")

    def update(self, rows: dict[str, dict[str, Any]]) -> None:
        counts = {s: 0 for s in ("done", "running", "failed", "pending", "interrupted")}
        for row in rows.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        elapsed = time.perf_counter() - self.t0
        line = (
            f"{self.name}: {counts['done']}/{self.total} done, {counts['running']} running, "
            f"{counts['failed']} failed, {counts['pending']} waiting [{elapsed:.0f} s]"
        )
        if not self.enabled or (not self.tty and line.split(" [")[0] == self.last.split(" [")[0]):
            return
        self.last = line
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        else:
            self._print(line)

    def trial_ended(self, name: str, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        detail = (
            f"step {row.get('step', '?')}, test_acc {row.get('test_acc', '?')}, {row.get('wall_s', 0):.0f} s"
        )
        if row.get("error"):
            detail = row["error"]
        self._print(f"  {row['status']:<11} {name}: {detail}")

    def _print(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + "\n" + self.last)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.enabled:
            self.stream.write("\n")
            self.stream.flush()
