"""The run folder: which files a run writes, how they are written and read.

A run folder (``run.out``) holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON
record per logging interval and per epoch), ``last.pt`` / ``best.pt`` (checkpoints) and
``summary.json`` (final metrics and model cards); ``tb/`` (TensorBoard) and ``report/`` are
optional. The trainer, ``eval``, ``export`` and the report read and write them through this module;
:mod:`adaptkd.engine.runfolder` checks, locks and creates the folder (``prepare_run_dir``, re-exported here).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from adaptkd.config import NetConfig
from adaptkd.engine.checkpoint import FORMAT, atomic_write_text, load_checkpoint, load_into
from adaptkd.engine.logger import read_metrics as _read_metrics_file
from adaptkd.engine.networks import build_network
from adaptkd.engine.runfolder import RUN_FILES, prepare_run_dir  # the folder's checks and lock live there
from adaptkd.errors import CheckpointError, RunFolderError
from adaptkd.models import model_exists

__all__ = ["RUN_FILES", "prepare_run_dir", "write_config", "write_summary", "read_config", "read_summary",
           "read_metrics", "checkpoint_path", "read_checkpoint", "build_arch", "load_model"]

def write_config(out: Path, cfg: dict[str, Any]) -> None:
    """``config.yaml``: the resolved config of the run (atomic)."""
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``summary.json``: final metrics and model cards (atomic)."""
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))


def _folder(run: str | os.PathLike[str]) -> Path:
    return Path(os.path.expanduser(str(run)))


def read_config(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``config.yaml`` as a dict; :class:`RunFolderError` when it is missing or unreadable."""
    p = _folder(run) / "config.yaml"
    if not p.is_file():
        raise RunFolderError(f"{str(_folder(run))!r} is not an adaptkd run folder (it has no config.yaml)")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RunFolderError(f"{str(p)!r} does not hold a config mapping")
    return raw


def read_summary(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``summary.json`` (``{}`` when the run has not finished)."""
    p = _folder(run) / "summary.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{str(p)!r} is not valid JSON: {exc}") from None


def read_metrics(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of the run's ``metrics.jsonl`` (torn lines skipped; ``[]`` when there is none)."""
    return _read_metrics_file(_folder(run) / "metrics.jsonl")


def checkpoint_path(run: str | os.PathLike[str], which: str = "best") -> Path:
    """``<run>/<which>.pt`` (falls back to ``last.pt``), or ``run`` itself when it is a file."""
    p = Path(os.path.expanduser(str(run)))
    if p.is_dir():
        cand = p / f"{which}.pt"
        p = cand if cand.is_file() else p / "last.pt"
    if not p.is_file():
        raise CheckpointError(f"{str(run)!r} holds no checkpoint ({which}.pt or last.pt); is it an adaptkd run folder?")
    return p


def read_checkpoint(run: str | os.PathLike[str], which: str = "best") -> tuple[Path, dict[str, Any]]:
    """(path, contents) of the run's ``<which>.pt`` (or ``last.pt``, or the file ``run``); an adaptkd run checkpoint."""
    path = checkpoint_path(run, which)
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an adaptkd run checkpoint (it has no architecture metadata)")
    return path, ckpt


def build_arch(arch: str, args: dict[str, Any], num_classes: int, in_channels: int, *, what: str) -> nn.Module:
    """A fresh network of ``arch`` (zoo, ``timm:``/``torchvision:``); a clear error for custom modules."""
    if not model_exists(arch):
        raise CheckpointError(
            f"{what} is a {arch!r} network, which is not in the model zoo (a module passed from Python); "
            "adaptkd cannot rebuild it from a checkpoint — rebuild it yourself, load its weights and use "
            "adaptkd.export.export_module(model, ...)"
        )
    return build_network(NetConfig(arch=arch, args=dict(args)), num_classes, in_channels, field=what)


def load_model(run: str | os.PathLike[str], name: str = "student", *,
               which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """Network ``name`` of a run, rebuilt from its architecture and its own state_dict (eval mode, CPU).

    Returns ``(model, info)``; ``info`` has arch, args, num_classes, in_channels, image_size, mean,
    std, dataset, method, epoch, checkpoint (path) and config (the run's resolved config dict).
    """
    path, ckpt = read_checkpoint(run, which)
    models = ckpt.get("models", {})
    if name not in models:
        raise CheckpointError(f"{str(path)!r} holds the learners {sorted(models)}, not {name!r} (frozen teachers are "
                              "not stored in a run: export the run that trained them)")
    meta = ckpt["meta"]
    arch = meta["arch"][name]
    args = dict(meta.get("args", {}).get(name, {}))
    in_ch = int(meta.get("in_channels", 3))
    model = build_arch(arch, args, int(meta["num_classes"]), in_ch, what=f"network {name!r} of {str(path)!r}")
    load_into(model, models[name], source=str(path), arch=arch)
    model.eval()
    info = {
        "arch": arch, "args": args, "num_classes": int(meta["num_classes"]), "in_channels": in_ch,
        "image_size": int(meta.get("image_size", 32)), "mean": list(meta.get("mean", [])),
        "std": list(meta.get("std", [])),
        "dataset": meta.get("dataset"), "method": meta.get("method"), "epoch": int(ckpt.get("epoch", 0)),
        "checkpoint": str(path), "config": ckpt.get("config", {}),
        "class_names": [str(c) for c in meta.get("class_names",
                                                 [])] or [str(i) for i in range(int(meta["num_classes"]))],
    }
    return model, info
