"""Input specs: the resolution and normalisation a network was trained for, and the view that gives it that.

Every network carries (or is given) an :class:`InputSpec`. Zoo models are trained by adaptkd on the
run's own data, so theirs is the data's; pretrained ecosystem models bring theirs (the Hugging Face
image-processor config, timm's pretrained config, torchvision's weights transforms). The engine
feeds each frozen teacher the student's augmented view converted to that teacher's spec with
:class:`InputView` (one resize and one per-channel affine on the device, once per step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["InputSpec", "InputView", "spec_size"]


def spec_size(value: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``[224, 224]`` or ``[3, 224, 224]`` (timm's form) -> ``(224, 224)``."""
    if isinstance(value, bool):
        raise ValueError(f"an input size is an int or [height, width], got {value!r}")
    if isinstance(value, int):
        return (value, value)
    vals = [int(v) for v in value]
    if len(vals) == 3:
        vals = vals[1:]
    if len(vals) != 2 or min(vals) < 1:
        raise ValueError(f"an input size is an int or [height, width], got {value!r}")
    return (vals[0], vals[1])


@dataclass(frozen=True)
class InputSpec:
    """What a network expects: images ``size`` = (H, W), normalised as ``(pixel/255 - mean) / std``.

    ``source`` says where the spec came from (shown in the log, the summary and the report).
    """

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"input spec: mean and std need one value per channel, got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"input spec: every std must be > 0, got {self.std}")

    def describe(self) -> str:
        mean = ", ".join(f"{v:.3f}" for v in self.mean)
        std = ", ".join(f"{v:.3f}" for v in self.std)
        src = f" ({self.source})" if self.source else ""
        return f"{self.size[0]}x{self.size[1]}, mean [{mean}], std [{std}]{src}"

    def same_view(self, other: "InputSpec") -> bool:
        """True when an image prepared for ``other`` is exactly an image prepared for ``self``."""
        return self.size == other.size and self.mean == other.mean and self.std == other.std


class InputView(nn.Module):
    """Convert a batch normalised for ``src`` into one normalised for ``dst``: [B, C, H, W] -> [B, C', H', W'].

    ``x * a + b`` per channel with ``a = src.std / dst.std`` and ``b = (src.mean - dst.mean) / dst.std``
    (exactly un-normalising and re-normalising), and a bilinear resize to ``dst.size`` (antialiased
    when shrinking). The affine is applied on the smaller of the two grids (resizing is linear, so
    the order does not change the result beyond rounding). A one-channel source is repeated to a
    three-channel destination. ``identity`` is True when nothing is to be done (zoo teachers on
    their own data): then ``forward`` returns its input unchanged.
    """

    scale: Tensor
    shift: Tensor

    def __init__(self, src: InputSpec, dst: InputSpec) -> None:
        super().__init__()
        cs, cd = len(src.mean), len(dst.mean)
        if cs != cd and cs != 1:
            raise ValueError(f"cannot feed {cs}-channel images to a network expecting {cd} channels")
        self.src, self.dst = src, dst
        self.repeat = cd if cs == 1 and cd != 1 else 1
        smean = torch.tensor(src.mean * (cd if cs == 1 else 1), dtype=torch.float32)
        sstd = torch.tensor(src.std * (cd if cs == 1 else 1), dtype=torch.float32)
        dmean, dstd = torch.tensor(dst.mean, dtype=torch.float32), torch.tensor(dst.std, dtype=torch.float32)
        self.register_buffer("scale", (sstd / dstd).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((smean - dmean) / dstd).view(1, -1, 1, 1), persistent=False)
        self.affine = not (src.mean == dst.mean and src.std == dst.std and self.repeat == 1)
        self.identity = src.size == dst.size and not self.affine and self.repeat == 1

    def extra_repr(self) -> str:
        return f"{self.src.size} -> {self.dst.size}, renormalise={self.affine}, repeat={self.repeat}"

    def _affine(self, x: Tensor) -> Tensor:
        if self.repeat > 1:
            x = x.expand(-1, self.repeat, -1, -1)
        if not self.affine:
            return x
        return torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        if self.identity:
            return x
        size = self.dst.size
        if tuple(x.shape[-2:]) == size:
            return self._affine(x)
        shrink = size[0] * size[1] < x.shape[-2] * x.shape[-1]
        if not shrink:  # affine on the smaller input grid, then upsample
            x = self._affine(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return self._affine(x) if shrink else x
