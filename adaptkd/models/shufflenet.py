"""ShuffleNets for 32x32 inputs as in the CRD / mdistiller KD zoo.

Both use a 1x1 stride-1 stem to 24 channels (no max-pool) and three stride-2 stages.

``shufflenetv1`` (ShuffleV1): groups 3, stage widths 240/480/960, [4, 8, 4] bottlenecks; the first
block of a stage concatenates a 3x3 avg-pooled shortcut, the others add the identity; the first
block of the network uses an ungrouped 1x1 input conv (its input has only 24 channels).
Taps: the 16 bottlenecks, output after the final ReLU.

``shufflenetv2`` (ShuffleV2, ``net_size=1``): stages 116/232/464 then a 1x1 conv to 1024; each stage
is one down-sampling block followed by 3 / 7 / 3 split-transform-concat blocks; channel shuffle
(groups 2) ends every block. Taps: every block (4 + 8 + 4 = 16), output after the shuffle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import init_cnn
from .registry import register_model


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """[N, C, H, W] -> [N, C, H, W] with channels reordered (g, C/g) -> (C/g, g)."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    """Grouped 1x1 -> shuffle -> 3x3 depthwise(stride) -> grouped 1x1; add or (stride 2) concat shortcut; ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = out_planes // 4
        self.stride = stride
        self.g1 = first_groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride == 2:
            self.shortcut = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        out = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(out)


class CifarShuffleNetV1(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; overall stride 8, H, W >= 8."""

    def __init__(self, num_classes: int, out_planes=(240, 480, 960), num_blocks=(4, 8, 4),
                 groups: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups, first=True)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_planes[2], num_classes)
        init_cnn(self)
        self.tap_blocks = [k for k, m in self.named_modules() if isinstance(m, ShuffleV1Block)]
        self.head_name = "linear"
        self.feature_dim = out_planes[2]

    def _make_layer(self, out_planes: int, n: int, groups: int, first: bool = False) -> nn.Sequential:
        layers = []
        for i in range(n):
            stride = 2 if i == 0 else 1
            cat = self.in_planes if i == 0 else 0  # the concatenated shortcut supplies these channels
            g1 = 1 if (first and i == 0) else groups
            layers.append(ShuffleV1Block(self.in_planes, out_planes - cat, stride, groups, g1))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.avgpool(x).flatten(1))


class ShuffleV2Block(nn.Module):
    """Split channels in half; right half: 1x1-BN-ReLU, 3x3 dw-BN, 1x1-BN-ReLU; concat; shuffle(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels // 2
        self.split = c
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2Down(nn.Module):
    """Stride-2 block: left 3x3 dw(s2)-BN, 1x1-BN-ReLU; right 1x1-BN-ReLU, 3x3 dw(s2)-BN, 1x1-BN-ReLU; concat;
    shuffle(2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.conv1 = nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


_V2_SIZES = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


class CifarShuffleNetV2(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; overall stride 8, H, W >= 8."""

    def __init__(self, num_classes: int, net_size: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if float(net_size) not in _V2_SIZES:
            raise ValueError(f"shufflenetv2 net_size must be one of {sorted(_V2_SIZES)}, got {net_size!r}")
        widths, blocks = _V2_SIZES[float(net_size)]
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        stages = []
        for w, n in zip(widths[:3], blocks):
            stages.append(nn.Sequential(ShuffleV2Down(cin, w), *[ShuffleV2Block(w) for _ in range(n)]))
            cin = w
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(cin, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)
        init_cnn(self)
        self.tap_blocks = [k for k, m in self.named_modules()
                           if isinstance(m, (ShuffleV2Block, ShuffleV2Down))]
        self.head_name = "linear"
        self.feature_dim = widths[3]

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(self.avgpool(x).flatten(1))


@register_model()
def shufflenetv1(num_classes: int, in_channels: int = 3) -> CifarShuffleNetV1:
    return CifarShuffleNetV1(num_classes, in_channels=in_channels)


@register_model()
def shufflenetv2(num_classes: int, net_size: float = 1.0, in_channels: int = 3) -> CifarShuffleNetV2:
    return CifarShuffleNetV2(num_classes, net_size, in_channels)
