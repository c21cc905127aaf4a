"""Where a training step's teacher outputs come from when ``teachers_cache`` is set: the cache.

:class:`Replay` opens this rank's file, refuses it unless it was made for this run (teachers and
their weights, data, batching, augmentation, seed, precision) and covers ``optim.epochs``, and
then serves, per step, the augmentation parameters of the batch's views and the teachers'
logits for them. No teacher forward runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from adaptkd.config import Config, ConfigError
from adaptkd.data.loader import epoch_indices
from adaptkd.replay.identity import check_identity, run_identity
from adaptkd.replay.store import CacheFile, cache_file, decode_topk

__all__ = ["Replay", "ReplayedBatch"]


@dataclass
class ReplayedBatch:
    """One step's replayed inputs: ``params`` int64 ``[B, 3]`` for :meth:`Augment.apply` (None when
    the run does not augment) and ``logits`` {teacher name: float32 ``[B, classes]``} on the device."""

    params: Tensor | None
    logits: dict[str, Tensor]


class Replay:
    """This rank's teacher cache, checked against the run; see the module docstring."""

    def __init__(self, cfg: Config, pipe: Any, teachers: dict[str, nn.Module], *, steps: int, rank: int,
                 world_size: int, precision: str, device: torch.device, augment: bool) -> None:
        tc = cfg.teachers_cache
        assert tc is not None
        self.file = CacheFile(cache_file(tc.path, rank, world_size))
        head = self.file.header
        where = str(self.file.path)
        check_identity(head, run_identity(cfg, pipe, teachers, steps=steps, rank=rank, world_size=world_size,
                                          precision=precision), where)
        if head["epochs"] < cfg.optim.epochs:
            raise ConfigError(f"field `optim.epochs`: {cfg.optim.epochs} epochs, but the teacher cache {where!r} holds "
                              f"{head['epochs']}; a cache is never cycled: build one with teachers_cache.epochs >= "
                              "optim.epochs")
        self.names = list(teachers)
        self.per_epoch = int(head["views_per_epoch"])
        self.batch_size = cfg.data.batch_size
        self.topk = head["topk"]
        self.classes = pipe.num_classes
        self.device = device
        self.augment = augment
        self._seed, self._drop_last, self._rank, self._world = cfg.run.seed, cfg.data.drop_last, rank, world_size
        self._n = pipe.n_train

    def start_epoch(self, epoch: int) -> None:
        """Check that the cache's views of ``epoch`` are of the samples this run visits, in order."""
        order = epoch_indices(self._n, shuffle=True, seed=self._seed, epoch=epoch, drop_last=self._drop_last,
                              rank=self._rank, world_size=self._world)[: self.per_epoch]
        row = (epoch - 1) * self.per_epoch
        if not torch.equal(self.file.rows("index", row, row + self.per_epoch).long(), order):
            where = str(self.file.path)
            raise ConfigError(f"field `teachers_cache.path`: epoch {epoch} of the teacher cache {where!r} "
                              "holds other samples than this run visits; build the cache again for this config")

    def batch(self, epoch: int, i: int, size: int) -> ReplayedBatch:
        """The replayed views of batch ``i`` (``size`` samples) of ``epoch``."""
        start = (epoch - 1) * self.per_epoch + i * self.batch_size
        stop = start + size
        dev = self.device
        params = self.file.rows("params", start, stop).to(dev, torch.long) if self.augment else None
        if self.topk is None:
            out = self.file.rows("logits", start, stop).to(dev, non_blocking=True).float()
        else:
            values, indices, rest = (self.file.rows(name, start, stop).to(dev)
                                     for name in ("values", "indices", "rest"))
            out = decode_topk(values, indices, rest, self.classes)
        return ReplayedBatch(params, {n: out[:, j] for j, n in enumerate(self.names)})
