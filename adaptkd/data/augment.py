"""Batched augmentation on the batch's device: uint8 images in, normalised float32 out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._core import DataError


class Augment(torch.nn.Module):
    """uint8 ``[B, C, H, W]`` -> float32 normalised ``[B, C, H, W]``, on the input's device.

    In training mode (``train=True``, or after ``.train()``): a random crop of the image
    zero-padded by ``crop_padding`` pixels on every side (an independent offset per sample,
    i.e. a shift of up to ``crop_padding`` pixels each way with black filling the border), then
    a horizontal flip with probability 0.5 per sample. Both are one gather over the batch, with
    no Python loop over samples and no host synchronisation. In eval mode (``train=False`` or
    ``.eval()``) only ``(x / 255 - mean) / std``.

    Random numbers come from ``generator`` when given (it must live on the batch's device), so
    a seeded generator makes the output reproducible; otherwise from torch's default RNG.
    ``mean``/``std`` are per channel in [0, 1] pixel units; they are non-persistent buffers
    (they follow ``.to(device)`` but stay out of ``state_dict``).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        crop_padding: int = 4,
        flip: bool = True,
        train: bool = True,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor([float(v) for v in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(v) for v in std], dtype=torch.float32)
        if mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise DataError(
                f"Augment: mean and std need one value per channel and the same length, "
                f"got {mean_t.numel()} and {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise DataError(f"Augment: every std must be > 0, got {std_t.tolist()}")
        if crop_padding < 0:
            raise DataError(f"Augment: crop_padding must be >= 0, got {crop_padding}")
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        # (x / 255 - mean) / std  ==  x * scale + shift
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean_t / std_t).view(1, -1, 1, 1), persistent=False)
        self.train(train)

    @property
    def channels(self) -> int:
        return self.scale.shape[1]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, crop_padding={self.crop_padding}, flip={self.flip}"

    def forward(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x_uint8
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != self.channels:
            raise DataError(
                f"Augment expects uint8 images [B, {self.channels}, H, W], got {x.dtype} "
                f"with shape {tuple(x.shape)}"
            )
        if self.training and x.shape[0] > 0 and (self.crop_padding > 0 or self.flip):
            x = self._crop_flip(x, generator)
        return x.to(torch.float32) * self.scale + self.shift

    def _crop_flip(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.crop_padding
        dev = x.device
        if p > 0:
            offsets = torch.randint(0, 2 * p + 1, (2, b), device=dev, generator=generator)
        else:
            offsets = torch.zeros((2, b), dtype=torch.long, device=dev)
        if self.flip:
            flips = torch.randint(0, 2, (b,), device=dev, generator=generator).bool()
        else:
            flips = torch.zeros(b, dtype=torch.bool, device=dev)
        rows = torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev)
        # output (i, j) reads padded[i + dy, j' + dx], j' = W-1-j when flipped (crop, then flip)
        row_idx = offsets[0][:, None] + rows  # [B, H]
        col_idx = offsets[1][:, None] + torch.where(flips[:, None], w - 1 - cols, cols)  # [B, W]
        padded = F.pad(x, (p, p, p, p)) if p > 0 else x  # zeros = black border, like RandomCrop
        out = padded.gather(2, row_idx[:, None, :, None].expand(b, c, h, padded.shape[3]))
        return out.gather(3, col_idx[:, None, None, :].expand(b, c, h, w))
