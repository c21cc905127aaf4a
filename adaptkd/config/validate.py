"""Validation of a config against the registries (models, methods, balancers, datasets) and files.

:func:`load_config` reads, overrides and validates in one call; every problem it finds is
reported together in one :class:`~adaptkd.errors.ConfigError`, before anything is built.
Method and balancer options are validated by the option model each one registers
(``Method.Params`` / ``Balancer.Params``), so adding a method never touches this file.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adaptkd.balance import BALANCERS, balancer_params_model
from adaptkd.config.schema import (
    CUSTOM_ARCH,
    Config,
    OptimConfig,
    apply_overrides,
    config_to_dict,
    format_validation_error,
    read_yaml,
)
from adaptkd.data.registry import DATASETS
from adaptkd.errors import ConfigError
from adaptkd.methods.base import METHODS, method_class
from adaptkd.methods.spec import Roster
from adaptkd.models.registry import MODELS, model_exists, namespace_of

__all__ = ["load_config", "check_config", "roster_of"]


def roster_of(cfg: Config) -> Roster:
    """The networks of ``cfg`` besides the student, as a method's checks see them."""
    names = list(cfg.network_names())
    teachers = names[1:1 + len(cfg.teachers)]
    return Roster(teachers=tuple(teachers), trainable=tuple(t.trainable for t in cfg.teachers),
                  peers=tuple(names[1 + len(cfg.teachers):]))


def load_config(
    source: str | os.PathLike[str] | dict[str, Any] | Config | None = None,
    overrides: list[str] | None = None,
    *,
    check: bool = True,
    provided: Collection[str] = (),
) -> Config:
    """Build a validated :class:`Config` from a YAML path, a dict or a Config, plus overrides.

    With ``check=True`` the registries are consulted too (model, method, balancer and dataset
    names exist; method/balancer options are valid; checkpoint files exist), so every error
    appears before any training starts. ``provided``: names of networks whose ``nn.Module`` is
    passed from Python (``adaptkd.train(student=..., teachers=[...])``); their ``arch`` is only a
    label (e.g. ``custom``) and they take no checkpoint.
    """
    if isinstance(source, Config):
        raw = config_to_dict(source)
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    elif source is None:
        raw = {}
    else:
        raw = read_yaml(source)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    if check:
        check_config(cfg, provided=provided)
    return cfg


