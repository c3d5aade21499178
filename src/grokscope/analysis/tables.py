"""Small CSV tables: a header row, then one row per checkpoint; read back as numpy columns."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from grokscope.errors import GrokscopeError


def write_table(path: Path, columns: list[str], rows: list[list[float]]) -> None:
    """Write the table atomically; a file that already holds exactly this table is left untouched
    (its mtime too, so figures made from it stay up to date)."""
    from grokscope.files import write_if_changed

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(v) for v in row])
    write_if_changed(path, buf.getvalue())


def _fmt(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


def read_table(path: Path) -> dict[str, np.ndarray]:
    """{column: float64 array}; `step` comes back as int64."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            data = [[float(x) for x in row] for row in reader if row]
    except (OSError, StopIteration, ValueError) as e:
        raise GrokscopeError(f"{path} is missing or corrupt ({e}); run `grokscope analyze` again") from None
    arr = np.array(data, dtype=np.float64).reshape(len(data), len(header))
    out = {name: arr[:, i] for i, name in enumerate(header)}
    if "step" in out:
        out["step"] = out["step"].astype(np.int64)
    return out
