"""Per-sample image geometry on Pillow, deterministic from (seed, epoch, sample index).

Decoding (:func:`open_image`) honours EXIF orientation and converts every Pillow mode to RGB or
one-channel L; :func:`random_resized_crop_box` and :func:`center_crop_box` compute the crop as
the ImageNet references define it; :class:`Geometry` applies one of them and returns uint8
``[C, size, size]``. Flips and normalisation happen later, batched, on the device
(:class:`adaptkd.data.Augment`).
"""

from __future__ import annotations

import io
import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._core import DataError, derive_seed

__all__ = ["Geometry", "center_crop_box", "open_image", "random_resized_crop_box", "to_mode"]

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _pil():
    from PIL import Image

    return Image


def to_mode(img: Any, channels: int) -> Any:
    """``img`` as Pillow mode ``L`` (``channels=1``) or ``RGB`` (``channels=3``).

    16-bit and 32-bit grayscale (``I;16``, ``I``, ``F``) are scaled to 8 bits by their type's range
    (not clipped); transparency (``RGBA``, ``LA``, palette with transparency) is composited on
    black; ``CMYK``, ``YCbCr``, ``P`` and the rest go through Pillow's own conversion."""
    Image = _pil()
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else (1.0 if mode == "F" else max(65535.0, float(arr.max(initial=0))))
        img = Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, img)
        mode = "RGBA"
    want = "L" if channels == 1 else "RGB"
    return img if img.mode == want else img.convert(want)


def _check_pixels(w: int, h: int, where: str) -> None:
    limit = _pil().MAX_IMAGE_PIXELS
    if limit and w * h > limit:
        raise DataError(f"{where}: image of {w}x{h} pixels exceeds the decompression-bomb limit "
                        f"({limit} pixels, PIL.Image.MAX_IMAGE_PIXELS); refusing to decode it")


def open_image(data: Any, where: str, *, reduce_to: tuple[int, int] | None = None) -> Any:
    """Decode ``data`` (bytes, or a Pillow image) with EXIF orientation applied.

    ``reduce_to=(w, h)`` (in the file's stored orientation) lets JPEG decode at a reduced scale
    (Pillow ``draft``) while keeping at least that many pixels. Raises :class:`DataError` naming
    ``where`` for data that does not decode, is truncated, or exceeds Pillow's decompression-bomb
    limit (``Image.MAX_IMAGE_PIXELS``)."""
    Image = _pil()
    from PIL import ImageOps

    try:
        if isinstance(data, Image.Image):
            img = data
        else:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            _check_pixels(w, h, where)
            if reduce_to is not None and img.format == "JPEG":
                img.draft(img.mode if img.mode in ("L", "RGB") else "RGB", reduce_to)
        img.load()
        return ImageOps.exif_transpose(img)
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{where}: refused as a decompression bomb ({e})") from None
    except Exception as e:  # Pillow reports bad files with many exception types
        raise DataError(f"{where}: not a readable image ({type(e).__name__}: {e})") from None


def image_size(data: Any, where: str) -> tuple[int, int, bool, bool]:
    """``(width, height, is_jpeg, rotated)`` as displayed (EXIF orientation applied; ``rotated``:
    stored turned by 90 degrees), from the header only."""
    Image = _pil()
    if isinstance(data, Image.Image):
        return data.size[0], data.size[1], False, False
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            _check_pixels(w, h, where)
            orientation = int(img.getexif().get(0x0112, 1) or 1)
            fmt = img.format
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"{where}: image exceeds the decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} pixels, "
                        "PIL.Image.MAX_IMAGE_PIXELS) by more than twice; refusing to decode it") from None
    except Exception as e:
        raise DataError(f"{where}: not a readable image ({type(e).__name__}: {e})") from None
    rotated = orientation in (5, 6, 7, 8)
    if rotated:
        w, h = h, w
    return w, h, fmt == "JPEG", rotated


def random_resized_crop_box(
    width: int, height: int, rng: random.Random, scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a random crop whose area is a uniform fraction in ``scale`` of the
    image and whose aspect ``w / h`` is log-uniform in ``ratio`` (10 tries, as the ImageNet
    references do); if no try fits, the largest centred crop with the aspect clamped to ``ratio``."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def center_crop_box(width: int, height: int, size: int, crop_ratio: float = 1.0) -> tuple[float, float, float, float]:
    """``(left, top, w, h)`` in source pixels of the eval view: resize the shorter side to
    ``round(size / crop_ratio)`` (the longer one in proportion, at least that long), then take the
    centred ``size`` x ``size`` square (offsets ``(resized - size) // 2``)."""
    short = max(size, int(round(size / crop_ratio)))
    s = short / min(width, height)
    rw, rh = max(short, int(round(width * s))), max(short, int(round(height * s)))
    left, top = (rw - size) // 2, (rh - size) // 2
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, size * sx, size * sy


@dataclass(frozen=True)
class Geometry:
    """One sample's geometry: decoded image -> uint8 ``[channels, size, size]``.

    ``kind``: ``"random_resized_crop"`` (train, ``imagenet``) draws its crop from a generator
    seeded by (``seed``, ``epoch``, ``index``) with ``scale``/``ratio``; ``"center"`` is the eval
    view of :func:`center_crop_box` with ``crop_ratio`` (1.0: the largest centred square). The
    crop is resized with Pillow's antialiased bilinear filter in the same call."""

    kind: str
    size: int
    channels: int
    crop_ratio: float = 1.0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    seed: int = 0

    def box(self, width: int, height: int, epoch: int, index: int) -> tuple[float, float, float, float]:
        """The crop ``(left, top, w, h)`` in source pixels for this sample and epoch."""
        if self.kind == "random_resized_crop":
            rng = random.Random(derive_seed("rrc", self.seed, epoch, index))
            left, top, w, h = random_resized_crop_box(width, height, rng, self.scale, self.ratio)
            return float(left), float(top), float(w), float(h)
        return center_crop_box(width, height, self.size, self.crop_ratio)

    def __call__(self, data: Any, where: str, epoch: int, index: int) -> torch.Tensor:
        """uint8 ``[channels, size, size]`` of ``data`` (bytes or a Pillow image)."""
        Image = _pil()
        w, h, jpeg, rotated = image_size(data, where)
        left, top, cw, ch = self.box(w, h, epoch, index)
        reduce_to = None
        if jpeg:  # decode at the smallest JPEG scale that keeps the crop at least `size` pixels
            reduce_to = (math.ceil(self.size * w / cw), math.ceil(self.size * h / ch))
            if rotated:
                reduce_to = reduce_to[::-1]
        img = to_mode(open_image(data, where, reduce_to=reduce_to), self.channels)
        sx, sy = img.size[0] / w, img.size[1] / h
        box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
        out = img.resize((self.size, self.size), Image.BILINEAR, box=box)
        arr = np.asarray(out, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``; :class:`DataError` naming it when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
