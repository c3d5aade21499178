"""Run one trial: train it, or resume it from its run folder. The same function for every engine.
`--pack` runs several trials that differ only in stackable settings stacked in one process.

The local engine runs `python -m grokscope.sweep.trial RUN_DIR CONFIG_TOML` in a subprocess (one
torch thread, its own log file); the Ray engine calls `run_trial` inside a Ray task. Either way a
trial whose folder already holds a state file continues from it, bit for bit.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from grokscope.errors import GrokscopeError

EXIT_INTERRUPTED = 130


def trial_state(run_dir: Path) -> str:
    """'new' (nothing trained yet), 'finished' (its state says so) or 'partial' (resumable)."""
    from grokscope.run import Run

    if not (run_dir / "config.toml").is_file():
        return "new"
    state = Run(run_dir).load_state()
    if state is not None and state[1].get("finished_reason"):
        return "finished"
    return "partial"


def run_trial(run_dir: str | Path, config_data: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Train (or resume) the trial in `run_dir`; return its outcome: step, reason, last metrics."""
    from grokscope.config import from_dict
    from grokscope.train import resume, train

    run_dir = Path(run_dir)
    if (run_dir / "config.toml").is_file():
        result = resume(run_dir, progress=progress)
    else:
        _clear_husk(run_dir)
        result = train(from_dict(config_data), run_dir, progress=progress)
    return {"step": result.step, "reason": result.reason, "metrics": result.last_metrics}


def run_pack(pairs: list[tuple[Path, dict[str, Any]]], progress: bool = False) -> list[dict[str, Any]]:
    """Train (or resume) several trials stacked in this process (train/stacked.py); their outcomes."""
    from grokscope.config import from_dict
    from grokscope.train.stacked import train_or_resume_stacked

    for run_dir, _ in pairs:
        if not (run_dir / "config.toml").is_file():
            _clear_husk(run_dir)
    results = train_or_resume_stacked([(d, from_dict(c)) for d, c in pairs], progress=progress)
    return [{"step": r.step, "reason": r.reason, "metrics": r.last_metrics} for r in results]


def _clear_husk(run_dir: Path) -> None:
    """A folder killed between mkdir and writing its config holds only empty dirs: clear it."""
    if not run_dir.exists():
        return
    leftovers = [p for p in run_dir.rglob("*") if not p.is_dir()]
    if leftovers:
        raise GrokscopeError(
            f"{run_dir} holds files but no config.toml; it is not a run folder this sweep made. "
            "Move it away and re-run the sweep."
        )
    shutil.rmtree(run_dir)


def ray_trial(run_dir: str, config_data: dict[str, Any], log_path: str) -> dict[str, Any]:
    """Body of a Ray task: one torch thread, output to the trial's log, errors returned not raised."""
    import contextlib

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            out = run_trial(run_dir, config_data)
            out["status"] = "done"
            print(f"finished at step {out['step']} ({out['reason']})")
        except GrokscopeError as e:
            out = {"status": "failed", "error": str(e)}
            print(f"grokscope: {e}")
        except Exception as e:  # noqa: BLE001 - a trial's crash is recorded, the sweep goes on
            traceback.print_exc()
            out = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    out["wall_s"] = time.perf_counter() - started
    return out


def main(argv: list[str]) -> int:
    """Subprocess entry: exit 0 done, 130 interrupted (state saved), 2 user error, 1 crash."""
    from grokscope.config import read_toml
    from grokscope.train import Interrupted

    pack = argv[:1] == ["--pack"]
    if pack:
        argv = argv[1:]
    if len(argv) < 2 or len(argv) % 2 or (len(argv) > 2 and not pack):
        print(
            "usage: python -m grokscope.sweep.trial RUN_DIR CONFIG_TOML\n"
            "       python -m grokscope.sweep.trial --pack RUN_DIR CONFIG_TOML [RUN_DIR CONFIG_TOML ...]",
            file=sys.stderr,
        )
        return 2
    try:
        if pack:
            pairs = [(Path(argv[i]), read_toml(Path(argv[i + 1]))) for i in range(0, len(argv), 2)]
            for (run_dir, _), o in zip(pairs, run_pack(pairs), strict=True):
                print(f"{run_dir.name}: finished at step {o['step']} ({o['reason']})")
            return 0
        out = run_trial(Path(argv[0]), read_toml(Path(argv[1])))
    except Interrupted as e:
        print(f"grokscope: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except GrokscopeError as e:
        print(f"grokscope: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grokscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"finished at step {out['step']} ({out['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
