"""``adaptkd.train``: train an experiment from Python, optionally with your own models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from adaptkd.config import Config, config_to_dict, load_config
from adaptkd.engine.resume import says_what_is_kept
from adaptkd.engine.trainer import Trainer

__all__ = ["train"]


def train(config: Config | str | dict, overrides: list[str] | None = None, *, resume: bool = False,
          student: nn.Module | None = None, teachers: list[nn.Module] | None = None,
          networks: dict[str, nn.Module] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the experiment ``config`` (path, dict or Config) and return its summary.

    Bring your own model: ``student=`` and ``teachers=[...]`` take any ``nn.Module`` mapping images
    ``[B, C, H, W]`` to logits ``[B, num_classes]`` (``networks={name: module}`` does the same by
    network name). Their config entries are optional — a missing ``student`` section or missing
    teacher entries are added with ``arch: custom`` — and their ``arch`` is only a label; they
    take no ``checkpoint`` (load the weights into the module). A passed teacher is frozen (eval
    mode, ``requires_grad=False``) unless its entry says ``trainable: true``.
    """
    import copy

    from adaptkd.config import CUSTOM_ARCH, apply_overrides, read_yaml

    teachers = list(teachers or [])
    if isinstance(config, Config):
        raw = config_to_dict(config)
    elif isinstance(config, dict):
        raw = copy.deepcopy(config)
    else:
        raw = read_yaml(config)
    if overrides:
        raw = apply_overrides(raw, overrides)
    if student is not None and isinstance(raw.get("student", {}), dict):
        raw["student"] = {"arch": CUSTOM_ARCH, **(raw.get("student") or {})}
    if teachers:
        entries = list(raw.get("teachers") or [])
        entries += [{} for _ in range(len(teachers) - len(entries))]
        raw["teachers"] = [{"arch": CUSTOM_ARCH, **e} if isinstance(e, dict) and i < len(teachers) else e
                           for i, e in enumerate(entries)]
    order = list(load_config(raw, check=False).network_names())
    nets = dict(networks or {})
    if student is not None:
        nets[order[0]] = student
    for i, t in enumerate(teachers):
        nets[order[1 + i]] = t
    cfg = load_config(raw, provided=set(nets))
    with says_what_is_kept(Path(cfg.run.out)):
        return Trainer(cfg, resume=resume, networks=nets, log=log).fit()
