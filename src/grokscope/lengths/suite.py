"""A suite of length studies: which tasks length-generalise (Zhou et al. 2023's main result).

`grokscope lengths --suite zhou2023` runs one length study (`lengths.study`) per task of the suite,
each into its own folder, and then writes one table over all of them: tasks as rows, encodings as
columns, in-distribution exact match and exact match at 1.5x and 2x the longest training length.

```
OUT/<task>/ ...          an ordinary study folder per task (resumable; its own tables and figures)
OUT/suite.csv            task, pos, seeds, in_dist, at_1.5x, at_2x (mean, std), paper's verdict
OUT/suite.md             the table, one cell "in-dist / 1.5x / 2x" per task and encoding
OUT/suite.png            the same as three heatmaps (figures.lengths)
```
Re-running the same command resumes every study. The paper's verdict (`paper_generalises`) is
what Zhou et al. report for their (larger) models; `generalises_here` is ours: exact match at 1.5x
of at least `GENERALISES_AT` with some encoding.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grokscope.errors import GrokscopeError

GENERALISES_AT = 0.9  # exact match at 1.5x the longest training length that counts as generalising


@dataclass(frozen=True)
class SuiteTask:
    name: str  # the row label and the folder under OUT
    preset: str
    train: tuple[int, int]  # training lengths
    pes: tuple[str, ...]
    paper_generalises: bool
    overrides: tuple[str, ...] = ()

    @property
    def far(self) -> tuple[int, int]:
        """The lengths read past training: 1.5x (rounded up) and 2x the longest training length."""
        hi = self.train[1]
        return math.ceil(1.5 * hi), 2 * hi


SEQUENCE_PES = ("learned", "none", "rope", "alibi")

SUITES: dict[str, tuple[SuiteTask, ...]] = {
    "zhou2023": (
        SuiteTask("count", "rasp_count", (1, 10), SEQUENCE_PES, True),
        SuiteTask("mode", "rasp_mode", (1, 10), SEQUENCE_PES, True),
        SuiteTask("copy_unique", "rasp_copy", (1, 10), SEQUENCE_PES, True),
        SuiteTask("sort", "rasp_sort", (1, 10), SEQUENCE_PES, True),
        SuiteTask("copy_repeat", "rasp_copy_repeat", (1, 10), SEQUENCE_PES, False),
        SuiteTask("parity", "rasp_parity", (1, 10), SEQUENCE_PES, False),
        SuiteTask("parity_scratchpad", "rasp_parity_scratchpad", (1, 10), SEQUENCE_PES, False),
        SuiteTask("addition_forward", "rasp_addition", (1, 4), SEQUENCE_PES, False),
    ),
}


@dataclass
class SuiteSpec:
    suite: str
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)  # applied to every run of every task
    tasks: list[str] | None = None  # a subset of the suite's task names (None: all)
    pes: list[str] | None = None  # a subset of encodings (None: each task's own)
    n_per_cell: int = 100

    def selected(self) -> list[SuiteTask]:
        if self.suite not in SUITES:
            raise GrokscopeError(f"unknown --suite {self.suite!r}; choose from {', '.join(SUITES)}")
        tasks = list(SUITES[self.suite])
        if self.tasks is not None:
            names = [t.name for t in tasks]
            bad = [t for t in self.tasks if t not in names]
            if bad or not self.tasks:
                raise GrokscopeError(f"bad --tasks {','.join(self.tasks)!r}: choose from {', '.join(names)}")
            tasks = [t for t in tasks if t.name in self.tasks]
        return tasks

    def pes_of(self, task: SuiteTask) -> list[str]:
        return [p for p in task.pes if self.pes is None or p in self.pes]

    def study(self, task: SuiteTask):
        """The length study of one suite task."""
        from grokscope.lengths.study import StudySpec

        return StudySpec(
            config=task.preset,
            pes=self.pes_of(task),
            seeds=list(self.seeds),
            train_digits=task.train,
            test_digits=(1, task.far[1]),
            overrides=[*task.overrides, *self.overrides],
            n_per_cell=self.n_per_cell,
        )


def run_suite(spec: SuiteSpec, out: str | Path, workers: int | None = None, progress: bool = True) -> str:
    """Run (or resume) every task's study, then write suite.csv and suite.md; returns the markdown."""
    from grokscope.lengths.study import run_study

    out = Path(out)
    tasks = spec.selected()
    for task in tasks:
        if not spec.pes_of(task):
            continue
        if progress:
            print(f"== suite {spec.suite}: {task.name} ({task.preset}) ==", flush=True)
        run_study(spec.study(task), out / task.name, workers=workers, progress=progress)
    rows = suite_rows(out, tasks, spec)
    return write_suite_tables(out, spec, rows)


