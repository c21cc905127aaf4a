"""CIFAR VGG with BatchNorm as in the CRD / mdistiller KD zoo.

Five conv stages ``block0..block4`` (3x3 convs with bias, each followed by BN + ReLU), 2x2
max-pool between stages 0-1, 1-2, 2-3 (and 3-4 only for inputs >= 64 px, as the reference
does for Tiny-ImageNet), global average pool, one ``Linear(512, num_classes)`` named ``classifier``.

* ``vgg8``: one conv per stage (64, 128, 256, 512, 512).
* ``vgg13``: two convs per stage.

Taps: the five stages, each output after its last ReLU (the reference's "feats"; the reference
stage module stops at the BN, which is its "preact" feature).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._common import init_cnn
from .registry import register_model

_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def _stage(widths: Sequence[int], cin: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        cin = w
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes]; H, W >= 8."""

    def __init__(self, cfg: Sequence[Sequence[int]], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        cins = [in_channels] + [c[-1] for c in cfg[:-1]]
        self.block0 = _stage(cfg[0], cins[0])
        self.block1 = _stage(cfg[1], cins[1])
        self.block2 = _stage(cfg[2], cins[2])
        self.block3 = _stage(cfg[3], cins[3])
        self.block4 = _stage(cfg[4], cins[4])
        self.pool0 = nn.MaxPool2d(2, 2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cfg[4][-1]
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        init_cnn(self)
        self.tap_blocks = ["block0", "block1", "block2", "block3", "block4"]
        self.head_name = "classifier"

    def forward(self, x: Tensor) -> Tensor:
        big = x.shape[-2] >= 64
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        if big:
            x = self.pool3(x)
        x = self.block4(x)
        return self.classifier(self.pool4(x).flatten(1))


@register_model()
def vgg8(num_classes: int, in_channels: int = 3) -> CifarVGG:
    return CifarVGG(_CFG["vgg8"], num_classes, in_channels)


@register_model()
def vgg13(num_classes: int, in_channels: int = 3) -> CifarVGG:
    return CifarVGG(_CFG["vgg13"], num_classes, in_channels)
