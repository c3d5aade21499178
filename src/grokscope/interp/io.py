"""Tables of the toolkit under DIR/analysis/: CSVs merged by key, written atomically (figures: grokscope.figures)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from grokscope.files import atomic_write_text


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "x"


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [_parse_row(r) for r in csv.DictReader(f)]


def _parse_row(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if v in ("", None):
            out[k] = None
            continue
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def merge_csv(path: Path, rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """Write `rows` to `path`, replacing earlier rows with the same key; returns the merged table."""
    new_keys = {tuple(str(r.get(k)) for k in key) for r in rows}
    old = [r for r in read_csv(path) if tuple(str(r.get(k)) for k in key) not in new_keys]
    merged = old + rows
    fields = list(dict.fromkeys(k for r in merged for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in merged:
        writer.writerow({k: _fmt(r.get(k)) for k in fields})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
    return merged


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table for the terminal."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