def suite_rows(out: Path, tasks: list[SuiteTask], spec: SuiteSpec) -> list[dict]:
    """One row per (task, encoding) read from each study's lengths.csv (mean and std over seeds)."""
    rows = []
    for task in tasks:
        path = out / task.name / "lengths.csv"
        if not path.is_file():
            continue
        per_run: dict[tuple[str, int], dict[str, float]] = {}
        lo, hi = task.train
        near, far = task.far
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                one_d = "length" in r
                a = int(r["length"] if one_d else r["len_a"])
                b = a if one_d else int(r["len_b"])
                d = per_run.setdefault((r["pos"], int(r["seed"])), {"in": [], "near": None, "far": None})
                v = float(r["exact"])
                if lo <= a <= hi and lo <= b <= hi:
                    d["in"].append(v)
                if a == b == near:
                    d["near"] = v
                if a == b == far:
                    d["far"] = v
        for pos in spec.pes_of(task):
            runs = [d for (p, _), d in sorted(per_run.items()) if p == pos]
            if not runs:
                continue
            vals = {
                "in_dist": [float(np.mean(d["in"])) for d in runs],
                "at_1.5x": [d["near"] for d in runs],
                "at_2x": [d["far"] for d in runs],
            }
            row = {"task": task.name, "pos": pos, "seeds": len(runs), "train": f"{lo}-{hi}"}
            row["lengths_1.5x_2x"] = f"{near},{far}"
            for k, v in vals.items():
                row[f"{k}_mean"] = float(np.mean(v))
                row[f"{k}_std"] = float(np.std(v))
            row["paper_generalises"] = task.paper_generalises
            row["generalises_here"] = row["at_1.5x_mean"] >= GENERALISES_AT
            rows.append(row)
    return rows


SUITE_COLUMNS = [
    "task",
    "pos",
    "seeds",
    "train",
    "lengths_1.5x_2x",
    "in_dist_mean",
    "in_dist_std",
    "at_1.5x_mean",
    "at_1.5x_std",
    "at_2x_mean",
    "at_2x_std",
    "paper_generalises",
    "generalises_here",
]


def write_suite_tables(out: Path, spec: SuiteSpec, rows: list[dict]) -> str:
    """suite.csv (one row per task and encoding) and suite.md (tasks x encodings); returns the md."""
    from grokscope.files import atomic_write_text

    if not rows:
        raise GrokscopeError(f"no study of the suite has a table yet under {out}; see its task folders' logs")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUITE_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out / "suite.csv", buf.getvalue())
    md = suite_markdown(spec, rows)
    atomic_write_text(out / "suite.md", md)
    return md


def suite_markdown(spec: SuiteSpec, rows: list[dict]) -> str:
    pes = list(dict.fromkeys(r["pos"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    by = {(r["task"], r["pos"]): r for r in rows}
    seeds = sorted({r["seeds"] for r in rows})
    lines = [
        f"Suite {spec.suite}: exact match (greedy) in-dist / at 1.5x / at 2x the longest training length, "
        f"mean over {'/'.join(map(str, seeds))} seed(s), {spec.n_per_cell} problems per length "
        "(addition: len a = len b). paper = Zhou et al. 2023's verdict; here = some encoding reaches "
        f"{GENERALISES_AT} at 1.5x.",
        "",
        "| task | train | 1.5x, 2x | " + " | ".join(pes) + " | paper | here |",
        "|---|---|---|" + "---|" * len(pes) + "---|---|",
    ]
    for t in tasks:
        mine = [r for r in rows if r["task"] == t]
        cells = []
        for p in pes:
            r = by.get((t, p))
            cells.append(
                "-"
                if r is None
                else f"{r['in_dist_mean']:.2f} / {r['at_1.5x_mean']:.2f} / {r['at_2x_mean']:.2f}"
            )
        paper = "yes" if mine[0]["paper_generalises"] else "no"
        here = "yes" if any(r["generalises_here"] for r in mine) else "no"
        lines.append(
            f"| {t} | {mine[0]['train']} | {mine[0]['lengths_1.5x_2x']} | "
            + " | ".join(cells)
            + f" | {paper} | {here} |"
        )
    return "\n".join(lines) + "\n"
