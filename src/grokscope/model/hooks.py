"""Hook points: named identity modules where activations can be read or replaced (TransformerLens style)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]


class HookPoint(nn.Module):
    """Identity; forward hooks registered on it see (and may replace) the activation."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class HookedRootModule(nn.Module):
    """Base for models with hook points: names them, runs with hooks, caches activations."""

    def setup_hooks(self) -> None:
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module
        self._hooks_active = False

    @contextmanager
    def hooks(self, fwd_hooks: list[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator[None]:
        """Run with forward hooks; `fn(activation, hook)` may return a replacement activation."""
        handles = []
        try:
            for name, fn in fwd_hooks:
                names = [n for n in self.hook_dict if name(n)] if callable(name) else [name]
                for n in names:
                    if n not in self.hook_dict:
                        raise KeyError(f"no hook point named {n!r}; see model.hook_dict")
                    hook_point = self.hook_dict[n]
                    handles.append(
                        hook_point.register_forward_hook(
                            lambda mod, inp, out, fn=fn: fn(out, mod)  # noqa: B023
                        )
                    )
            self._hooks_active = True
            yield
        finally:
            self._hooks_active = False
            for h in handles:
                h.remove()

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: list, **kwargs) -> torch.Tensor:
        with self.hooks(fwd_hooks):
            return self(tokens, **kwargs)

    def run_with_cache(
        self,
        tokens: torch.Tensor,
        names_filter: str | list[str] | Callable[[str], bool] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits plus a dict of named activations; `names_filter` keeps only those asked for."""
        if names_filter is None:
            wanted = list(self.hook_dict)
        elif isinstance(names_filter, str):
            wanted = [names_filter]
        elif callable(names_filter):
            wanted = [n for n in self.hook_dict if names_filter(n)]
        else:
            wanted = list(names_filter)
        cache: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach()

        with self.hooks([(n, save) for n in wanted]):
            logits = self(tokens, **kwargs)
        return logits, cache
