"""Building the networks of a config: zoo models, optional timm/torchvision models, checkpoints."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from adaptkd.config import ConfigError, NetConfig
from adaptkd.engine.checkpoint import CheckpointError, load_into, load_state_dict_for

__all__ = ["build_network", "freeze", "count_params", "MissingExtraError"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def _external(arch: str, num_classes: int, args: dict[str, Any]) -> nn.Module:
    lib, _, name = arch.partition(":")
    if lib == "timm":
        try:
            import timm  # type: ignore[import-not-found]
        except Exception as exc:  # noqa: BLE001 - ImportError or a broken compiled extension
            raise MissingExtraError(
                f"model {arch!r} needs timm, which is not importable here ({type(exc).__name__}); "
                "install the extra: pip install 'adaptkd[vision]'"
            ) from None
        return timm.create_model(name, num_classes=num_classes, **args)
    try:
        import torchvision  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001
        raise MissingExtraError(
            f"model {arch!r} needs torchvision, which is not importable here ({type(exc).__name__}); "
            "install the extra: pip install 'adaptkd[vision]'"
        ) from None
    return torchvision.models.get_model(name, num_classes=num_classes, **args)


def build_network(net: NetConfig, num_classes: int, in_channels: int, *, field: str) -> nn.Module:
    """Build the network described by ``net`` and load its checkpoint (if any)."""
    from adaptkd.models import build_model

    args = dict(net.args)
    try:
        if net.arch.startswith(("timm:", "torchvision:")):
            model = _external(net.arch, num_classes, args)
        else:
            if in_channels != 3 and "in_channels" not in args:
                args["in_channels"] = in_channels
            model = build_model(net.arch, num_classes, **args)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"field `{field}`: cannot build {net.arch!r} with args {net.args}: {exc}") from None
    if net.checkpoint is not None:
        path = os.path.expanduser(net.checkpoint)
        try:
            state = load_state_dict_for(path, arch=net.arch, num_classes=num_classes)
            load_into(model, state, source=path, arch=net.arch)
        except CheckpointError as exc:
            raise CheckpointError(f"field `{field}.checkpoint`: {exc}") from None
    return model


def freeze(model: nn.Module) -> nn.Module:
    """Frozen teacher: eval mode, ``requires_grad=False`` everywhere."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict tensors (what a checkpoint of it weighs, minus framing)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
