"""Sequential shard streaming: WebDataset ``.tar`` shards and Hugging Face ``streaming: true``.

Shards are read front to back (no seeking), so this suits data that is only read in order. Each
epoch the shard order is a permutation from (seed, epoch); rank ``r`` of ``W`` takes shards
``r, r + W, ...`` and worker ``k`` of that rank's ``K`` takes every ``K``-th of those; a seeded
shuffle buffer mixes samples within a worker. Every rank yields exactly
``floor(samples / (W * batch))`` batches (a worker whose shards run out starts them again), so
no rank waits on another. The batches of a pass depend on (seed, epoch, rank, the number of
workers); resuming at batch ``s`` of an epoch replays the same stream and decodes only from there.
"""

from __future__ import annotations

import logging
import os
import random
import tarfile
from collections.abc import Iterator
from typing import Any

import torch

from ._core import DataError, derive_seed
from .loader import num_batches
from .sources import TAR_IMAGE_KEYS, array_to_image, tar_sample_key
from .stream import Pipeline, StreamSettings, _Bad, _collate
from .transforms import Geometry, read_file

log = logging.getLogger(__name__)

__all__ = ["HFStreamShards", "ShardPipeline", "TarShards"]


class TarShards:
    """WebDataset ``.tar`` shards: ``<key>.<jpg|png|...>`` + ``<key>.cls`` members, read in order.
    ``counts``/``labels`` come from one header scan (the ``.cls`` members are read, the images not)."""

    def __init__(self, shards: list[str], description: str) -> None:
        self.shards, self.description = shards, description
        self.counts: list[int] = []
        labels: list[int] = []
        for shard in shards:
            n = 0
            for _, _, label, _ in self._records(shard, images=False):
                labels.append(label)
                n += 1
            self.counts.append(n)
        if not labels:
            raise DataError(f"{description}: the shards hold no samples")
        self.num_classes = max(labels) + 1

    def _records(self, shard: str, images: bool = True) -> Iterator[tuple[int, Any, int, str]]:
        if not os.path.isfile(shard):
            raise DataError(f"{shard}: shard does not exist (from {self.description!r})")
        try:
            with tarfile.open(shard, "r|") as tf:  # sequential: never seeks
                key, parts, pos = None, {}, 0
                for m in tf:
                    if not m.isfile():
                        continue
                    k, ext = tar_sample_key(m.name)
                    if k != key and key is not None:
                        yield self._sample(shard, key, parts, pos)
                        pos += 1
                        parts = {}
                    key = k
                    ext = ext.lower()
                    if ext == "cls" or (images and ext in TAR_IMAGE_KEYS):
                        parts[ext] = tf.extractfile(m).read()  # type: ignore[union-attr]
                    elif ext in TAR_IMAGE_KEYS:
                        parts[ext] = b""
                if key is not None:
                    yield self._sample(shard, key, parts, pos)
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{shard}: not a readable tar shard ({e})") from None

    def _sample(self, shard: str, key: str, parts: dict[str, bytes], pos: int) -> tuple[int, Any, int, str]:
        img = next((parts[k] for k in TAR_IMAGE_KEYS if k in parts), None)
        if img is None or "cls" not in parts:
            raise DataError(f"{shard}: sample {key!r} needs an image member ({'/'.join(TAR_IMAGE_KEYS)}) and a "
                            f".cls member; has {sorted(parts)}")
        try:
            label = int(parts["cls"].decode().strip())
        except ValueError:
            raise DataError(f"{shard}: {key}.cls holds {parts['cls'][:20]!r}; expected an integer class index") \
                from None
        return pos, img, label, f"{shard}:{key}"

    def read(self, s: int) -> Iterator[tuple[int, Any, int, str]]:
        """``(position, image bytes, label, where)`` of shard ``s``, in file order."""
        return self._records(self.shards[s])


