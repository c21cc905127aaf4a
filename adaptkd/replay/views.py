"""A teacher cache read from a hand-written loop: the cached training views and their teacher logits.

The views a cache holds are the batches of adaptkd's own data pipeline, in its order, each with the
augmentation the cache recorded. :class:`ReplayedViews` opens the pipeline and the cache of a config
exactly as a training run does (the same checks: teachers and their weights, data, batching,
augmentation, seed, precision) and yields, per step, the view, its labels and the teachers' logits
for it, ready for ``distiller(x, y, teacher_logits=logits)``. No teacher forward runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from adaptkd.config import Config, ConfigError
from adaptkd.replay.build import open_run
from adaptkd.replay.identity import steps_per_epoch, train_augment
from adaptkd.replay.source import Replay

__all__ = ["EpochViews", "ReplayedViews"]


class ReplayedViews:
    """The cached views of ``config``'s teacher cache (its ``teachers_cache`` section), epoch by epoch.

    ``networks``: teacher modules by name (``teacher0``, ...) instead of building them from the config,
    as for :class:`~adaptkd.engine.trainer.Trainer`; their weights must be those the cache was made
    with. Under ``torchrun`` each rank reads its own file and its own shard of every epoch.
    """

    def __init__(self, config: Config | str | dict, networks: dict[str, nn.Module] | None = None) -> None:
        run = open_run(config, networks, "read a cache")
        cfg, dist = run.cfg, run.dist
        self.cfg, self.pipe, self.device = cfg, run.pipe, run.device
        self.steps_per_epoch = steps_per_epoch(cfg, run.pipe, dist.world_size)
        self.augment = train_augment(run.pipe, cfg, run.device)
        self.replay = Replay(cfg, run.pipe, run.teachers, steps=self.steps_per_epoch, rank=dist.rank,
                             world_size=dist.world_size, precision=run.precision, device=run.device,
                             augment=self.augment.random)
        self.epochs = int(self.replay.file.header["epochs"])
        self.teacher_names = list(run.teachers)
        self._rank, self._world = dist.rank, dist.world_size

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
        """The views of ``epoch`` (from 1) in training order: ``(x, y, teacher_logits)`` per step, on the
        run's device; ``x`` is the augmented, normalised view the teachers saw."""
        if not 1 <= epoch <= self.epochs:
            raise ConfigError(f"epoch {epoch}: the teacher cache {str(self.replay.file.path)!r} holds epochs "
                              f"1..{self.epochs}; a cache is never cycled")
        d = self.cfg.data
        self.replay.start_epoch(epoch)
        batches = self.pipe.train_batches(epoch, batch_size=d.batch_size, seed=self.cfg.run.seed,
                                          drop_last=d.drop_last, rank=self._rank, world_size=self._world,
                                          stop=self.steps_per_epoch)
        for i, (xb, yb) in enumerate(batches):
            if i >= self.steps_per_epoch:
                break
            replayed = self.replay.batch(epoch, i, xb.shape[0])
            xb = xb.to(self.device, non_blocking=True)
            x = self.augment.apply(xb, replayed.params)  # params None: nothing is random, only normalised
            if self.cfg.run.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, yb.to(self.device, non_blocking=True), replayed.logits

    def loader(self, epoch: Callable[[], int]) -> EpochViews:
        """An iterable that, each time it is iterated, yields the views of epoch ``epoch()`` (from 1): for
        a training framework that iterates its loader once per epoch, e.g. Lightning's ``fit(module,
        views.loader(lambda: module.current_epoch + 1))``."""
        return EpochViews(self, epoch)

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.steps_per_epoch

    def close(self) -> None:
        """Close the data pipeline (its worker processes, for a streamed dataset)."""
        self.pipe.close()


class EpochViews:
    """:meth:`ReplayedViews.loader`: iterating it yields ``(x, y, teacher_logits)`` of epoch ``epoch()``."""

    def __init__(self, views: ReplayedViews, epoch: Callable[[], int]) -> None:
        self.views, self.epoch = views, epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
        return self.views.epoch(int(self.epoch()))

    def __len__(self) -> int:
        return len(self.views)
