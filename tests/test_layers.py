"""The layers import downward only: importing a layer alone, in a fresh interpreter, loads no
module of a higher layer (docs/architecture.md draws the same picture)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# lowest first; a module may import its own layer and those before it
LAYERS = [
    ["grokscope.errors", "grokscope.devices", "grokscope.config", "grokscope.files", "grokscope.registry", "grokscope.presets"],
    ["grokscope.tasks", "grokscope.model"],
    ["grokscope.scoring"],
    ["grokscope.run"],
    ["grokscope.train"],
    [
        "grokscope.analysis",
        "grokscope.interp",
        "grokscope.evaluation",
        "grokscope.lengths",
        "grokscope.sweep",
        "grokscope.importing",
    ],
    ["grokscope.figures", "grokscope.report"],
    ["grokscope.demo"],
    ["grokscope.cli"],
]


def _layer_of(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return i
    return None


def _loaded_after_import(module: str) -> list[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('grokscope'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", [m for layer in LAYERS for m in layer])
def test_importing_a_layer_loads_no_higher_layer(module):
    own = _layer_of(module)
    loaded = _loaded_after_import(module)
    higher = [m for m in loaded if (_layer_of(m) or 0) > own]
    assert not higher, f"importing {module} (layer {own}) loads higher layers: {higher}"


def test_every_module_has_a_layer():
    from pathlib import Path

    import grokscope

    root = Path(grokscope.__file__).parent
    names = {"grokscope." + ".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.py")}
    names = {n.removesuffix(".__init__") for n in names} - {"grokscope", "grokscope.__main__"}
    assert not [n for n in sorted(names) if _layer_of(n) is None]
