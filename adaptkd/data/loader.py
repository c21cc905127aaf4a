"""Deterministic mini-batches over an in-memory :class:`Split`, optionally sharded across
data-parallel ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ._core import DataError, Split, seeded_generator


def _per_rank(n: int, world_size: int, drop_last: bool) -> int:
    # like torch.utils.data.DistributedSampler: drop the tail (drop_last) or pad by wrapping
    return n // world_size if drop_last else -(-n // world_size)


def num_batches(n: int, batch_size: int, *, drop_last: bool, world_size: int = 1) -> int:
    """How many batches :func:`iterate_batches` yields per epoch on each rank for a split of
    ``n`` samples. With ``world_size > 1`` every rank gets ``ceil(n / world_size)`` samples
    (padded by wrapping around), or ``n // world_size`` with ``drop_last``; then
    ``ceil(per_rank / batch_size)``, or ``per_rank // batch_size`` with ``drop_last``."""
    if n < 0 or batch_size < 1 or world_size < 1:
        raise DataError(
            f"num_batches: need n >= 0, batch_size >= 1, world_size >= 1; got n={n}, "
            f"batch_size={batch_size}, world_size={world_size}"
        )
    per_rank = _per_rank(n, world_size, drop_last)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


def epoch_indices(
    n: int, *, shuffle: bool, seed: int, epoch: int, drop_last: bool = False, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """int64 indices this rank visits in this epoch, in order (before batching).

    The order is ``torch.randperm(n)`` from a CPU generator seeded by (``seed``, ``epoch``)
    (identity when not shuffling). Across ranks the order is padded by wrapping around to a
    multiple of ``world_size`` (or truncated with ``drop_last``) and rank ``r`` takes positions
    ``r, r + world_size, ...``: the shards are disjoint and cover the split."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"iterate_batches: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if n < 1:
        raise DataError("iterate_batches: the split is empty; expected at least one sample")
    if shuffle:
        order = torch.randperm(n, generator=seeded_generator("batches", seed, epoch))
    else:
        order = torch.arange(n)
    per_rank = _per_rank(n, world_size, drop_last)
    total = per_rank * world_size
    if total > n:
        order = order.repeat(-(-total // n))
    order = order[:total]
    return order[rank::world_size]


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield CPU batches ``(x uint8 [b, C, H, W], y int64 [b])`` of ``split`` for one epoch.

    Deterministic in (``seed``, ``epoch``); different epochs get different orders. With
    ``world_size > 1`` each rank gets a disjoint strided shard of the same permutation and
    every rank yields :func:`num_batches` batches. ``drop_last`` drops a final short batch.
    """
    if batch_size < 1:
        raise DataError(f"iterate_batches: batch_size must be >= 1, got {batch_size}")
    n = len(split)
    count = num_batches(n, batch_size, drop_last=drop_last, world_size=world_size)
    index = epoch_indices(
        n, shuffle=shuffle, seed=seed, epoch=epoch, drop_last=drop_last, rank=rank, world_size=world_size
    )
    if count == 0:
        raise DataError(
            f"iterate_batches: {n} samples over {world_size} rank(s) give no full batch of "
            f"{batch_size} with drop_last=True; lower batch_size or set drop_last=False"
        )
    return _batches(split, index, batch_size, count)


def _batches(
    split: Split, index: torch.Tensor, batch_size: int, count: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(count):
        idx = index[i * batch_size : (i + 1) * batch_size]
        yield split.x.index_select(0, idx), split.y.index_select(0, idx)
