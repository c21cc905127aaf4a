"""The networks of a run as the engine holds them: built or passed learners and frozen teachers,
their feature taps, their forward wrappers (DDP, compile) and one optimiser per learner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from adaptkd.config import Config, ConfigError, NetConfig
from adaptkd.engine.networks import build_network, check_label_order, freeze
from adaptkd.engine.optim import build_optimizer
from adaptkd.engine.runtime import maybe_compile
from adaptkd.taps import FeatureTaps

__all__ = [
    "NetworkSet",
    "Optimisers",
    "attach_taps",
    "build_networks",
    "build_optimisers",
    "check_class_counts",
    "forward_networks",
]


@dataclass
class NetworkSet:
    """``networks`` by name (config order: student, teachers, peers) on the device; ``learners``: the
    trainable ones, ``frozen``: frozen teachers (eval, no grad); ``fields``: each network's config field."""

    networks: dict[str, nn.Module]
    learners: list[str]
    frozen: list[str]
    fields: dict[str, str] = field(default_factory=dict)


def build_networks(cfg: Config, pipe: Any, device: torch.device, given: dict[str, nn.Module] | None,
                   log: Callable[[str], None]) -> NetworkSet:
    """Every network of ``cfg``: ``given[name]`` when passed (bring your own model), else built from its
    config entry; a teacher that is not ``trainable`` is frozen. Unknown passed names: ``ConfigError``."""
    net_cfgs = cfg.network_names()
    given = dict(given or {})
    names = list(net_cfgs)
    n_teachers = len(cfg.teachers)
    roles = [("student", "student", True)]
    roles += [(f"teachers.{i}", n, net_cfgs[n].trainable) for i, n in enumerate(names[1 : 1 + n_teachers])]
    roles += [(f"peers.{i}", n, True) for i, n in enumerate(names[1 + n_teachers :])]
    out = NetworkSet({}, [], [])
    for fld, name, trainable in roles:
        nc = net_cfgs[name]
        if name in given:
            net = given.pop(name)
        else:
            net = build_network(nc, pipe.num_classes, pipe.in_channels, field=fld, teacher=not trainable)
        for note in getattr(net, "notes", []):
            log(f"{name}: {note}")
        classes = list(getattr(pipe, "class_names", None) or [])
        for line in check_label_order(name, net, classes, field=fld):
            log(line)
        if trainable:
            out.learners.append(name)
        else:
            freeze(net)
            out.frozen.append(name)
        out.networks[name] = net.to(device)
        if cfg.run.channels_last:
            out.networks[name] = out.networks[name].to(memory_format=torch.channels_last)  # type: ignore[call-overload, unused-ignore]
        out.fields[name] = fld
    if given:
        raise ConfigError(f"networks {sorted(given)} were passed but the config has only {list(net_cfgs)}")
    return out


def check_class_counts(networks: dict[str, nn.Module], views: Callable[[str], nn.Module], x: Tensor,
                       num_classes: int, net_cfgs: dict[str, NetConfig], dataset: str) -> None:
    """``ConfigError`` for a network whose logits on images ``x`` [B, C, H, W] (through its input view
    ``views(name)``) are not ``[B, num_classes]``; backbones (no logits) are skipped."""
    for name, net in networks.items():
        if not getattr(net, "has_logits", True):
            continue  # a backbone: refused later by name if the method reads its logits
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(views(name)(x))
        except RuntimeError as exc:  # e.g. a network built for 3 channels on 1-channel data
            raise ConfigError(
                f"network {name!r} ({net_cfgs[name].arch}) cannot take the inputs of dataset "
                f"{dataset!r} ({tuple(x.shape[1:])}, channels x height x width): "
                f"{str(exc).splitlines()[0][:300]}") from None
        finally:
            net.train(was)
        if out.dim() != 2 or out.shape[1] != num_classes:
            raise ConfigError(
                f"network {name!r} ({net_cfgs[name].arch}) outputs {tuple(out.shape[1:])} classes, "
                f"but dataset {dataset!r} has {num_classes} classes"
            )


def attach_taps(method: Any, networks: dict[str, nn.Module], frozen: list[str], *,
                method_name: str) -> dict[str, FeatureTaps]:
    """The persistent feature taps ``method.taps()`` asks for (attached once; outputs replaced each forward)."""
    taps: dict[str, FeatureTaps] = {}
    for name, names in method.taps().items():
        if name not in networks:
            raise ConfigError(f"method {method_name!r} asks for taps on unknown network {name!r}")
        if names:
            try:
                taps[name] = FeatureTaps(networks[name], names, detach=name in frozen).attach()
            except KeyError as exc:
                raise ConfigError(f"method {method_name!r}: tap on {name}: {exc.args[0]}") from None
    return taps


def forward_networks(nets: NetworkSet, method: nn.Module, device: torch.device, *, distributed: bool,
                     compile: bool) -> dict[str, nn.Module]:
    """The modules the step calls: under DDP the learners wrapped (rank 0's method modules and frozen
    teachers broadcast first; frozen teachers are never wrapped), then each ``torch.compile``d if asked."""
    forward: dict[str, nn.Module] = dict(nets.networks)
    if distributed:
        from adaptkd.engine.distributed import broadcast_state, wrap_learners

        # DDP itself copies rank 0's learners when it wraps them.
        broadcast_state(method)
        for name in nets.frozen:
            broadcast_state(nets.networks[name])
        forward.update(wrap_learners({n: nets.networks[n] for n in nets.learners}, device))
    if compile:  # after DDP: torch.compile of the DDP wrapper (the documented order)
        for name in list(forward):
            forward[name] = maybe_compile(forward[name], name)
    return forward


@dataclass
class Optimisers:
    """One optimiser per learner over its network's trainable ``params`` plus the method parameters
    assigned to it (``extra_params``); ``cfgs``: each learner's optim settings (its override applied)."""

    cfgs: dict[str, Any]
    optims: dict[str, torch.optim.Optimizer]
    params: dict[str, list[nn.Parameter]]
    extra_params: dict[str, list[nn.Parameter]]


def build_optimisers(cfg: Config, networks: dict[str, nn.Module], learners: list[str],
                     extra: dict[str, list[nn.Parameter]]) -> Optimisers:
    """The optimisers of ``learners``; ``extra``: method parameters by learner (``method.param_groups()``)."""
    unknown = set(extra) - set(learners)
    if unknown:
        raise ConfigError(f"method parameters assigned to unknown learners {sorted(unknown)}")
    net_cfgs = cfg.network_names()
    res = Optimisers({}, {}, {}, {n: list(extra.get(n, [])) for n in learners})
    for name in learners:
        ocfg = cfg.optim
        override = net_cfgs[name].optim
        if override:
            ocfg = type(ocfg).model_validate({**ocfg.model_dump(), **override})
        res.cfgs[name] = ocfg
        res.params[name] = [p for p in networks[name].parameters() if p.requires_grad]
        res.optims[name] = build_optimizer(res.params[name] + res.extra_params[name], ocfg)
    return res