class HFStreamShards:
    """A Hugging Face streaming ``IterableDataset`` split into its ``n_shards`` shards."""

    def __init__(self, ds: Any, image_key: str, label_key: str, count: int, description: str) -> None:
        self.ds, self.image_key, self.label_key, self.description = ds, image_key, label_key, description
        n = max(1, int(ds.n_shards))
        self.shards = list(range(n))
        self.counts = [count // n + (i < count % n) for i in range(n)]  # an estimate: only the total is used

    def read(self, s: int) -> Iterator[tuple[int, Any, int, str]]:
        part = self.ds.shard(num_shards=len(self.shards), index=s, contiguous=True)
        for pos, row in enumerate(part):
            value = row[self.image_key]
            where = f"{self.description} shard {s} row {pos}"
            if isinstance(value, dict):
                value = value.get("bytes") or (read_file(value["path"]) if value.get("path") else None)
            yield pos, value if isinstance(value, bytes) else array_to_image(value, where), int(row[self.label_key]), \
                where


class _ShardStream(torch.utils.data.IterableDataset):
    """One pass (set in ``plan`` before the DataLoader is iterated; workers are started per pass)."""

    def __init__(self, reader: Any, geo: Geometry, seed: int, buffer: int) -> None:
        self.reader, self.geo, self.seed, self.buffer = reader, geo, seed, buffer
        self.plan: dict[str, Any] = {}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        p = self.plan
        workers = info.num_workers if info is not None else 1
        # the DataLoader asks worker 0 first: it must be the one whose next batch is batch `start`
        k = ((info.id if info is not None else 0) + p["start"]) % workers
        mine = p["shards"][k::workers]
        quota = p["batches"] // workers + (k < p["batches"] % workers)
        skip = max(0, -(-(p["start"] - k) // workers))  # this worker's batches before `start`
        rng = random.Random(derive_seed("shard-buffer", self.seed, p["epoch"], p["rank"], k))
        batch, made, buf = [], 0, []
        for rec in self._cycle(mine, p["shuffle"]):
            if p["shuffle"] and self.buffer > 1:
                buf.append(rec)
                if len(buf) < self.buffer:
                    continue
                rec = buf.pop(rng.randrange(len(buf)))
            batch.append(rec)
            if len(batch) == p["batch_size"]:
                if made >= skip:
                    yield self._decode(batch, p["epoch"])
                made += 1
                batch = []
                if made >= quota:
                    return
        if batch and not p["shuffle"]:  # evaluation: the last, short batch
            yield self._decode(batch, p["epoch"])

    def _cycle(self, shards: list[int], again: bool) -> Iterator[tuple[int, Any, int, str]]:
        while True:
            for s in shards:
                for pos, data, label, where in self.reader.read(s):
                    yield s * 2**32 + pos, data, label, where
            if not again or not shards:
                return

    def _decode(self, batch: list[tuple[int, Any, int, str]], epoch: int):
        items: list[Any] = []
        for key, data, label, where in batch:
            try:
                items.append((self.geo(data, where, epoch, key), label))
            except DataError as e:
                items.append(_Bad(str(e)))
            except Exception as e:  # noqa: BLE001 - handed to the main process as a value, with the file
                items.append(_Bad(f"{where}: {type(e).__name__}: {e}"))
        return _collate(items)


class ShardPipeline(Pipeline):
    """Train and test shard streams behind the :class:`Pipeline` interface."""

    mode = "stream"

    def __init__(self, *, name: str, train: Any, test: Any, train_geo: Geometry, eval_geo: Geometry,
                 num_classes: int, class_names: list[str], settings: StreamSettings, seed: int = 0,
                 buffer: int = 1000, mean: tuple | None = None, std: tuple | None = None) -> None:
        self.name, self.num_classes, self.class_names = name, num_classes, list(class_names)
        self.in_channels, self.image_size = eval_geo.channels, eval_geo.size
        self.train_reader, self.test_reader = train, test
        self.n_train, self.n_test = sum(train.counts), sum(test.counts)
        self.settings, self.seed = settings, seed
        self._train = _ShardStream(train, train_geo, seed, buffer)
        self._test = _ShardStream(test, eval_geo, seed, 0)
        self._test_stats = _ShardStream(train, eval_geo, seed, 0)
        c = self.in_channels
        self.mean = tuple(mean) if mean is not None else (0.0,) * c
        self.std = tuple(std) if std is not None else (1.0,) * c
        self.test_labels = torch.empty(0, dtype=torch.int64)

    def steps_per_epoch(self, batch_size: int, *, drop_last: bool, world_size: int = 1) -> int:
        """``floor(samples / (world_size * batch_size))`` on every rank (shards of unequal length
        cannot give every rank the same ceil)."""
        return num_batches(self.n_train, batch_size, drop_last=True, world_size=world_size)

    def _pass(self, ds: _ShardStream, plan: dict[str, Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        workers = max(0, min(self.settings.workers, len(plan["shards"])))
        ds.plan = {**plan, "start": plan.get("start", 0)}
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                             pin_memory=self.settings.pin_memory,
                                             prefetch_factor=self.settings.prefetch if workers else None)
        yield from self._decoded(loader, self.settings.on_bad_image)

    def train_batches(self, epoch: int, *, batch_size: int, seed: int, drop_last: bool, rank: int = 0,
                      world_size: int = 1, start: int = 0, stop: int | None = None
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = self.steps_per_epoch(batch_size, drop_last=True, world_size=world_size)
        n = len(self.train_reader.shards)
        if count == 0 or n < world_size:
            raise DataError(f"{self.name}: {n} shard(s) of {self.n_train} samples cannot give each of {world_size} "
                            f"rank(s) its own shards and a batch of {batch_size}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed("shards", seed, epoch)))
        shards = order.tolist()[rank::world_size]
        stop = count if stop is None else min(stop, count)
        self._train.seed = seed
        return self._pass(self._train, {"epoch": epoch, "rank": rank, "shards": shards, "batches": stop,
                                        "batch_size": batch_size, "shuffle": True, "start": start})

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shards = list(range(len(self.test_reader.shards)))
        return self._pass(self._test, {"epoch": 0, "rank": 0, "shards": shards, "batches": 2**62,
                                       "batch_size": batch_size, "shuffle": False})

    def stats_batches(self, limit: int, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``limit`` training samples (eval view), for the channel statistics."""
        done = 0
        shards = list(range(len(self.train_reader.shards)))
        plan = {"epoch": 0, "rank": 0, "shards": shards, "batches": 2**62, "batch_size": batch_size,
                "shuffle": False}
        for x, y in self._pass(self._test_stats, plan):
            yield x[: limit - done], y[: limit - done]
            done += x.shape[0]
            if done >= limit:
                return

    def sample(self, n: int) -> torch.Tensor:
        return next(iter(self.stats_batches(n, batch_size=n)))[0]
