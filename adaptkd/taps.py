"""FeatureTaps: read intermediate activations of any ``nn.Module`` by module name.

Forward hooks on named submodules; the model is not modified, and the hooks are removed when the
context exits. Works under ``torch.no_grad`` (teachers) and with autograd (students: the tapped
tensors keep their graph, so a feature loss backpropagates into the student).

    with FeatureTaps(model, ["layer1", "layer3.0.conv2"]) as taps:
        logits = model(x)
    feats = taps.outputs          # {name: tensor} from the last forward
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["FeatureTaps", "list_taps", "resolve_module"]


def list_taps(model: nn.Module) -> list[str]:
    """Every tappable submodule path of ``model`` (``named_modules`` order, root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel / DataParallel / torch.compile wrappers keep the real model inside.
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return _unwrap(inner)
    return model


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at path ``name``; ``KeyError`` naming the closest existing paths."""
    modules = dict(_unwrap(model).named_modules())
    if name in modules and name:
        return modules[name]
    options = [n for n in modules if n]
    close = difflib.get_close_matches(name, options, n=5, cutoff=0.3)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise KeyError(f"no submodule named {name!r} in {type(_unwrap(model)).__name__}{hint} (list them with adaptkd.taps.list_taps)")


class FeatureTaps:
    """Capture outputs (or inputs) of named submodules during forward passes.

    Args:
        model: any ``nn.Module`` (DDP/compile wrappers are looked through).
        names: module paths as in ``named_modules()``.
        capture: ``"output"`` (default) or ``"input"`` (the first positional input).
        detach: store detached tensors (for frozen teachers; saves memory).

    ``outputs`` holds ``{name: tensor}`` from the most recent forward. A module called several
    times in one forward keeps its last call (``calls`` counts them).
    """

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str],
        *,
        capture: Literal["output", "input"] = "output",
        detach: bool = False,
    ) -> None:
        if capture not in ("output", "input"):
            raise ValueError(f"capture must be 'output' or 'input', got {capture!r}")
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.capture = capture
        self.detach = detach
        self.outputs: dict[str, Any] = {}
        self.calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modules = {n: resolve_module(model, n) for n in self.names}

    def _hook(self, name: str):
        def fn(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            value = args[0] if self.capture == "input" else output
            if self.detach and isinstance(value, torch.Tensor):
                value = value.detach()
            self.outputs[name] = value
            self.calls[name] = self.calls.get(name, 0) + 1

        return fn

    def attach(self) -> "FeatureTaps":
        if not self._handles:
            for n, m in self._modules.items():
                self._handles.append(m.register_forward_hook(self._hook(n)))
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.outputs = {}
        self.calls = {}

    def __enter__(self) -> "FeatureTaps":
        self.clear()
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __del__(self) -> None:  # hooks never outlive the object
        try:
            self.remove()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
