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

    scale: torch.Tensor  #: buffer [1, C, 1, 1]: 1 / (255·std)
    shift: torch.Tensor  #: buffer [1, C, 1, 1]: -mean / std

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
        self._tables: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}
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
        x = self._check(x_uint8)
        drawn = self._draw(x.shape[0], x.device, generator)
        if drawn is not None:
            x = self._crop_flip(x, *drawn)
        return x.to(torch.float32) * self.scale + self.shift

    @property
    def bounded(self) -> bool:
        """Whether every output value is finite for any uint8 input: ``x · scale + shift`` with ``x`` in
        [0, 255] stays within float32 (false for a poisoned normalisation, e.g. a std of 1e-45)."""
        bound = (self.scale.abs() * 255 + self.shift.abs()).to(torch.float64)
        return bool(torch.isfinite(self.scale).all() and torch.isfinite(self.shift).all()
                    and (bound < torch.finfo(torch.float32).max).all())

    @property
    def random(self) -> bool:
        """Whether training-mode calls draw random parameters (a crop or a flip is configured)."""
        return self.training and (self.crop_padding > 0 or self.flip)

    def draw(self, batch: int, device: torch.device | str,
             generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The random parameters of ``batch`` views: int64 ``[B, 3]`` = (row offset, column
        offset, flip) per sample, each offset in ``[0, 2 * crop_padding]``; ``None`` when nothing
        is random (eval mode, no crop and no flip, or an empty batch).

        ``forward(x, g)`` is ``apply(x, draw(len(x), x.device, g))``: the same random numbers in the
        same order (offsets, then flips), so a stored ``draw`` replays the view exactly.
        """
        drawn = self._draw(batch, device, generator)
        return None if drawn is None else torch.stack(drawn, 1)

    def _draw(self, batch: int, device: torch.device | str, generator: torch.Generator | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(row offsets, column offsets, flips), each int64 ``[B]``: the random numbers of :meth:`draw`."""
        if not self.random or batch == 0:
            return None
        p = self.crop_padding
        if p > 0:
            offsets = torch.randint(0, 2 * p + 1, (2, batch), device=device, generator=generator)
        else:
            offsets = torch.zeros((2, batch), dtype=torch.long, device=device)
        if self.flip:
            flips = torch.randint(0, 2, (batch,), device=device, generator=generator)
        else:
            flips = torch.zeros(batch, dtype=torch.long, device=device)
        return offsets[0], offsets[1], flips

    # Augment.apply means "apply the augmentation"; nn.Module.apply(fn) is never called on an Augment
    def apply(self, x_uint8: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        """The views of ``x_uint8`` that ``params`` (from :meth:`draw`, any integer dtype) describe,
        normalised; ``params=None`` only normalises."""
        x = self._check(x_uint8)
        if params is not None:
            if params.shape != (x.shape[0], 3):
                raise DataError(f"Augment.apply: expected parameters [{x.shape[0]}, 3], got {tuple(params.shape)}")
            params = params.to(x.device, torch.long)
            x = self._crop_flip(x, params[:, 0], params[:, 1], params[:, 2])
        return x.to(torch.float32) * self.scale + self.shift

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != self.channels:
            raise DataError(
                f"Augment expects uint8 images [B, {self.channels}, H, W], got {x.dtype} "
                f"with shape {tuple(x.shape)}"
            )
        return x

    def _crop_flip(self, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Output pixel (i, j) of sample b reads padded[b, :, i + dy, j' + dx], j' = W-1-j where the
        sample is flipped (crop, then flip): one gather over the flattened padded image."""
        b, c, h, w = x.shape
        p = self.crop_padding
        padded = F.pad(x, (p, p, p, p)) if p > 0 else x  # zeros = black border, like RandomCrop
        rows, cols = self._index_tables(h, w, x.device)
        start = dy * (w + 2 * p) + dx  # [B]: the crop's top-left corner in the flattened padded image
        flat = (start[:, None] + cols[flips])[:, None, :] + rows[:, None]  # [B, H, W]
        out = padded.reshape(b, c, -1).gather(2, flat.view(b, 1, h * w).expand(b, c, h * w))
        return out.view(b, c, h, w)

    def _index_tables(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached per image size and device: the padded image's row starts ``[H]`` (row i at
        ``i * (W + 2p)``) and the column offsets ``[2, W]`` (row 0 as read, row 1 flipped)."""
        key = (h, w, str(device))
        tables = self._tables.get(key)
        if tables is None:
            cols = torch.arange(w, device=device)
            tables = (torch.arange(h, device=device) * (w + 2 * self.crop_padding), torch.stack([cols, w - 1 - cols]))
            self._tables[key] = tables
        return tables