def check_config(cfg: Config, *, provided: Collection[str] = ()) -> None:
    """Cross-field and registry checks that pydantic alone cannot make (``provided``: see load_config)."""
    problems: list[str] = []
    if cfg.data.name not in DATASETS and cfg.data.name != "python":  # python: data passed from Python
        problems.append(f"field `data.name`: unknown dataset {cfg.data.name!r}{DATASETS.hint(cfg.data.name)}")
    nets = [("student", cfg.student)] + [(f"teachers.{i}", t) for i, t in enumerate(cfg.teachers)]
    nets += [(f"peers.{i}", p) for i, p in enumerate(cfg.peers)]
    given = {field for (field, _), name in zip(nets, cfg.network_names()) if name in set(provided)}
    for field, net in nets:
        if field in given:
            if net.checkpoint is not None:
                problems.append(f"field `{field}.checkpoint`: this network's module is passed from Python, so the "
                                "checkpoint would not be loaded; load the weights into your module and remove the key")
            continue
        if not model_exists(net.arch):
            hint = (f" ({CUSTOM_ARCH!r} labels a module passed from Python: adaptkd.train(config, student=..., "
                    "teachers=[...]))" if net.arch == CUSTOM_ARCH else MODELS.hint(net.arch))
            problems.append(f"field `{field}.arch`: unknown model {net.arch!r}{hint}")
        if "trust_remote_code" in net.args:
            problems.append(f"field `{field}.args.trust_remote_code`: refused; adaptkd never runs code from a model "
                            "repository (use a model whose architecture is part of transformers/timm/torchvision)")
        if net.checkpoint is not None:
            path = Path(os.path.expanduser(net.checkpoint))
            if not path.is_file():
                problems.append(f"field `{field}.checkpoint`: file {net.checkpoint!r} does not exist")
        if net.optim is not None:
            try:
                OptimConfig.model_validate({**cfg.optim.model_dump(), **net.optim})
            except ValidationError as exc:
                problems.append(format_validation_error(exc, prefix=f"{field}.optim", model=OptimConfig))
    for i, t in enumerate(cfg.teachers):
        if (not t.trainable and t.checkpoint is None and not t.random_init and f"teachers.{i}" not in given
                and not _brings_weights(t)):
            problems.append(
                f"field `teachers.{i}.checkpoint`: a frozen teacher needs a checkpoint "
                "(train one with method `ce`), or set `trainable: true` for online KD, "
                "or `random_init: true` for speed benchmarks only"
            )
    if cfg.method.name not in METHODS:
        problems.append(f"field `method.name`: unknown method {cfg.method.name!r}{METHODS.hint(cfg.method.name)}")
    else:
        mcls = method_class(cfg.method.name)
        try:
            params = mcls.Params.model_validate(cfg.method.options())
        except ValidationError as exc:
            problems.append(format_validation_error(exc, prefix="method", model=mcls.Params))
        else:
            try:
                mcls.check(params, roster_of(cfg), epochs=cfg.optim.epochs, balancer=cfg.balance.name)
            except ConfigError as exc:
                problems.append(str(exc))
    if cfg.teachers_cache is not None:
        problems += _cache_problems(cfg)
    if cfg.balance.name not in BALANCERS:
        problems.append(f"field `balance.name`: unknown balancer "
                        f"{cfg.balance.name!r}{BALANCERS.hint(cfg.balance.name)}")
    else:
        try:
            bmodel = balancer_params_model(cfg.balance.name)
            bmodel.model_validate(cfg.balance.options())
        except ValidationError as exc:
            problems.append(format_validation_error(exc, prefix="balance", model=bmodel))
    if cfg.optim.warmup_epochs > cfg.optim.epochs:
        problems.append(f"field `optim.warmup_epochs`: {cfg.optim.warmup_epochs} exceeds "
                        f"optim.epochs={cfg.optim.epochs}")
    if cfg.data.name in ("cifar10", "cifar100", "imagefolder") and not cfg.data.root:
        problems.append(f"field `data.root`: dataset {cfg.data.name!r} needs a folder (data.root=PATH)")
    if cfg.data.name == "hf" and not cfg.data.root:
        problems.append("field `data.root`: dataset 'hf' needs a hub dataset id or a local folder (data.root=...)")
    if cfg.data.name == "webdataset" and not (cfg.data.root and cfg.data.test_root):
        problems.append("fields `data.root` / `data.test_root`: dataset 'webdataset' needs the train and the "
                        "validation shard patterns (e.g. data.root='shards/train-{000..099}.tar')")
    if (cfg.data.mean is None) != (cfg.data.std is None):
        problems.append("fields `data.mean` / `data.std`: give both (one value per channel) or neither")
    if problems:
        raise ConfigError("\n".join(problems))


def _brings_weights(net) -> bool:
    """A network whose pretrained weights come with its name (hf: ids and folders, timm/torchvision weights)."""
    ns = namespace_of(net.arch)
    if ns == "hf":
        return "hf_config" not in net.args and net.args.get("pretrained", True) is not False
    if ns == "timm":
        return bool(net.args.get("pretrained", False))
    if ns == "torchvision":
        return net.args.get("weights") is not None
    return False


def _cache_problems(cfg: Config) -> list[str]:
    """What keeps ``teachers_cache`` from standing in for this config's teachers."""
    tc = cfg.teachers_cache
    assert tc is not None
    out = []
    if cfg.method.name in METHODS:
        cached = method_class(cfg.method.name).spec.cacheable
        if not cached:
            able = [n for n in METHODS.names() if method_class(n).spec.cacheable]
            out.append(f"field `teachers_cache`: method {cfg.method.name!r} reads teacher signals that cannot be "
                       "cached (feature maps, token sets or teachers that learn); the methods that can replay "
                       f"cached teacher logits are {', '.join(able)}")
    if not cfg.teachers or any(t.trainable for t in cfg.teachers):
        out.append("field `teachers_cache`: needs at least one teacher and only frozen teachers (no `trainable: true`)")
    if cfg.data.on_bad_image == "skip":
        out.append("field `data.on_bad_image`: skip drops unreadable images from a streamed batch, which would shift "
                   "every later view against the teacher cache; use stop with teachers_cache")
    if tc.epochs is not None and tc.epochs < cfg.optim.epochs:
        out.append(f"field `teachers_cache.epochs`: {tc.epochs} cached epochs for optim.epochs={cfg.optim.epochs}; "
                   "a cache is never cycled (a run replays each epoch's own views): cache at least optim.epochs")
    return out
