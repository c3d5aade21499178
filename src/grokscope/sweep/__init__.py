"""Sweeps and multi-seed studies: one command runs, resumes and summarizes many trials.

    from grokscope.sweep import load_spec, run_sweep, write_summary
    spec = load_spec("frac_train_sweep", extra_set=["task.p=59"])
    result = run_sweep(spec, "runs/sweeps/frac", workers=2)          # or engine="ray"
    path, rows = write_summary("runs/sweeps/frac")
    # the plot: grokscope.figures.sweeps.plot_summary(rows, "task.frac_train", "grok_step", "frac.png")

Names resolve lazily so that `grokscope.cli.sweep` (imported at CLI start-up) pulls in no torch.
"""

from importlib import import_module

_EXPORTS = {
    "SweepResult": "runner",
    "run_sweep": "runner",
    "SweepSpec": "spec",
    "Trial": "spec",
    "load_spec": "spec",
    "summarize": "summarize",
    "write_summary": "summarize",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"grokscope.sweep.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'grokscope.sweep' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
