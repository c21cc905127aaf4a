"""Pre-activation Wide ResNets (Zagoruyko & Komodakis 2016) for CIFAR, no dropout.

``wrn_D_K``: depth D = 6n + 4, widths 16 / 16K / 32K / 64K, n blocks per stage. Module names
follow the CRD / mdistiller zoo (``block1.layer.0.convShortcut`` ...), so its state_dict keys line up.

Taps: every residual block. Blocks are pre-activation, so a block's output is the raw residual
sum (no BN/ReLU after it; the next block or the final ``bn1``+ReLU normalises it).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import init_cnn
from .registry import register_model


class WideBasic(nn.Module):
    """x -> [BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3] + shortcut.

    When the shape changes, the shortcut is a 1x1 conv applied to the *pre-activated* input
    (BN-ReLU shared with the residual path), as in the reference implementation.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut: nn.Conv2d | None = None  # name kept for state_dict compatibility
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(F.relu(self.bn2(out)))
        if self.convShortcut is None:
            return x + out
        return self.convShortcut(act) + out


class _Stage(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
              for i in range(n)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; H, W >= 8."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        if widen < 1:
            raise ValueError(f"WideResNet widen factor must be >= 1, got {widen}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, padding=1, bias=False)
        self.block1 = _Stage(n, ch[0], ch[1], 1)
        self.block2 = _Stage(n, ch[1], ch[2], 2)
        self.block3 = _Stage(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)
        init_cnn(self)
        self.tap_blocks = [k for k, m in self.named_modules() if isinstance(m, WideBasic)]
        self.head_name = "fc"
        self.feature_dim = ch[3]

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        return self.fc(self.avgpool(x).flatten(1))


@register_model()
def wrn_16_1(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 1, num_classes, in_channels)


@register_model()
def wrn_16_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 2, num_classes, in_channels)


@register_model()
def wrn_16_8(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 8, num_classes, in_channels)


@register_model()
def wrn_16_10(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 10, num_classes, in_channels)


@register_model()
def wrn_40_1(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet(40, 1, num_classes, in_channels)


@register_model()
def wrn_40_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet(40, 2, num_classes, in_channels)
