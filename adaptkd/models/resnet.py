"""CIFAR ResNets (He et al. 2016, section 4.2) as used in the CRD / mdistiller KD zoo.

* ``resnet8 ... resnet110``: 3 stages of BasicBlocks, widths 16/32/64, ``(depth - 2) / 6``
  blocks per stage.
* ``resnet8x4``, ``resnet32x4``: the same with a 32-wide stem and stages 64/128/256.
* ``resnet50``: the CIFAR Bottleneck ResNet-50 (3x3 stride-1 stem, no max-pool, stages
  64/128/256/512 x4, [3, 4, 6, 3] blocks).

Module names follow the reference zoo, so its state_dict keys line up.
Taps: every residual block, output after the final ReLU (the reference's "feats"; its
"preact_feats" are the same tensor before that ReLU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import init_cnn
from .registry import register_model


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut = 1x1 conv + BN when shape changes."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; H, W >= 8 (stride 4 overall)."""

    def __init__(
        self, depth: int, widths: Sequence[int], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.inplanes = widths[0]
        self.layer1 = self._make_layer(widths[1], n, 1)
        self.layer2 = self._make_layer(widths[2], n, 2)
        self.layer3 = self._make_layer(widths[3], n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_cnn(self)
        self.tap_blocks = [k for k, m in self.named_modules() if isinstance(m, BasicBlock)]
        self.head_name = "fc"
        self.feature_dim = widths[3]

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self.inplanes, planes, stride if i == 0 else 1))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class Bottleneck(nn.Module):
    """1x1 -> 3x3(stride) -> 1x1 (x4 channels) + shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarBottleneckResNet(nn.Module):
    """Bottleneck ResNet with a 3x3 stride-1 stem (no max-pool); [B, C, H, W] -> [B, num_classes], H, W >= 8."""

    def __init__(self, num_blocks: Sequence[int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512 * Bottleneck.expansion
        self.linear = nn.Linear(self.feature_dim, num_classes)
        init_cnn(self)
        self.tap_blocks = [k for k, m in self.named_modules() if isinstance(m, Bottleneck)]
        self.head_name = "linear"

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(Bottleneck(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(self.avgpool(x).flatten(1))


_SLIM = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


@register_model()
def resnet8(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _SLIM, num_classes, in_channels)


@register_model()
def resnet14(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(14, _SLIM, num_classes, in_channels)


@register_model()
def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(20, _SLIM, num_classes, in_channels)


@register_model()
def resnet32(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _SLIM, num_classes, in_channels)


@register_model()
def resnet44(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(44, _SLIM, num_classes, in_channels)


@register_model()
def resnet56(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(56, _SLIM, num_classes, in_channels)


@register_model()
def resnet110(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(110, _SLIM, num_classes, in_channels)


@register_model()
def resnet8x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _X4, num_classes, in_channels)


@register_model()
def resnet32x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _X4, num_classes, in_channels)


@register_model()
def resnet50(num_classes: int, in_channels: int = 3) -> CifarBottleneckResNet:
    return CifarBottleneckResNet((3, 4, 6, 3), num_classes, in_channels)
