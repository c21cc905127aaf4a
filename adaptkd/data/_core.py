"""Containers and shared helpers of the data layer: :class:`Split`, :class:`DataBundle`,
:class:`DataError`, per-channel statistics, resizing and deterministic subsampling."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from adaptkd.errors import DataError


@dataclass
class Split:
    """One in-memory split.

    x: uint8 images ``[N, C, H, W]``; y: int64 labels ``[N]``. Construction checks types,
    shapes and that the split is not empty (label *range* is checked by :class:`DataBundle`,
    which knows the number of classes).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise DataError(
                f"Split.x and Split.y must be torch tensors, got {type(self.x).__name__} "
                f"and {type(self.y).__name__}"
            )
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise DataError(
                f"Split.x must be a uint8 tensor [N, C, H, W], got {self.x.dtype} "
                f"with shape {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise DataError(
                f"Split.y must be an int64 tensor [N], got {self.y.dtype} with shape "
                f"{tuple(self.y.shape)}"
            )
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"Split has {self.x.shape[0]} images but {self.y.shape[0]} labels; "
                "expected one label per image"
            )
        if self.x.shape[0] == 0:
            raise DataError("Split is empty: expected at least one image")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataBundle:
    """A dataset ready for training: both splits plus what models and augmentation need.

    ``mean``/``std`` are per channel in [0, 1] pixel units (pixel / 255). Construction checks
    that both splits agree with ``in_channels``, ``image_size`` (square H == W) and
    ``num_classes`` (every label in ``[0, num_classes)``).
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    val: Split | None = None

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise DataError(f"dataset {self.name!r}: num_classes must be >= 1, got {self.num_classes}")
        splits = [("train", self.train), ("test", self.test)] + ([("val", self.val)] if self.val is not None else [])
        for split_name, split in splits:
            where = f"dataset {self.name!r}, {split_name} split"
            _, c, h, w = split.x.shape
            if c != self.in_channels:
                raise DataError(f"{where}: images have {c} channels, expected in_channels={self.in_channels}")
            if h != self.image_size or w != self.image_size:
                raise DataError(f"{where}: images are {h}x{w}, expected image_size={self.image_size} (square)")
            check_labels(split.y, self.num_classes, where)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise DataError(
                f"dataset {self.name!r}: mean/std need {self.in_channels} values (one per channel), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(not s > 0 for s in self.std):
            raise DataError(f"dataset {self.name!r}: every std must be > 0, got {self.std}")
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise DataError(
                f"dataset {self.name!r}: {len(self.class_names)} class names for {self.num_classes} classes"
            )


def check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    """Raise :class:`DataError` naming ``where`` and the first bad value unless every label
    is in ``[0, num_classes)``."""
    if y.numel() == 0:
        raise DataError(f"{where}: no samples; expected at least one")
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        first = int(y[bad][0])
        count = int(bad.sum())
        raise DataError(
            f"{where}: label {first} is outside [0, {num_classes}) "
            f"({count} bad label{'s' if count != 1 else ''})"
        )


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``[N, C, H, W]`` in [0, 1] units (float64
    accumulation over chunks of at most ``chunk`` images and 2**24 values, population std). A
    channel with zero variance gets std 1.0 so that normalisation stays finite."""
    c = x.shape[1]
    # float64 copies of at most ~2**24 values at a time (128 MB), however large the images
    chunk = max(1, min(chunk, 2**24 // max(1, c * x.shape[2] * x.shape[3])))
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk].to(torch.float64) / 255.0
        s += part.sum(dim=(0, 2, 3))
        s2 += (part * part).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` to ``[N, C, size, size]``: bilinear (antialiased when
    shrinking), rounded back to uint8. Returns ``x`` itself when it already has that size."""
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    shrink = size < max(x.shape[-2], x.shape[-1])
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk].to(torch.float32)
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def derive_seed(*parts: object) -> int:
    """A 63-bit seed mixed from ``parts`` with SHA-256: the same on every machine and Python
    version, and unrelated seeds for nearby inputs (unlike ``seed + epoch``)."""
    text = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(*parts))
    return g


def stratified_order(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of ``range(len(y))`` whose every prefix is (nearly) class
    balanced: each class's samples are shuffled and spread evenly along the order, so the
    first ``n`` indices hold about ``n * share(class)`` samples of each class."""
    n = y.shape[0]
    perm = torch.randperm(n, generator=generator)
    yp = y[perm]
    # rank of each element among the elements of its class, in permutation order
    by_class = torch.sort(yp, stable=True).indices
    sorted_y = yp[by_class]
    counts = torch.bincount(sorted_y)
    starts = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(n) - starts[sorted_y]
    rank = torch.empty(n, dtype=torch.long)
    rank[by_class] = rank_sorted
    key = (rank.to(torch.float64) + 0.5) / counts[yp].to(torch.float64)
    return perm[torch.sort(key, stable=True).indices]


def take(split: Split, index: torch.Tensor) -> Split:
    """The samples of ``split`` at ``index`` (a copy)."""
    return Split(split.x[index].contiguous(), split.y[index].contiguous())


def split_off_val(bundle: DataBundle, val_size: int, seed: int) -> DataBundle:
    """``bundle`` with a validation split of ``val_size`` images held out of its training split:
    class-stratified, drawn by ``seed``, disjoint from what stays in ``train`` (both keep the
    original order). ``val_size`` 0 returns ``bundle`` unchanged (no validation split)."""
    if val_size == 0:
        return bundle
    n = len(bundle.train)
    if val_size < 0 or val_size >= n:
        raise DataError(
            f"data.val_size must be between 0 and {n - 1} (the training images of {bundle.name!r} minus one), "
            f"got {val_size}"
        )
    order = stratified_order(bundle.train.y, seeded_generator("val-split", bundle.name, seed))
    val = take(bundle.train, torch.sort(order[:val_size]).values)
    train = take(bundle.train, torch.sort(order[val_size:]).values)
    return DataBundle(
        name=bundle.name, train=train, test=bundle.test, num_classes=bundle.num_classes,
        in_channels=bundle.in_channels, image_size=bundle.image_size, mean=bundle.mean, std=bundle.std,
        class_names=bundle.class_names, val=val,
    )


def subsample(split: Split, n: int | None, seed: int, what: str) -> Split:
    """A deterministic, class-stratified subset of ``n`` samples (``None``: the whole split),
    kept in the split's original order."""
    if n is None:
        return split
    if n < 1 or n > len(split):
        raise DataError(f"{what}: size must be between 1 and {len(split)} (the samples available), got {n}")
    if n == len(split):
        return split
    order = stratified_order(split.y, seeded_generator("subsample", what, seed))
    index = torch.sort(order[:n]).values
    return take(split, index)
