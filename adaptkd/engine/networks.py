"""Building the networks of a config: registered models (zoo or namespaced) and their checkpoints."""

from __future__ import annotations

import os

import torch
from torch import nn

from adaptkd.config import NetConfig
from adaptkd.constraints import short_repr
from adaptkd.engine.checkpoint import CheckpointError, load_into, load_state_dict_for
from adaptkd.errors import ConfigError, MissingExtraError
from adaptkd.models.registry import build_model, namespace_of

__all__ = ["build_network", "freeze", "count_params", "MissingExtraError", "MAX_PARAMS"]

#: parameters of one network (4 GB of float32 weights, 16 GB with gradients and Adam's moments)
MAX_PARAMS = 1_000_000_000


def _cut(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_network(net: NetConfig, num_classes: int, in_channels: int, *, field: str,
                  teacher: bool = False) -> nn.Module:
    """Build the network described by ``net`` and load its checkpoint (if any).

    ``teacher``: the network is a frozen teacher (an ecosystem model keeps its pretrained head,
    whose class count must match; a learner's head is made for ``num_classes``). A zoo network is
    first built on the ``meta`` device (no memory) to count its parameters: one above
    :data:`MAX_PARAMS` (e.g. a depth of 1000 in ``args``) is refused before any weight is allocated.
    """
    args = dict(net.args)
    if namespace_of(net.arch) is not None:
        if teacher:
            args["teacher"] = True
    elif in_channels != 3 and "in_channels" not in args:
        args["in_channels"] = in_channels  # zoo models take the data's channels; namespaced ones are RGB
    what = f"field `{field}`: cannot build {net.arch!r} with args {short_repr(net.args)}"
    size = 0
    if namespace_of(net.arch) is None:  # ecosystem models load their own (pretrained) weights
        try:
            with torch.device("meta"):
                size = count_params(build_model(net.arch, num_classes, **args))
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
            raise ConfigError(f"{what}: {_cut(str(exc))}") from None
    if size > MAX_PARAMS:
        raise ConfigError(f"{what}: it has {size:,} parameters; at most {MAX_PARAMS:,} (about "
                          f"{MAX_PARAMS * 4 / 2**30:.0f} GiB of float32 weights)")
    try:
        model = build_model(net.arch, num_classes, **args)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise ConfigError(f"{what}: {_cut(str(exc))}") from None
    if net.checkpoint is not None:
        path = os.path.expanduser(net.checkpoint)
        try:
            state = load_state_dict_for(path, arch=net.arch, num_classes=num_classes)
            load_into(model, state, source=path, arch=net.arch)
        except CheckpointError as exc:
            raise CheckpointError(f"field `{field}.checkpoint`: {exc}") from None
    return model


def check_logit_sources(method, networks: dict[str, nn.Module], net_cfgs: dict[str, NetConfig]) -> None:
    """``ConfigError`` naming every backbone (a network without a classifier) whose logits ``method`` reads."""
    wanted = method.logit_networks()
    bad = [n for n in networks if n in wanted and not getattr(networks[n], "has_logits", True)]
    if bad:
        names = ", ".join(f"{n!r} ({net_cfgs[n].arch})" for n in bad)
        raise ConfigError(
            f"method {method.name!r} reads the logits of {names}, a backbone without a classifier head; give a "
            "classifier (a checkpoint with an image-classification head) as a logit teacher, or use it with a "
            "feature method that does not read its logits (unic with kd_weight 0, fitnet with kd_weight 0, "
            "afd/rtk with kd_weight 0)"
        )


def _norm_label(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def check_label_order(name: str, net: nn.Module, class_names: list[str], *, field: str) -> list[str]:
    """A pretrained head's class names against the data's (in order); lines to log.

    The same names in another order can only give wrong targets: ``ConfigError``. Different names
    are reported (a line to log) and accepted. Numbered classes (``0``, ``1``, ...) are not compared.
    """
    labels = getattr(net, "label_names", None)
    if not labels or len(labels) != len(class_names) or all(str(c).isdigit() for c in class_names):
        return []
    ours, theirs = [_norm_label(c) for c in class_names], [_norm_label(n) for n in labels]
    if ours == theirs:
        return []
    wrong = [f"{i}: {labels[i]!r} vs {class_names[i]!r}" for i in range(len(ours)) if ours[i] != theirs[i]][:4]
    if sorted(ours) == sorted(theirs):
        raise ConfigError(f"field `{field}`: {name}'s labels are the data's classes in another order "
                          f"({'; '.join(wrong)}); its logits would be read against the wrong classes. "
                          "Rename or reorder the class folders to the teacher's id2label order")
    return [f"{name}: its labels differ from the data's class names ({'; '.join(wrong)}); check that label i is "
            "class i of your data"]


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
