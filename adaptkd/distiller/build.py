"""What a :class:`~adaptkd.distiller.Distiller` is built from: its arguments or a config, turned into networks.

:func:`config_from_arguments` writes the constructor's arguments as a config (the given modules by network
name); :func:`config_from_file` reads a config (path, dict or ``Config``) and the modules passed for it;
:func:`data_inputs` reads from a ``DataBundle`` what a config alone does not say. :func:`assemble` then builds
the networks the config names and no module was given for, places them, freezes the teachers and prepares
the method's context (:class:`~adaptkd.distiller.context.ExplainedContext`). Every refusal is a
:class:`~adaptkd.distiller.output.DistillerError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from adaptkd.distiller.context import ExplainedContext
from adaptkd.distiller.output import DistillerError
from adaptkd.engine.distributed import communicator
from adaptkd.methods import method_class
from adaptkd.taps import _unwrap

__all__ = ["Assembled", "assemble", "config_from_arguments", "config_from_file", "data_inputs", "fields_of"]

Network = nn.Module | str | dict[str, Any]


def config_from_arguments(student: nn.Module, teachers: Sequence[Network] | Network, peers: Sequence[Network] | Network,
                          method: str, *, balance: str | dict[str, Any] | None, seed: int, epochs: int | None,
                          options: dict[str, Any]) -> tuple[Any, dict[str, nn.Module]]:
    """(the validated config the Distiller's arguments describe, {network name: module given})."""
    if not isinstance(student, nn.Module):
        raise DistillerError(f"student must be an nn.Module, got {type(student).__name__}")
    if isinstance(teachers, (nn.Module, str, dict)):
        teachers = [teachers]
    if isinstance(peers, (nn.Module, str, dict)):
        peers = [peers]
    raw: dict[str, Any] = {"student": {"arch": "custom"}, "teachers": [], "peers": [],
                           "method": {"name": method, **options}, "balance": _balance_section(balance),
                           "run": {"seed": seed}}
    online = _kind(method) == "online"
    given: dict[str, nn.Module] = {"student": student}
    for role, items in (("teachers", teachers), ("peers", peers)):
        for i, item in enumerate(items):
            name = f"teacher{i}" if role == "teachers" else f"peer{i}"
            entry: dict[str, Any]
            if isinstance(item, nn.Module):
                given[name], entry = item, {"arch": "custom"}
            elif isinstance(item, str):
                entry = {"arch": item}
            elif isinstance(item, dict):
                entry = dict(item)
            else:
                raise DistillerError(f"{role}[{i}] must be an nn.Module, a zoo name or a dict of network fields, "
                                     f"got {type(item).__name__}")
            if role == "teachers":
                entry.setdefault("trainable", online)
            raw[role].append(entry)
    if epochs is not None:
        raw["optim"] = {"epochs": epochs}
    _check_distinct(given)
    return _load(raw, provided=set(given)), given


def config_from_file(config: Any, networks: Mapping[str, nn.Module] | None) -> tuple[Any, dict[str, nn.Module]]:
    """(the validated config ``config`` (path, dict or ``Config``), {network name: module passed for it})."""
    from adaptkd.config import Config, config_to_dict, read_yaml

    given = dict(networks or {})
    if isinstance(config, Config):
        raw = config_to_dict(config)
    elif isinstance(config, dict):
        raw = dict(config)
    else:
        raw = read_yaml(config)
    check = _load(raw, provided=set(), check=False)
    names = list(check.network_names())
    unknown = set(given) - set(names)
    if unknown:
        raise DistillerError(f"networks {sorted(unknown)} were passed but the config has only {names}")
    _check_distinct(given)
    return _load(raw, provided=set(given)), given


def data_inputs(data: Any, cfg: Any, example_input: Tensor | None, num_classes: int | None,
                steps_per_epoch: int | None) -> tuple[Tensor | None, int | None, int | None]:
    """``(example_input, num_classes, steps_per_epoch)``, each as given or else read from the ``DataBundle``
    ``data``: its first 4 training images (normalised), its class count, the steps of one epoch (``data.batch_size``,
    ``data.drop_last`` and ``run.max_steps_per_epoch`` of ``cfg``, over the process group's ranks)."""
    from adaptkd.data import Augment, num_batches

    num_classes = num_classes or data.num_classes
    if example_input is None:
        example_input = Augment(data.mean, data.std, train=False)(data.train.x[:4])
    if steps_per_epoch is None:
        steps_per_epoch = num_batches(len(data.train), cfg.data.batch_size, drop_last=cfg.data.drop_last,
                                      world_size=communicator().world_size)
        steps_per_epoch = min(steps_per_epoch, cfg.run.max_steps_per_epoch or steps_per_epoch)
    return example_input, num_classes, steps_per_epoch


@dataclass
class Assembled:
    """The networks of a config on their device (``networks`` in config order; ``learners`` train, ``frozen``
    teachers are frozen), ``teacher_inputs`` (None: every teacher is fed the batch as is) and the method's
    context ``ctx``."""

    net_cfgs: dict[str, Any]
    networks: dict[str, nn.Module]
    learners: list[str]
    frozen: list[str]
    teacher_inputs: nn.Module | None
    ctx: ExplainedContext


def assemble(cfg: Any, given: dict[str, nn.Module], *, example_input: Tensor | None, num_classes: int | None,
             epochs: int | None, steps_per_epoch: int | None, device: torch.device | str | None, data: Any = None,
             teacher_inputs: nn.Module | None = None) -> Assembled:
    """The networks of ``cfg`` (``given`` modules by name; the others built from the zoo, which needs the class
    count: ``num_classes``, else read from the student's logits on ``example_input``) on ``device`` (default: the
    first given module's), the teachers frozen; each frozen teacher's input view (``teacher_inputs``, else
    built from ``data`` when given); the method's context, its unknown fields (None) explained when read."""
    from adaptkd.engine.networks import build_network

    net_cfgs = cfg.network_names()
    order = list(net_cfgs)
    if device is None:
        first = next(iter(given.values()), None)
        p = next(first.parameters(), None) if first is not None else None
        device = p.device if p is not None else (example_input.device if example_input is not None else "cpu")
    device = torch.device(device)
    if example_input is not None:
        example_input = example_input.to(device)
    missing = [n for n in order if n not in given]
    if missing:
        if num_classes is None and "student" in given and example_input is not None:
            num_classes = _infer_classes(given["student"], example_input)
        num_classes = num_classes or cfg.data.num_classes
        if num_classes is None:
            raise DistillerError(f"networks {missing} are built from the zoo: pass num_classes= (or example_input= "
                                 "with a student module, from which the class count is read)")
        in_ch = int(example_input.shape[1]) if example_input is not None else 3
        fields = fields_of(cfg)
        teachers = set(order[1:1 + len(cfg.teachers)])
        for n in missing:
            given[n] = build_network(net_cfgs[n], num_classes, in_ch, field=fields[n],
                                     teacher=n in teachers and not net_cfgs[n].trainable)
    if num_classes is None and example_input is not None:
        num_classes = _infer_classes(given[order[0]], example_input)
    networks = {n: given[n].to(device) for n in order}
    trainable = {order[0]: True, **{n: c.trainable for n, c in list(net_cfgs.items())[1:1 + len(cfg.teachers)]},
                 **{n: True for n in order[1 + len(cfg.teachers):]}}
    learners = [n for n in order if trainable[n]]
    frozen = [n for n in order if not trainable[n]]
    for n in frozen:
        _freeze(networks[n])
    if teacher_inputs is None and data is not None and frozen:
        from adaptkd.engine.views import TeacherInputs, data_spec, teacher_spec

        teacher_inputs = TeacherInputs({n: teacher_spec(net_cfgs[n], networks[n], data, field=fields_of(cfg)[n],
                                                        name=n) for n in frozen}, data_spec(data)).to(device)
    samples = {}
    if teacher_inputs is not None and example_input is not None:
        with torch.no_grad():
            samples = teacher_inputs(example_input)
    comm = communicator()
    known: dict[str, Any] = {  # None: unknown, explained when a method reads it
        "networks": {n: _unwrap(m) for n, m in networks.items()}, "learners": learners, "frozen": frozen,
        "arches": {n: c.arch for n, c in net_cfgs.items()}, "num_classes": num_classes, "epochs": epochs,
        "steps_per_epoch": steps_per_epoch, "sample_input": example_input, "seed": cfg.run.seed,
        "rank": comm.rank, "world_size": comm.world_size, "device": device, "inputs": samples, "comm": comm,
    }
    ctx = ExplainedContext(**known)
    ctx.__dict__["method_name"] = cfg.method.name
    return Assembled(net_cfgs, networks, learners, frozen, teacher_inputs, ctx)


def fields_of(cfg: Any) -> dict[str, str]:
    """{network name: its config field} (``student``, ``teachers.0``, ``peers.0``...)."""
    fields = ["student"] + [f"teachers.{i}" for i in range(len(cfg.teachers))]
    fields += [f"peers.{i}" for i in range(len(cfg.peers))]
    return dict(zip(cfg.network_names(), fields))


def _freeze(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _check_distinct(networks: Mapping[str, nn.Module]) -> None:
    """Every network is its own module: no module or parameter in two roles (a teacher that is the student)."""
    owner: dict[int, str] = {}
    for name, net in networks.items():
        for p in _unwrap(net).parameters():
            other = owner.setdefault(id(p), name)
            if other != name:
                raise DistillerError(
                    f"network {name!r} shares parameters with {other!r} (it is the same module, or part of it): "
                    "a teacher must be a separate module from every learner. Pass a copy (copy.deepcopy) of a "
                    "trained network as the teacher, or use an online method (dml, switokd) to train networks together"
                )


def _balance_section(balance: str | dict[str, Any] | None) -> dict[str, Any]:
    if balance is None:
        return {"name": "fixed"}
    if isinstance(balance, str):
        return {"name": balance}
    if isinstance(balance, dict):
        return {"name": "fixed", **balance}
    raise DistillerError(f"balance must be None, a balancer name or a dict, got {type(balance).__name__}")


def _kind(method: str) -> str:
    try:
        return method_class(method).kind
    except KeyError:
        return "offline"  # the config check names the unknown method


def _load(raw: dict[str, Any], *, provided: set[str], check: bool = True) -> Any:
    from adaptkd.config import ConfigError, load_config

    try:
        return load_config(raw, provided=provided, check=check)
    except ConfigError as exc:
        raise DistillerError(str(exc)) from None


def _infer_classes(net: nn.Module, x: Tensor) -> int:
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(x[:2])
    finally:
        net.train(was)
    if out.dim() != 2:
        raise DistillerError(f"the student must return logits [B, C]; it returned {tuple(out.shape)}")
    return int(out.shape[1])
