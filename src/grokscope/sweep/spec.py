"""Sweep specs: one TOML file naming a base config, the overrides to vary, and the seeds.

```toml
# one-line description (shown by `grokscope presets`)
[sweep]
name = "frac_train_sweep"          # default: the file's stem
base = "mainline"                  # preset name, or a config file (relative to this file)
seeds = [0, 1]                     # or a count: seeds = 3 -> 0, 1, 2
set = ["train.steps=30000"]        # fixed overrides for every trial (same syntax as --set)

[grid]                             # every combination of these values
"task.frac_train" = [0.3, 0.5, 0.7]   # (or nested: [grid.task] frac_train = [...])

[[trials]]                         # and/or an explicit list of override sets
"model.pos" = "none"
```

Trials = grid points x list entries (whichever are given; neither = one trial with the base config),
each x seeds. Every trial's config is validated through `grokscope.config.from_dict` before any
training starts, so a typo fails the whole sweep at once instead of trial by trial.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from grokscope.config import apply_overrides, from_dict, read_toml
from grokscope.errors import GrokscopeError

_SWEEP_PRESET_DIR = resources.files("grokscope") / "presets" / "sweep"
_TOP_KEYS = ("sweep", "grid", "trials")
_SWEEP_KEYS = ("name", "base", "seeds", "set", "description")


@dataclass
class Trial:
    """One run of the sweep: its folder name, its overrides (dotted key -> value) and seed."""

    name: str
    overrides: dict[str, Any]
    seed: int | None
    config: dict[str, Any] = field(repr=False, default_factory=dict)  # resolved, validated config data

    def override_args(self) -> list[str]:
        """The overrides as `--set` arguments."""
        args = [f"{k}={format_value(v)}" for k, v in self.overrides.items()]
        if self.seed is not None:
            args.append(f"seed={self.seed}")
        return args


@dataclass
class SweepSpec:
    name: str
    base: str
    trials: list[Trial]
    swept_keys: list[str]  # the dotted keys that vary across trials (seed excluded)
    source: str = ""  # the spec's TOML text, kept in the sweep folder
    fixed: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- presets


def sweep_preset_names() -> list[str]:
    if not _SWEEP_PRESET_DIR.is_dir():
        return []
    return sorted(p.name[:-5] for p in _SWEEP_PRESET_DIR.iterdir() if p.name.endswith(".toml"))


def sweep_preset_summary(name: str) -> str:
    first = Path(str(_SWEEP_PRESET_DIR / f"{name}.toml")).read_text().splitlines()[0]
    return first.lstrip("# ").strip()


def resolve_spec_path(spec: str) -> Path:
    """A sweep preset name or a TOML file path -> the file."""
    path = Path(spec)
    if spec.endswith(".toml") or "/" in spec or path.is_file():
        if not path.is_file():
            raise GrokscopeError(f"no such sweep spec file: {spec}")
        return path
    preset = Path(str(_SWEEP_PRESET_DIR / f"{spec}.toml"))
    if not preset.is_file():
        raise GrokscopeError(
            f"unknown sweep preset {spec!r}; known: {', '.join(sweep_preset_names()) or 'none'} "
            "(or pass the path of a sweep spec .toml file)"
        )
    return preset


# ----------------------------------------------------------------------------- loading


def load_spec(
    spec: str,
    extra_set: list[str] | None = None,
    base: str | None = None,
    seeds: int | list[int] | None = None,
) -> SweepSpec:
    """Read and validate a sweep spec; `extra_set`, `base`, `seeds` override the file (CLI flags)."""
    path = resolve_spec_path(spec)
    data = read_toml(path)
    return parse_spec(data, path, extra_set=extra_set, base=base, seeds=seeds, source=path.read_text())


def parse_spec(
    data: dict[str, Any],
    path: Path,
    extra_set: list[str] | None = None,
    base: str | None = None,
    seeds: int | list[int] | None = None,
    source: str = "",
) -> SweepSpec:
    where = f"sweep spec {path}"
    _check_keys(data, _TOP_KEYS, "", where)
    head = data.get("sweep", {})
    if not isinstance(head, dict):
        raise GrokscopeError(f"{where}: [sweep] must be a table")
    _check_keys(head, _SWEEP_KEYS, "sweep.", where)
    name = head.get("name", path.stem)
    if not isinstance(name, str) or not name or _UNSAFE.search(name) or name.startswith("."):
        raise GrokscopeError(f"{where}: sweep.name must be a folder name of letters, digits and ._+-=")

    base = base or head.get("base")
    if not isinstance(base, str) or not base:
        raise GrokscopeError(f"{where}: missing sweep.base (a preset name or a config file path)")
    base_data = _load_base(base, path, where)

    fixed = head.get("set", [])
    if not isinstance(fixed, list) or not all(isinstance(s, str) for s in fixed):
        raise GrokscopeError(f"{where}: sweep.set must be a list of 'key=value' strings")
    fixed = [*fixed, *(extra_set or [])]
    try:
        base_data = apply_overrides(base_data, fixed)
    except GrokscopeError as e:
        raise GrokscopeError(f"{where}: {e}") from None

    seed_list = _seeds(seeds if seeds is not None else head.get("seeds"), where)
    points = _grid_points(data, where)
    entries = _list_entries(data, where)
    combos = [{**g, **e} for g in points for e in entries]
    if seed_list is not None and any("seed" in c for c in combos):
        raise GrokscopeError(f"{where}: `seed` is varied in [grid]/[[trials]] and also given as sweep.seeds")

    swept = _swept_keys(combos)
    trials = []
    for combo in combos:
        for seed in seed_list if seed_list is not None else [None]:
            trials.append(_make_trial(combo, seed, swept, base_data, where))
    _check_unique_names(trials, where)
    return SweepSpec(name, base, trials, swept, source=source, fixed=fixed)


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], prefix: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean `{prefix}{close[0]}`?)" if close else f"; allowed: {', '.join(allowed)}"
            raise GrokscopeError(f"{where}: unknown key `{prefix}{key}`{hint}")


def _load_base(base: str, spec_path: Path, where: str) -> dict[str, Any]:
    from grokscope.presets import load_preset_or_file

    candidate = spec_path.parent / base
    if (base.endswith(".toml") or "/" in base) and candidate.is_file():
        return read_toml(candidate)  # relative to the spec file, like an include
    try:
        return load_preset_or_file(base)
    except GrokscopeError as e:
        raise GrokscopeError(f"{where}: sweep.base: {e}") from None


def _seeds(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise GrokscopeError(f"{where}: sweep.seeds must be >= 1 (a count) or a list of seeds")
        return list(range(value))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        if len(set(value)) != len(value):
            raise GrokscopeError(f"{where}: sweep.seeds has a repeated seed: {value}")
        return list(value)
    raise GrokscopeError(f"{where}: sweep.seeds must be a count (e.g. 3) or a non-empty list of integers")


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"task": {"p": [..]}, "train.lr": [..]} -> {"task.p": [..], "train.lr": [..]}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _grid_points(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if "grid" not in data:
        return [{}]
    grid = data["grid"]
    if not isinstance(grid, dict):
        raise GrokscopeError(f"{where}: [grid] must be a table of key = [values]")
    grid = flatten(grid)
    if not grid:
        raise GrokscopeError(f"{where}: [grid] is empty; give at least one key = [values] (or drop [grid])")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise GrokscopeError(f"{where}: grid.{key} must be a list of values, got {values!r}")
        if not values:
            raise GrokscopeError(f"{where}: grid.{key} is an empty list; a grid needs at least one value")
        if len({format_value(v) for v in values}) != len(values):
            raise GrokscopeError(f"{where}: grid.{key} repeats a value: {values}")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _list_entries(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if "trials" not in data:
        return [{}]
    entries = data["trials"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise GrokscopeError(f"{where}: trials must be an array of tables ([[trials]] entries)")
    if not entries:
        raise GrokscopeError(f"{where}: trials is empty; give at least one [[trials]] entry (or drop it)")
    return [flatten(e) for e in entries]


def _swept_keys(combos: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for combo in combos:
        keys.extend(k for k in combo if k not in keys and k != "name")
    return keys


def _make_trial(
    combo: dict[str, Any], seed: int | None, swept: list[str], base: dict[str, Any], where: str
) -> Trial:
    overrides = dict(combo)
    name = overrides.pop("name", None) or trial_name(overrides, seed, swept)
    if not isinstance(name, str) or not name or _UNSAFE.search(name) or name.startswith("."):
        raise GrokscopeError(
            f"{where}: trial name {name!r} must be a non-empty folder name of letters, digits and ._+-="
        )
    trial = Trial(name, overrides, seed)
    try:
        data = apply_overrides(base, [*trial.override_args(), f"name={format_value(name)}"])
        config = from_dict(data)
    except GrokscopeError as e:
        raise GrokscopeError(f"{where}: trial {name!r}: {e}") from None
    trial.config = config.to_dict()
    return trial


def _check_unique_names(trials: list[Trial], where: str) -> None:
    seen: dict[str, Trial] = {}
    for t in trials:
        if t.name in seen:
            other = seen[t.name]
            raise GrokscopeError(
                f"{where}: two trials would share the folder name {t.name!r} "
                f"({_describe(other)} and {_describe(t)}); make the values distinct or give "
                "[[trials]] entries a `name`"
            )
        seen[t.name] = t


def _describe(t: Trial) -> str:
    return ", ".join(t.override_args()) or "the base config"


# ----------------------------------------------------------------------------- naming

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def format_value(value: Any) -> str:
    """A value as `--set` reads it back (TOML): 0.3, 1e-3, true, [1, 2], "text"."""
    import tomli_w

    return tomli_w.dumps({"v": value})[4:].strip()


def _name_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "-".join(_name_value(v) for v in value)
    return _UNSAFE.sub("-", str(value)).strip("-") or "_"


def trial_name(overrides: dict[str, Any], seed: int | None, swept: list[str]) -> str:
    """`frac_train=0.3__seed=1`: each override by its last key part (the full key where two clash)."""
    short = {k: k.rsplit(".", 1)[-1] for k in swept}
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    parts = [
        f"{short[k] if counts[short[k]] == 1 else k}={_name_value(v)}"
        for k, v in overrides.items()
        if k in short
    ]
    if seed is not None:
        parts.append(f"seed={seed}")
    return "__".join(parts) or "base"
