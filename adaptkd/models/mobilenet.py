"""MobileNets for 32x32 inputs.

``mobilenetv2``: the CIFAR MobileNetV2 of the CRD / mdistiller zoo ("mobile_half": expansion 6,
``width_mult=0.5``). Differences from ImageNet MobileNetV2 that the reference has and we keep:
the t=1 first block still has its 1x1 expansion conv; channels are ``int(c * width_mult)``
(no rounding to 8); the last conv has 1280 channels unless ``width_mult > 1``; stride-2 stem.
Taps: every inverted-residual block (17), output = the linear bottleneck (+ identity), no ReLU.

``mobilenet_v1``: the CIFAR MobileNet (v1) used in SwitOKD's multi-network setting: 3x3
stride-1 stem (32), 13 depthwise-separable blocks (64, 128/2, 128, 256/2, 256, 512/2, 5x512,
1024/2, 1024), global average pool. ``width_mult`` scales every width; ``stem_stride=2`` makes
the stem stride 2 (the ImageNet MobileNet v1 layout of the DKD ResNet50 -> MobileNetV1 pair).
Taps: the 13 blocks, output after their last ReLU.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_positive, init_cnn
from .registry import register_model


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (x t) -> BN-ReLU -> 3x3 depthwise(stride) -> BN-ReLU -> 1x1 project -> BN (+ x)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hid = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hid, 1, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(),
            nn.Conv2d(hid, hid, 3, stride=stride, padding=1, groups=hid, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(),
            nn.Conv2d(hid, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class CifarMobileNetV2(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; overall stride 16, H, W >= 8."""

    # t (expansion, None = the model's T), c (channels), n (blocks), s (first stride)
    SETTING = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
               (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]

    def __init__(self, num_classes: int, expansion: int = 6, width_mult: float = 0.5,
                 in_channels: int = 3) -> None:
        super().__init__()
        check_positive("width_mult", width_mult)
        c = int(32 * width_mult)
        if c < 1:
            raise ValueError(f"width_mult={width_mult} leaves a layer with no channels")
        self.conv1 = _conv_bn_relu(in_channels, c, 3, 2)
        self.blocks = nn.ModuleList()
        for t, ch, n, s in self.SETTING:
            out = max(1, int(ch * width_mult))
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, expansion if t is None else t))
                c = out
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(c, self.last_channel, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        init_cnn(self)
        self.tap_blocks = [k for k, m in self.named_modules() if isinstance(m, InvertedResidual)]
        self.head_name = "classifier.0"
        self.feature_dim = self.last_channel

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        x = self.conv2(x)
        return self.classifier(self.avgpool(x).flatten(1))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise(stride) -> BN-ReLU -> 1x1 pointwise -> BN-ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class CifarMobileNetV1(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; overall stride 16, H, W >= 8."""

    # (channels, stride)
    SETTING = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
               (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, num_classes: int, width_mult: float = 1.0, in_channels: int = 3, stem_stride: int = 1) -> None:
        super().__init__()
        check_positive("width_mult", width_mult)
        check_positive("stem_stride", stem_stride)
        c = max(1, int(32 * width_mult))
        self.conv1 = nn.Conv2d(in_channels, c, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        layers = []
        for ch, s in self.SETTING:
            out = max(1, int(ch * width_mult))
            layers.append(DepthwiseSeparable(c, out, s))
            c = out
        self.layers = nn.Sequential(*layers)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c, num_classes)
        init_cnn(self)
        self.tap_blocks = [f"layers.{i}" for i in range(len(layers))]
        self.head_name = "linear"
        self.feature_dim = c

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(self.avg_pool(x).flatten(1))


@register_model()
def mobilenetv2(num_classes: int, width_mult: float = 0.5, in_channels: int = 3) -> CifarMobileNetV2:
    """CIFAR MobileNetV2, expansion 6; default ``width_mult=0.5`` is the KD zoo's "mobile_half"."""
    return CifarMobileNetV2(num_classes, 6, width_mult, in_channels)


@register_model()
def mobilenet_v1(num_classes: int, width_mult: float = 1.0, in_channels: int = 3,
                 stem_stride: int = 1) -> CifarMobileNetV1:
    """CIFAR MobileNet v1 (SwitOKD's multi-network setting); ``stem_stride=2`` gives the ImageNet
    MobileNet v1 (stride-2 stem, overall stride 32: 7x7 final maps at 224 px)."""
    return CifarMobileNetV1(num_classes, width_mult, in_channels, stem_stride)
