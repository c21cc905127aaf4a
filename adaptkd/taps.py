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

__all__ = ["FeatureTaps", "INPUT", "input_of", "list_taps", "resolve_module"]


def list_taps(model: nn.Module) -> list[str]:
    """Every tappable submodule path of ``model`` (``named_modules`` order, root excluded).

    DDP / DataParallel / ``torch.compile`` wrappers are looked through, so the names are those of
    the model you built.
    """
    return [name for name, _ in _unwrap(model).named_modules() if name]


def _is_wrapper(model: nn.Module) -> bool:
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return True
    # torch.compile returns an OptimizedModule holding the real model in ``_orig_mod``.
    return type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module)


def _unwrap(model: nn.Module) -> nn.Module:
    """The real model inside DDP / DataParallel / ``torch.compile`` wrappers (any nesting).

    Only those wrapper types are looked through: a user model that merely has an attribute called
    ``module`` is left alone.
    """
    while _is_wrapper(model):
        inner = model.module if hasattr(model, "module") and not hasattr(model, "_orig_mod") else model._orig_mod
        assert isinstance(inner, nn.Module)
        model = inner
    return model


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at path ``name``; ``KeyError`` naming the closest existing paths.

    ``name`` is a path of the unwrapped model (``layer1.0``); a path through the wrapper
    (``module.layer1.0``, ``_orig_mod.layer1.0``) is accepted too.
    """
    if not isinstance(name, str) or not name:
        raise KeyError(f"a tap name must be a non-empty module path string, got {name!r}")
    inner = _unwrap(model)
    modules = dict(inner.named_modules())
    if name in modules:
        return modules[name]
    if inner is not model:
        outer = dict(model.named_modules())
        if name in outer:
            return outer[name]
    options = [n for n in modules if n]
    close = difflib.get_close_matches(name, options, n=5, cutoff=0.3)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise KeyError(
        f"no submodule named {name!r} in {type(inner).__name__}{hint} "
        "(list them with adaptkd.taps.list_taps(model))"
    )


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


#: suffix of a tap name that captures the module's input instead of its output
INPUT = ":input"


def input_of(path: str) -> str:
    """The tap name of module ``path``'s input (``"fc"`` → ``"fc:input"``)."""
    return path + INPUT


class FeatureTaps:
    """Capture outputs (or inputs) of named submodules during forward passes.

    Args:
        model: any ``nn.Module`` (DDP / DataParallel / ``torch.compile`` wrappers are looked
            through).
        names: module paths as in ``named_modules()`` (see :func:`list_taps`); a single string is
            one name. A path ending in ``":input"`` (:func:`input_of`) captures that module's input
            whatever ``capture`` says, under that name: a method's ``taps()`` can ask for a
            classifier head's input (the pooled feature) next to block outputs.
        capture: ``"output"`` (default) or ``"input"`` (the module's first positional input, or
            its first keyword argument when it was called with keywords only).
        detach: store detached tensors (for frozen teachers; saves memory). Tuples, lists and
            dicts of tensors are detached element-wise.

    ``outputs`` holds ``{name: value}`` from the most recent forward of ``model``: each forward of
    the (unwrapped) root model starts a fresh record, so a module skipped in that forward has no
    entry. A module called several times in one forward (shared or reused modules) keeps the value
    of its last call, and ``calls[name]`` counts its calls in that forward. Without a forward of
    the root (a submodule called directly) values and counts accumulate until :meth:`clear`.

    Use as a context manager (hooks removed on exit), or ``attach()`` / ``remove()`` for taps that
    persist across steps (the engine keeps one per network). Hooks never change the model's
    outputs; the captured student tensors keep their autograd graph.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str] | str,
        *,
        capture: Literal["output", "input"] = "output",
        detach: bool = False,
    ) -> None:
        if capture not in ("output", "input"):
            raise ValueError(f"capture must be 'output' or 'input', got {capture!r}")
        if isinstance(names, str):
            names = [names]
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.capture = capture
        self.detach = detach
        self.outputs: dict[str, Any] = {}
        self.calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._root = _unwrap(model)
        self._modules = {n: resolve_module(model, n.removesuffix(INPUT)) for n in self.names}

    def _hook(self, name: str):
        capture = "input" if name.endswith(INPUT) else self.capture

        def fn(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if capture == "input":
                value = args[0] if args else next(iter(kwargs.values()), None)
            else:
                value = output
            if self.detach:
                value = _detached(value)
            self.outputs[name] = value
            self.calls[name] = self.calls.get(name, 0) + 1

        return fn

    def _start_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "FeatureTaps":
        """Register the hooks (idempotent)."""
        if not self._handles:
            self._handles.append(self._root.register_forward_pre_hook(self._start_forward))
            for n, m in self._modules.items():
                self._handles.append(m.register_forward_hook(self._hook(n), with_kwargs=True))
        return self

    def remove(self) -> None:
        """Remove every hook this object registered (idempotent)."""
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
