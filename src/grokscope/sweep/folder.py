"""The sweep folder: ordinary run folders side by side, plus what ties them together.

```
SWEEP_DIR/spec.toml          the sweep spec as given (a copy)
SWEEP_DIR/sweep.json         the resolved trial list: name, overrides, seed (what summarize reads)
SWEEP_DIR/trials.csv         the trials table: status, step, test_acc, wall time, error per trial
SWEEP_DIR/configs/NAME.toml  each trial's full resolved config
SWEEP_DIR/runs/NAME/         each trial's run folder
SWEEP_DIR/logs/NAME.log      each trial's output (errors and tracebacks land here)
```
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any

from grokscope.config import dumps_toml, from_dict
from grokscope.errors import GrokscopeError
from grokscope.files import atomic_write_text
from grokscope.run import Run
from grokscope.sweep.spec import SweepSpec, Trial, format_value

TABLE_FIELDS = ("trial", "status", "seed", "step", "finished_reason", "test_acc", "wall_s", "error")


class SweepFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def run_dir(self, name: str) -> Path:
        return self.path / "runs" / name

    def config_path(self, name: str) -> Path:
        return self.path / "configs" / f"{name}.toml"

    def log_path(self, name: str) -> Path:
        return self.path / "logs" / f"{name}.log"

    # ------------------------------------------------------------------ writing
    def prepare(self, spec: SweepSpec) -> None:
        """Create the folder (or check an existing one fits the spec) and write the trial list."""
        if self.path.exists() and not self.path.is_dir():
            raise GrokscopeError(f"{self.path} exists and is not a folder; choose another --out")
        contents = [p for p in self.path.iterdir() if p.name != ".lock"] if self.path.is_dir() else []
        if contents and not (self.path / "sweep.json").is_file():
            raise GrokscopeError(
                f"{self.path} exists, is not empty and is not a sweep folder; choose another --out"
            )
        for trial in spec.trials:
            self.check_matches(trial)
        for sub in ("runs", "configs", "logs"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        if spec.source:
            atomic_write_text(self.path / "spec.toml", spec.source)
        manifest = {
            "name": spec.name,
            "base": spec.base,
            "set": spec.fixed,
            "swept_keys": spec.swept_keys,
            "trials": [{"name": t.name, "overrides": t.overrides, "seed": t.seed} for t in spec.trials],
        }
        atomic_write_text(self.path / "sweep.json", json.dumps(manifest, indent=1) + "\n")
        for trial in spec.trials:
            atomic_write_text(self.config_path(trial.name), dumps_toml(trial.config))

    def check_matches(self, trial: Trial) -> None:
        """A run folder left by an earlier sweep must hold this trial's config, or resuming would mix."""
        run_dir = self.run_dir(trial.name)
        if not (run_dir / "config.toml").is_file():
            return
        old = from_dict(Run.open(run_dir).raw_config()).to_dict()
        if old != trial.config:
            key = _first_difference(old, trial.config)
            raise GrokscopeError(
                f"{run_dir} was trained with a different config than this sweep asks for ({key}); "
                "re-run with the spec it was started with, or choose another --out"
            )

    def write_table(self, spec: SweepSpec, rows: dict[str, dict[str, Any]]) -> None:
        """The trials table: one row per trial, overrides as columns; rewritten atomically."""
        buf = io.StringIO()
        fields = ["trial", "status", *spec.swept_keys, "seed", *TABLE_FIELDS[3:]]
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for trial in spec.trials:
            row = {"trial": trial.name, "seed": "" if trial.seed is None else trial.seed}
            row.update({k: format_value(v).strip('"') for k, v in trial.overrides.items()})
            row.update(rows.get(trial.name, {}))
            writer.writerow(row)
        atomic_write_text(self.path / "trials.csv", buf.getvalue())

    # ------------------------------------------------------------------ reading
    def manifest(self) -> dict[str, Any]:
        path = self.path / "sweep.json"
        if not path.is_file():
            raise GrokscopeError(
                f"{self.path} is not a sweep folder (no sweep.json); run `grokscope sweep` first"
            )
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise GrokscopeError(f"{path} is corrupt ({e})") from None

    @contextlib.contextmanager
    def lock(self):
        """One sweep driver per folder at a time (advisory; released when the process dies)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no locking
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise GrokscopeError(
                    f"another `grokscope sweep` is running on {self.path}; wait for it or stop it first"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"
