"""Model registry: ``register_model``, ``build_model``, ``list_models``.

A builder is a function ``fn(num_classes: int, **kwargs) -> nn.Module``. Every model it returns
must carry the zoo's feature contract (checked by :func:`build_model`):

* ``tap_blocks: list[str]`` -- module paths (as in ``named_modules()``) of every residual block /
  stage output, in forward order; their outputs are the features other parts of the library read
  with forward hooks (``adaptkd.taps.FeatureTaps``).
* ``head_name: str`` -- module path of the final classifier ``nn.Linear``.
* ``feature_dim: int`` -- ``in_features`` of that head (the pooled feature is the head's input).
"""

from __future__ import annotations

import difflib
import operator
from typing import Callable, TypeVar, overload

from torch import nn

Builder = Callable[..., nn.Module]
F = TypeVar("F", bound=Builder)

_REGISTRY: dict[str, Builder] = {}


@overload
def register_model(name: F) -> F: ...
@overload
def register_model(name: str | None = None) -> Callable[[F], F]: ...


def register_model(name=None):
    """Decorator registering a model builder under ``name`` (default: the function's name).

    Usable as ``@register_model()``, ``@register_model("name")`` or bare ``@register_model``.
    Registering a name twice raises ``ValueError``.
    """
    if callable(name):  # bare ``@register_model``
        return register_model(None)(name)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"register_model: name must be a non-empty string or None, got {name!r}")

    def decorator(fn: F) -> F:
        key = name if name is not None else fn.__name__
        if key in _REGISTRY:
            prev = _REGISTRY[key]
            raise ValueError(
                f"model {key!r} is already registered (by {prev.__module__}.{prev.__qualname__}); "
                "pick another name"
            )
        _REGISTRY[key] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def _closest(name: str, n: int = 5) -> list[str]:
    by_lower = {k.lower(): k for k in _REGISTRY}
    hits = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.4)
    return [by_lower[h] for h in hits]


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with a ``num_classes``-way head.

    ``kwargs`` go to the builder (e.g. ``in_channels=1``, ``width_mult=1.0``, ``drop_path=0.1``).
    Raises ``KeyError`` (naming the closest registered names) for an unknown name and
    ``ValueError`` for ``num_classes`` that is not an integer >= 1.
    """
    if name not in _REGISTRY:
        close = _closest(name)
        hint = (
            f"closest registered names: {', '.join(close)}"
            if close
            else f"registered names: {', '.join(list_models())}"
        )
        raise KeyError(f"unknown model {name!r}; {hint}")
    try:
        if isinstance(num_classes, bool):
            raise TypeError
        n = operator.index(num_classes)
    except TypeError:
        raise ValueError(
            f"num_classes must be an integer >= 1, got {num_classes!r} (model {name!r})"
        ) from None
    if n < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r} (model {name!r})")
    model = _REGISTRY[name](n, **kwargs)
    _check_contract(name, model)
    return model


def _check_contract(name: str, model: nn.Module) -> None:
    """Fail loudly if a builder returns a model without the zoo's feature attributes."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"builder of {name!r} returned {type(model).__name__}, not an nn.Module")
    missing = [a for a in ("tap_blocks", "head_name", "feature_dim") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"model {name!r} lacks the zoo attributes {missing}")
    modules = dict(model.named_modules())
    unknown = [t for t in model.tap_blocks if t not in modules]
    if unknown:
        raise TypeError(f"model {name!r}: tap_blocks name modules that do not exist: {unknown}")
    head = modules.get(model.head_name)
    if not isinstance(head, nn.Linear) or head.in_features != model.feature_dim:
        raise TypeError(
            f"model {name!r}: head_name {model.head_name!r} must be an nn.Linear with "
            f"in_features == feature_dim ({model.feature_dim})"
        )
