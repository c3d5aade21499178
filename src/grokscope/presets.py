"""Named, documented configurations shipped with the package (`grokscope presets` lists them)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from grokscope.config import read_toml
from grokscope.errors import GrokscopeError

_PRESET_DIR = resources.files("grokscope") / "presets"


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".toml")] for p in _PRESET_DIR.iterdir() if p.name.endswith(".toml"))


def preset_path(name: str) -> Path:
    path = Path(str(_PRESET_DIR / f"{name}.toml"))
    if not path.is_file():
        raise GrokscopeError(
            f"unknown preset {name!r}; known presets: {', '.join(preset_names())} "
            "(or pass the path of a .toml config file)"
        )
    return path


def preset_summary(name: str) -> str:
    """The preset's first comment line, its one-line description."""
    first = preset_path(name).read_text().splitlines()[0]
    return first.lstrip("# ").strip()


def load_preset_or_file(spec: str) -> dict[str, Any]:
    """Raw config data from a preset name or a TOML file path."""
    if spec.endswith(".toml") or "/" in spec or Path(spec).is_file():
        return read_toml(Path(spec))
    return read_toml(preset_path(spec))
