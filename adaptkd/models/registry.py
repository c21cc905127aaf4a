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

import operator
from typing import Any, Callable, TypeVar, cast, overload

from torch import nn

from adaptkd._registry import Registry

__all__ = ["Builder", "register_model", "register_model_namespace", "list_models", "model_exists", "build_model"]

Builder = Callable[..., nn.Module]
F = TypeVar("F", bound=Builder)

MODELS: Registry[Builder] = Registry("model")
#: ``prefix`` → ``fn(name, num_classes, **kwargs)`` building ``prefix:name`` (timm, torchvision, ...)
_NAMESPACES: Registry[Builder] = Registry("model namespace")


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
        MODELS.add(name if name is not None else fn.__name__, fn)
        return fn

    return decorator


def register_model_namespace(prefix: str, builder: Builder) -> None:
    """Resolve every model name ``prefix:NAME`` with ``builder(NAME, num_classes, **kwargs)``.

    A namespace builds models from another library (``hf:``, ``timm:``, ``torchvision:``, registered
    in :mod:`adaptkd.models`): they are not checked against the zoo's feature contract and take no
    ``in_channels`` (they are RGB models). The builder raises
    :class:`~adaptkd.errors.MissingExtraError` when its library is not installed, and
    ``KeyError``/``TypeError``/``ValueError`` for a name or argument it refuses.
    """
    if ":" in prefix:
        raise ValueError(f"register_model_namespace: prefix {prefix!r} must not contain ':'")
    _NAMESPACES.add(prefix, builder)


def list_models() -> list[str]:
    """Names of every registered model, sorted (namespaced names such as ``timm:NAME`` are not listed)."""
    return MODELS.names()


def namespace_of(name: str) -> str | None:
    """The registered namespace of ``name`` (``"timm"`` for ``timm:resnet18``), or None for zoo names."""
    prefix, sep, _ = str(name).partition(":")
    return prefix if sep and prefix in _NAMESPACES else None


def needs_rgb(name: str) -> bool:
    """Whether model ``name`` takes three-channel input whatever the data: a model from a registered namespace
    (``hf:``, ``timm:``, ``torchvision:``) was built for RGB; a zoo model follows the data's channels."""
    return namespace_of(name) is not None


def model_exists(name: str) -> bool:
    """Whether :func:`build_model` knows ``name``: a zoo model or a name in a registered namespace."""
    return name in MODELS or namespace_of(name) is not None


def build_model(name: str, num_classes: int, *, in_channels: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the model ``name`` (zoo name or ``namespace:NAME``) with a ``num_classes``-way head.

    ``kwargs`` go to the builder (e.g. ``width_mult=1.0``, ``drop_path=0.1``). ``in_channels``
    goes to zoo builders (omitted when None); namespaced models ignore it. Raises ``KeyError``
    (naming the closest registered names) for an unknown name and ``ValueError`` for
    ``num_classes`` that is not an integer >= 1.
    """
    prefix = namespace_of(name)
    if prefix is not None:
        return _NAMESPACES.get(prefix)(name.partition(":")[2], num_classes, **kwargs)
    builder = MODELS.get(name)
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
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    model = builder(n, **kwargs)
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
    unknown = [t for t in cast("list[str]", model.tap_blocks) if t not in modules]
    if unknown:
        raise TypeError(f"model {name!r}: tap_blocks name modules that do not exist: {unknown}")
    head = modules.get(model.head_name)
    if not isinstance(head, nn.Linear) or head.in_features != model.feature_dim:
        raise TypeError(
            f"model {name!r}: head_name {model.head_name!r} must be an nn.Linear with "
            f"in_features == feature_dim ({model.feature_dim})"
        )
