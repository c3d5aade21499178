"""`safetensors`: weights already in grokscope's names (e.g. `final.safetensors` from another
grokscope, or a colleague's export); matrices stored as transposes are turned round."""

from __future__ import annotations

from typing import Any

from grokscope.importing.format import Converted, ImportFormat, unpack
from grokscope.registry import IMPORT_FORMATS


def convert(raw: dict[str, Any], source_config: dict[str, Any] | None) -> Converted:
    u = unpack(raw)
    return Converted(list(u.state_dicts), {}, u.train_losses, u.test_losses, u.split)


NATIVE = IMPORT_FORMATS.register(
    "safetensors",
    ImportFormat("safetensors", "weights in grokscope's own names (.safetensors or .pth)", convert),
)
