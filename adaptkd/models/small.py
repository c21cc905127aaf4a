"""Small CNNs for quick CPU work (8x8 digits, 16-32 px synthetic RGB).

Stages of ``convs`` x (3x3 conv - BN - ReLU); every stage after the first starts with a stride-2
conv; global average pool; ``Linear`` head ``fc``. Taps: each stage ``stages.K``, output after its
last ReLU. On 8x8 input the three stages run at 8x8, 4x4, 2x2.

* ``cnn_tiny``: widths 8/16/32, one conv per stage.
* ``cnn_small``: widths 16/32/64, two convs per stage.
* ``cnn_medium``: widths 32/64/128, two convs per stage.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._common import init_cnn
from .registry import register_model


class SmallCNN(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; any H, W >= 1."""

    def __init__(self, widths: Sequence[int], convs: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        stages = []
        c = in_channels
        for i, w in enumerate(widths):
            layers: list[nn.Module] = []
            for j in range(convs):
                stride = 2 if (i > 0 and j == 0) else 1
                layers += [nn.Conv2d(c, w, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        init_cnn(self)
        self.tap_blocks = [f"stages.{i}" for i in range(len(widths))]
        self.head_name = "fc"
        self.feature_dim = c

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(x)).flatten(1))


@register_model()
def cnn_tiny(num_classes: int, in_channels: int = 3) -> SmallCNN:
    return SmallCNN((8, 16, 32), 1, num_classes, in_channels)


@register_model()
def cnn_small(num_classes: int, in_channels: int = 3) -> SmallCNN:
    return SmallCNN((16, 32, 64), 2, num_classes, in_channels)


@register_model()
def cnn_medium(num_classes: int, in_channels: int = 3) -> SmallCNN:
    return SmallCNN((32, 64, 128), 2, num_classes, in_channels)
