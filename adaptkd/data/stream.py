"""The data pipelines the engine trains from: in memory (:class:`MemoryPipeline`) or streamed
through ``torch.utils.data.DataLoader`` worker processes (:class:`StreamPipeline`).

Both yield uint8 batches ``(x [B, C, S, S], y int64 [B])`` in the order of
:func:`adaptkd.data.loader.epoch_indices` (deterministic from (seed, epoch), disjoint per rank,
the same number of batches on every rank); flips and normalisation follow on the device.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ._core import (
    DataBundle,
    DataError,
    Split,
    channel_stats,
    seeded_generator,
    stratified_order,
)
from .loader import epoch_indices, iterate_batches, num_batches
from .sources import Source
from .transforms import Geometry

log = logging.getLogger(__name__)

__all__ = ["MemoryPipeline", "Pipeline", "StreamPipeline", "StreamSettings"]


@dataclass
class StreamSettings:
    """How a :class:`StreamPipeline` reads: ``workers`` processes (0: in this process), each
    ``prefetch`` batches ahead; pinned host memory for CUDA; ``on_bad_image`` ``stop`` or ``skip``."""

    workers: int = 0
    prefetch: int = 2
    pin_memory: bool = False
    on_bad_image: str = "stop"


class Pipeline:
    """What the engine needs from a dataset, whatever its size.

    Attributes: ``name``, ``num_classes``, ``in_channels``, ``image_size``, ``mean``/``std`` (per
    channel, [0, 1] units), ``class_names``, ``n_train``/``n_test``, ``mode`` (``memory`` or
    ``stream``), ``skipped`` (bad images skipped so far, ``on_bad_image=skip``)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    mode: str
    skipped: int = 0
    resolved_note: str = ""  #: why the data is held in memory or streamed (the data log line)

    n_train: int
    n_test: int
    n_val: int = 0  # images in the validation split (0: none)
    test_labels: torch.Tensor

    def steps_per_epoch(self, batch_size: int, *, drop_last: bool, world_size: int = 1) -> int:
        """Batches per epoch on each rank (:func:`adaptkd.data.num_batches`)."""
        return num_batches(self.n_train, batch_size, drop_last=drop_last, world_size=world_size)

    def train_batches(self, epoch: int, *, batch_size: int, seed: int, drop_last: bool, rank: int = 0,
                      world_size: int = 1, start: int = 0, stop: int | None = None
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover - abstract
        """Batches ``start .. stop-1`` of epoch ``epoch`` for this rank."""
        raise NotImplementedError

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        """The whole test split in file order, eval geometry."""
        raise NotImplementedError

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole validation split in order, eval geometry (only where ``n_val > 0``)."""
        raise DataError(f"dataset {self.name!r} has no validation split here (data.val_size)")

    def sample(self, n: int) -> torch.Tensor:  # pragma: no cover - abstract
        """The first ``n`` train images (eval geometry), uint8 ``[n, C, S, S]``."""
        raise NotImplementedError

    def _decoded(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[str]]], on_bad_image: str
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The images of worker batches ``(x, y, bad)`` that decoded: a batch with unreadable images
        (``bad``: their descriptions) is refused, or with ``on_bad_image="skip"`` they are counted
        and the first is logged; a batch left empty is dropped."""
        for x, y, bad in batches:
            if bad:
                if on_bad_image != "skip":
                    raise DataError(f"{bad[0]} (set data.on_bad_image=skip to skip such images)")
                self.skipped += len(bad)
                log.warning("skipped %d unreadable image(s), %d so far (data.on_bad_image=skip): %s",
                            len(bad), self.skipped, bad[0])
            if x.shape[0]:
                yield x, y

    def close(self) -> None:
        """Stop worker processes (a no-op in memory)."""


class MemoryPipeline(Pipeline):
    """Both splits held as uint8 tensors (a :class:`DataBundle`); batches by index_select."""

    mode = "memory"

    def __init__(self, bundle: DataBundle) -> None:
        self.bundle = bundle
        for k in ("name", "num_classes", "in_channels", "image_size", "mean", "std", "class_names"):
            setattr(self, k, getattr(bundle, k))
        self.n_train, self.n_test = len(bundle.train), len(bundle.test)
        self.n_val = len(bundle.val) if bundle.val is not None else 0
        self.test_labels = bundle.test.y

    def train_batches(self, epoch: int, *, batch_size: int, seed: int, drop_last: bool, rank: int = 0,
                      world_size: int = 1, start: int = 0, stop: int | None = None
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        it = iterate_batches(self.bundle.train, batch_size, shuffle=True, seed=seed, epoch=epoch,
                             drop_last=drop_last, rank=rank, world_size=world_size)
        for i, b in enumerate(it):
            if stop is not None and i >= stop:
                return
            if i >= start:
                yield b

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.bundle.test.x, self.bundle.test.y
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.bundle.val is None:
            yield from super().val_batches(batch_size)
            return
        x, y = self.bundle.val.x, self.bundle.val.y
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    def sample(self, n: int) -> torch.Tensor:
        return self.bundle.train.x[: min(n, self.n_train)]


# ---------------------------------------------------------------------------------- streaming


class _Samples(torch.utils.data.Dataset):
    """Map-style dataset over keys ``(role, epoch, index)``; ``role`` names a (source, geometry)
    pair, so one worker pool serves training, evaluation, caching and statistics."""

    def __init__(self, roles: dict[str, tuple[Source, Geometry]], on_bad_image: str) -> None:
        self.roles, self.on_bad_image = roles, on_bad_image

    def __len__(self) -> int:
        return max(len(s) for s, _ in self.roles.values())

    def __getitem__(self, key: tuple[str, int, int]) -> tuple[torch.Tensor, int] | _Bad:
        role, epoch, i = key
        src, geo = self.roles[role]
        try:
            return geo(src.load(i), src.where(i), epoch, i), int(src.labels[i])
        except DataError as e:  # handed to the main process as a value: a clean message, no worker traceback
            return _Bad(str(e))
        except Exception as e:
            return _Bad(f"{src.where(i)}: {type(e).__name__}: {e}")


class _Bad:
    """A sample that could not be read, and why (the message names the file)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _collate(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    good = [t for t in items if not isinstance(t, _Bad)]
    bad = [t.reason for t in items if isinstance(t, _Bad)]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), bad
    return torch.stack([t[0] for t in good]), torch.tensor([t[1] for t in good], dtype=torch.int64), bad


class _Plan(torch.utils.data.Sampler):
    """The batch sampler: the list of key batches of the current pass (set before each pass)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamPipeline(Pipeline):
    """Sources decoded lazily by DataLoader workers: per-sample geometry (random-resized crop for
    training, resize + centre crop for evaluation) in the workers, uint8 batches out."""

    mode = "stream"

    def __init__(self, *, name: str, train: Source, test: Source, train_geo: Geometry, eval_geo: Geometry,
                 num_classes: int, class_names: list[str], settings: StreamSettings,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        self.name, self.num_classes, self.class_names = name, num_classes, list(class_names)
        self.in_channels, self.image_size = eval_geo.channels, eval_geo.size
        self.train_src, self.test_src = train, test
        self.n_train, self.n_test = len(train), len(test)
        self.test_labels = test.labels
        self.settings = settings
        self.train_geo, self.eval_geo = train_geo, eval_geo
        roles = {"train": (train, train_geo), "test": (test, eval_geo), "train_eval": (train, eval_geo)}
        self._samples = _Samples(roles, settings.on_bad_image)
        self._plan = _Plan()
        w = settings.workers
        self._loader = torch.utils.data.DataLoader(
            self._samples, batch_sampler=self._plan, num_workers=w, collate_fn=_collate,
            pin_memory=settings.pin_memory, persistent_workers=w > 0,
            prefetch_factor=settings.prefetch if w > 0 else None,
        )
        if mean is None or std is None:  # set by the builder (streamed_stats) before training
            mean, std = (0.0,) * self.in_channels, (1.0,) * self.in_channels
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    # -- passes
    def _run(self, batches: list[list[tuple[str, int, int]]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._plan.batches = batches
        yield from self._decoded(self._from_workers(batches), self.settings.on_bad_image)

    def _from_workers(self, batches: list[list[tuple[str, int, int]]]
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        """The loader's batches; a worker process that dies is reported with the batch's first files."""
        it = iter(self._loader)
        for k in itertools.count():
            try:
                yield next(it)
            except StopIteration:
                return
            except RuntimeError as e:
                if "DataLoader worker" not in str(e):
                    raise
                keys = batches[k] if k < len(batches) else []
                files = ", ".join(self._samples.roles[r][0].where(i) for r, _, i in keys[:3])
                raise DataError(f"a data worker process died while reading batch {k} (first files: {files}): "
                                f"{str(e).splitlines()[0]}") from e

    def train_batches(self, epoch: int, *, batch_size: int, seed: int, drop_last: bool, rank: int = 0,
                      world_size: int = 1, start: int = 0, stop: int | None = None
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = num_batches(self.n_train, batch_size, drop_last=drop_last, world_size=world_size)
        if count == 0:
            raise DataError(f"{self.n_train} samples over {world_size} rank(s) give no full batch of {batch_size} "
                            "with drop_last=True; lower batch_size or set drop_last=False")
        idx = epoch_indices(self.n_train, shuffle=True, seed=seed, epoch=epoch, drop_last=drop_last, rank=rank,
                            world_size=world_size).tolist()
        stop = count if stop is None else min(stop, count)
        batches = [[("train", epoch, i) for i in idx[b * batch_size : (b + 1) * batch_size]]
                   for b in range(start, stop)]
        return self._run(batches)

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.n_test
        return self._run([[("test", 0, i) for i in range(a, min(a + batch_size, n))] for a in range(0, n, batch_size)])

    def sample(self, n: int) -> torch.Tensor:
        keys = [("train_eval", 0, i) for i in range(min(n, self.n_train))]
        items = [self._samples[k] for k in keys]
        bad = [t.reason for t in items if isinstance(t, _Bad)]
        if bad:
            raise DataError(bad[0])
        return torch.stack([t[0] for t in items])  # type: ignore[index]

    def decode_all(self, role: str, batch_size: int = 256) -> Split:
        """Every sample of ``role`` decoded into memory (for ``data.cache=memory``)."""
        src = self._samples.roles[role][0]
        n = len(src)
        keys = [[(role, 0, i) for i in range(a, min(a + batch_size, n))] for a in range(0, n, batch_size)]
        xs, ys = [], []
        for x, y in self._run(keys):
            xs.append(x)
            ys.append(y)
        return Split(torch.cat(xs), torch.cat(ys))

    def streamed_stats(self, limit: int, batch_size: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean/std of up to ``limit`` train images (a class-stratified subset chosen by
        a fixed seed when there are more), eval geometry, float64 accumulators: memory does not
        grow with the dataset."""
        n = self.n_train
        if limit < n:
            order = stratified_order(self.train_src.labels, seeded_generator("stats", 0))
            index = torch.sort(order[:limit]).values.tolist()
        else:
            index = list(range(n))
        keys = [[("train_eval", 0, i) for i in index[a : a + batch_size]] for a in range(0, len(index), batch_size)]
        return accumulate_stats(self._run(keys), self.in_channels, self.name)

    def close(self) -> None:
        it = getattr(self._loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader._iterator = None


def accumulate_stats(batches: Any, channels: int, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units over uint8 batches ``(x [B, C, H, W], y)``: float64 sums
    of ``x`` and ``x**2`` per batch (memory independent of the number of images), population std,
    1.0 for a constant channel."""
    s = torch.zeros(channels, dtype=torch.float64)
    s2 = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for x, _ in batches:
        part = x.to(torch.float64) / 255.0
        s += part.sum(dim=(0, 2, 3))
        s2 += (part * part).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise DataError(f"dataset {name!r}: no train image could be read for the channel statistics")
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0.0).sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def bundle_from_stream(p: StreamPipeline) -> DataBundle:
    """Decode both splits of ``p`` into memory (square eval geometry) as a :class:`DataBundle`;
    mean/std from the decoded train split, as the in-memory path always computed them."""
    train, test = p.decode_all("train_eval"), p.decode_all("test")
    mean, std = channel_stats(train.x)
    return DataBundle(name=p.name, train=train, test=test, num_classes=p.num_classes, in_channels=p.in_channels,
                      image_size=p.image_size, mean=mean, std=std, class_names=p.class_names)


def default_workers() -> int:
    """``data.workers`` when unset: one fewer than the CPU cores, between 0 and 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))
