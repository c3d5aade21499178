"""The transformer, its hook points and its positional encodings."""

from grokscope.model.hooks import HookedRootModule, HookPoint
from grokscope.model.transformer import Transformer

__all__ = ["HookPoint", "HookedRootModule", "Transformer"]
