"""Building the networks of a config: registered models (zoo or namespaced) and their checkpoints."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from adaptkd.config import NetConfig
from adaptkd.engine.checkpoint import CheckpointError, load_into, load_state_dict_for
from adaptkd.errors import ConfigError, MissingExtraError
from adaptkd.models.registry import build_model, namespace_of

__all__ = ["build_network", "freeze", "count_params", "MissingExtraError"]


def build_network(net: NetConfig, num_classes: int, in_channels: int, *, field: str) -> nn.Module:
    """Build the network described by ``net`` and load its checkpoint (if any)."""
    args = dict(net.args)
    if in_channels != 3 and "in_channels" not in args and namespace_of(net.arch) is None:
        args["in_channels"] = in_channels  # zoo models take the data's channels; namespaced ones are RGB
    try:
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
