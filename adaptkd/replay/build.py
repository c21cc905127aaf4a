"""``adaptkd cache-teacher``: run the frozen teachers once over every view a run will train on.

For each epoch ``1..E`` this rank's batches come in the training order, the augmentation draws
its parameters from the training stream (the same generator, seeded the same way), and the
teachers see the augmented batch exactly as they would in a live step (same batch, autocast
precision and memory format). The file stores each view's sample index, augmentation parameters
and the teachers' logits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptkd.config import Config, ConfigError, load_config
from adaptkd.data import build_pipeline
from adaptkd.data.loader import epoch_indices
from adaptkd.engine.roster import build_networks
from adaptkd.engine.runtime import (
    autocast,
    configure_backends,
    dist_info,
    maybe_compile,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from adaptkd.engine.views import TeacherInputs, data_spec, teacher_spec
from adaptkd.models.registry import needs_rgb
from adaptkd.replay.identity import augment_generator, run_identity, steps_per_epoch, train_augment
from adaptkd.replay.store import CacheWriter, array_specs, cache_file, encode_topk

__all__ = ["CacheRun", "build_cache", "open_run", "views_per_epoch"]


def views_per_epoch(cfg: Config, n_train: int, steps: int, rank: int, world_size: int) -> int:
    """Views one rank trains on per epoch: its shard, cut at ``steps`` batches."""
    shard = len(epoch_indices(n_train, shuffle=False, seed=0, epoch=1, drop_last=cfg.data.drop_last, rank=rank,
                              world_size=world_size))
    return min(shard, steps * cfg.data.batch_size)


@dataclass
class CacheRun:
    """What a teacher cache is made for and read with: the resolved config, this process's rank,
    device and precision, the data pipeline and the frozen teachers (by network name, with the
    config field each comes from)."""

    cfg: Config
    dist: Any
    device: torch.device
    precision: str
    pipe: Any
    teachers: dict[str, nn.Module]
    fields: dict[str, str]


def open_run(config: Config | str | dict, networks: dict[str, nn.Module] | None, purpose: str) -> CacheRun:
    """Load ``config`` (it must have a ``teachers_cache`` section; ``purpose`` says for what, in the
    error), join the process group under ``torchrun``, open the data pipeline and build the frozen
    teachers (``networks``: modules by name instead of building them), as a training run does."""
    cfg = config if isinstance(config, Config) else load_config(config, provided=set(networks or {}))
    if cfg.teachers_cache is None:
        raise ConfigError(f"field `teachers_cache`: missing; set teachers_cache.path (a folder) to {purpose}")
    dist = dist_info()
    device = resolve_device(cfg.run.device)
    if dist.enabled:
        from adaptkd.engine.distributed import setup_distributed

        device = setup_distributed(dist, device)
    precision = resolve_precision(cfg.run.precision, device)
    seed_everything(cfg.run.seed + dist.rank, cfg.run.deterministic)  # as a run seeds, before its data and networks
    configure_backends(device, cfg.run.deterministic)
    need_rgb = any(needs_rgb(c.arch) for c in cfg.network_names().values())
    pipe, resolved = build_pipeline(cfg.data, pin_memory=device.type == "cuda", need_rgb=need_rgb)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=resolved)})  # as the trainer resolves it
    # every network built as the run builds it (a random-init teacher's weights come from the run's seed and
    # from the networks built before it); the frozen teachers are kept
    nets = build_networks(cfg, pipe, device, networks, log=lambda line: None)
    teachers = {n: nets.networks[n] for n in nets.frozen}
    fields = {n: nets.fields[n] for n in nets.frozen}
    return CacheRun(cfg, dist, device, precision, pipe, teachers, fields)


def build_cache(config: Config | str | dict, *, networks: dict[str, nn.Module] | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write this rank's teacher cache for ``config`` (its ``teachers_cache`` section says where,
    for how many epochs, in which dtype and whether top-k); returns a summary with the path,
    size and throughput. ``networks``: teacher modules by name, as for :class:`Trainer`."""
    run = open_run(config, networks, "build a cache")
    cfg, dist, device, precision, pipe, teachers, fields = (run.cfg, run.dist, run.device, run.precision, run.pipe,
                                                            run.teachers, run.fields)
    tc = cfg.teachers_cache
    assert tc is not None
    log = log or print
    nets = cfg.network_names()
    inputs = TeacherInputs({n: teacher_spec(nets[n], t, pipe, field=fields[n], name=n) for n, t in teachers.items()},
                           data_spec(pipe)).to(device)
    if tc.topk is not None and tc.topk >= pipe.num_classes:
        raise ConfigError(f"field `teachers_cache.topk`: {tc.topk} is not below the {pipe.num_classes} classes; "
                          "leave it unset to store full logits")
    steps = steps_per_epoch(cfg, pipe, dist.world_size)
    epochs = tc.epochs or cfg.optim.epochs
    per_epoch = views_per_epoch(cfg, pipe.n_train, steps, dist.rank, dist.world_size)
    header = {
        **run_identity(cfg, pipe, teachers, steps=steps, rank=dist.rank, world_size=dist.world_size,
                       precision=precision),
        "epochs": epochs, "views_per_epoch": per_epoch, "dtype": tc.dtype, "topk": tc.topk,
        "made_on": device.type,
    }
    specs = array_specs(epochs * per_epoch, len(teachers), pipe.num_classes, tc.dtype, tc.topk)
    writer = CacheWriter(cache_file(tc.path, dist.rank, dist.world_size), header, specs)
    forwards = {n: maybe_compile(t, n) if cfg.run.compile else t for n, t in teachers.items()}
    aug = train_augment(pipe, cfg, device)
    gen = augment_generator(cfg.run.seed, dist.rank, device)
    d = cfg.data
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(1, epochs + 1):
        row = (epoch - 1) * per_epoch
        order = epoch_indices(pipe.n_train, shuffle=True, seed=cfg.run.seed, epoch=epoch, drop_last=d.drop_last,
                              rank=dist.rank, world_size=dist.world_size)[:per_epoch]
        writer.write(row, index=order)
        batches = pipe.train_batches(epoch, batch_size=d.batch_size, seed=cfg.run.seed, drop_last=d.drop_last,
                                     rank=dist.rank, world_size=dist.world_size, stop=steps)
        for i, (xb, _) in enumerate(batches):
            if i >= steps:
                break
            xb = xb.to(device, non_blocking=True)
            params = aug.draw(xb.shape[0], device, gen)
            x = aug.apply(xb, params)
            if cfg.run.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), autocast(device, precision):
                xt = inputs(x)  # each teacher's own view of the batch (resolution, normalisation)
                out = torch.stack([forwards[n](xt.get(n, x)).float() for n in teachers], 1)  # [B, T, K]
            start = row + i * d.batch_size
            if params is None:
                params = torch.zeros((xb.shape[0], 3), dtype=torch.long)
            if tc.topk is None:
                writer.write(start, params=params, logits=out)
            else:
                values, indices, rest = encode_topk(out, tc.topk)
                writer.write(start, params=params, values=values, indices=indices, rest=rest)
        log(f"cache-teacher: epoch {epoch}/{epochs} ({per_epoch} views)")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    pipe.close()
    path: Path = writer.close()
    return {"path": str(path), "bytes": path.stat().st_size, "epochs": epochs, "views": epochs * per_epoch,
            "seconds": elapsed, "cpu_seconds": cpu, "views_per_s": epochs * per_epoch / max(elapsed, 1e-9)}
