"""adaptkd — adaptive knowledge distillation for PyTorch.

Public entry points (stable): ``build_model``, ``list_models``, ``load_config``, ``train``,
``evaluate``; :class:`adaptkd.Distiller` (any method inside your own training loop); the loss
functions in :mod:`adaptkd.losses`; the balancers in :mod:`adaptkd.balance`;
:class:`adaptkd.taps.FeatureTaps`.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "build_model": ("adaptkd.models", "build_model"),
    "list_models": ("adaptkd.models", "list_models"),
    "load_config": ("adaptkd.config", "load_config"),
    "train": ("adaptkd.engine.api", "train"),
    "evaluate": ("adaptkd.engine.evaluate", "evaluate"),
    "Trainer": ("adaptkd.engine.trainer", "Trainer"),
    "FeatureTaps": ("adaptkd.taps", "FeatureTaps"),
    "Distiller": ("adaptkd.distiller", "Distiller"),
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'adaptkd' has no attribute {name!r}")
