"""What makes a run's training views and teacher outputs what they are, shared by the cache
builder and the trainer: the augmentation, its random stream, the per-epoch step count, and the
identity recorded in (and checked against) a cache's header."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from adaptkd.config import Config
from adaptkd.data import Augment
from adaptkd.errors import ConfigError

__all__ = ["augment_generator", "check_identity", "run_identity", "steps_per_epoch", "train_augment"]

FORMAT_VERSION = 1


def train_augment(pipe: Any, cfg: Config, device: torch.device) -> Augment:
    """The on-device training augmentation of ``cfg`` (its ``data`` settings resolved by the
    pipeline): pad-crop and flip, or only the flip after a streamed random-resized crop."""
    d = cfg.data
    assert d.crop_padding is not None and d.flip is not None, "data settings not resolved by the pipeline"
    return Augment(pipe.mean, pipe.std, crop_padding=d.crop_padding, flip=d.flip,
                   train=d.augment != "none").to(device)


def augment_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator the training augmentation draws from (one stream per rank)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1000003 + rank)
    return gen


def steps_per_epoch(cfg: Config, pipe: Any, world_size: int) -> int:
    """Optimiser steps per epoch on each rank (``run.max_steps_per_epoch`` applied)."""
    d = cfg.data
    steps = pipe.steps_per_epoch(d.batch_size, drop_last=d.drop_last, world_size=world_size)
    return min(steps, cfg.run.max_steps_per_epoch) if cfg.run.max_steps_per_epoch else steps


def data_identity(pipe: Any) -> dict[str, Any]:
    """What the training images are: in memory, a SHA-256 of every pixel and label; streamed, of
    the labels, the source and the worker geometry (whose random-resized-crop box is a function of
    its seed, the epoch and the sample index, so the same settings give the same views)."""
    bundle = getattr(pipe, "bundle", None)
    if bundle is not None:
        return {"data.pipeline": "memory", "data.sha256": _sha256(bundle.train.x, bundle.train.y)}
    geo = pipe.train_geo
    geometry = {k: getattr(geo, k) for k in ("kind", "size", "channels", "crop_ratio", "scale", "ratio", "seed")}
    return {"data.pipeline": "stream", "data.sha256": _sha256(pipe.train_src.labels),
            "data.source": pipe.train_src.where(0), "data.geometry": json.loads(json.dumps(geometry))}


def _sha256(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_hash(net: nn.Module) -> str:
    """SHA-256 of a network's state_dict (names, dtypes, shapes, bytes): its weights' identity."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(_sha256(v).encode() if isinstance(v, torch.Tensor) else repr(v).encode())
    return h.hexdigest()


def run_identity(cfg: Config, pipe: Any, teachers: dict[str, nn.Module], *, steps: int, rank: int,
                 world_size: int, precision: str) -> dict[str, Any]:
    """Everything that decides which views a rank trains on and what its teachers say about
    them, keyed by the config field (or quantity) it comes from."""
    d = cfg.data
    nets = cfg.network_names()
    return {
        "format": FORMAT_VERSION,
        "teachers": [{"name": n, "arch": nets[n].arch, "args": dict(nets[n].args), "weights_sha256": state_hash(t)}
                     for n, t in teachers.items()],
        "data.name": pipe.name,
        "data.samples": pipe.n_train,
        **data_identity(pipe),
        "data.num_classes": pipe.num_classes,
        "data.mean": list(pipe.mean),
        "data.std": list(pipe.std),
        "data.batch_size": d.batch_size,
        "data.drop_last": d.drop_last,
        "data.augment": d.augment,
        "data.crop_padding": d.crop_padding,
        "data.flip": d.flip,
        "run.seed": cfg.run.seed,
        "run.precision": precision,
        "run.channels_last": cfg.run.channels_last,
        "steps_per_epoch": steps,
        "rank": rank,
        "world_size": world_size,
    }


def check_identity(cached: dict[str, Any], run: dict[str, Any], path: str) -> None:
    """Raise ConfigError naming the first field where a cache's header and this run differ."""
    for key, want in run.items():
        have = cached.get(key)
        if have == want:
            continue
        if key == "teachers":
            names = [t["name"] for t in want]
            if [t.get("name") for t in have or []] != names:
                what = f"teachers {[t.get('name') for t in have or []]}, this run has {names}"
            else:
                i, (h, w) = next((i, hw) for i, hw in enumerate(zip(have or [], want)) if hw[0] != hw[1])
                field = next(f for f in ("arch", "args", "weights_sha256") if h.get(f) != w.get(f))
                what = (f"teachers.{i}.{field}: the cache's teacher {h.get('name')!r} has "
                        f"{'other weights (checkpoint)' if field == 'weights_sha256' else repr(h.get(field))}"
                        f"{'' if field == 'weights_sha256' else f', this run has {w.get(field)!r}'}")
        elif key == "data.sha256":
            what = "data: the cached training images or labels differ from this run's"
        elif key == "data.source":
            what = f"data: the cache read {have!r}, this run reads {want!r}"
        else:
            what = f"{key}: the cache has {have!r}, this run has {want!r}"
        raise ConfigError(f"field `teachers_cache.path`: the cache {path!r} was made for another run ({what}); "
                          "build it again with `adaptkd cache-teacher CONFIG` or point teachers_cache.path elsewhere")
