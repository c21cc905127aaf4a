"""Small Vision Transformers for 32x32 inputs (patch 4 -> 8x8 = 64 patch tokens).

Pre-norm blocks (x + attn(LN(x)), x + mlp(LN(x)), MLP ratio 4, GELU), a class token and a
learned position embedding (class token included), a final LayerNorm, and a linear head on the
class token.

* ``vit_tiny``: dim 192, 12 blocks, 3 heads.  * ``vit_small``: dim 384, 12 blocks, 6 heads.

Builder kwargs: ``img_size`` (int or (h, w), default 32), ``patch_size`` (4), ``depth`` (12),
``drop_path`` (max stochastic-depth rate, linear over blocks; 0), ``in_channels`` (3).
The input must be exactly ``img_size``. Taps: every block ``blocks.K`` -> tokens [B, 1 + N, D]
(index 0 the class token, then the N = h*w patch tokens in row-major order over ``patch_grid``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_model


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with prob ``p`` and scale the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head self-attention, [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, d_head]
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block, tokens [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    h, w = v
    return (int(h), int(w))


class VisionTransformer(nn.Module):
    """[B, in_channels, H, W] (H, W == img_size) -> logits [B, num_classes]."""

    def __init__(self, num_classes: int, embed_dim: int, depth: int, num_heads: int,
                 img_size: int | tuple[int, int] = 32, patch_size: int = 4, in_channels: int = 3,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        if patch_size < 1 or any(s % patch_size or s < patch_size for s in self.img_size):
            raise ValueError(f"img_size {self.img_size} must be a positive multiple of patch_size {patch_size}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self._grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        n = self._grid[0] * self._grid[1]
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, embed_dim))
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()
        self.tap_blocks = [f"blocks.{i}" for i in range(depth)]
        self.head_name = "head"
        self.feature_dim = embed_dim

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(h, w) of the patch-token grid; tokens 1: of a tap reshape to [B, h, w, D]."""
        return self._grid

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"input is {tuple(x.shape[-2:])} px but this ViT was built for img_size={self.img_size}; "
                "build it with img_size=... to match"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


@register_model()
def vit_tiny(num_classes: int, img_size: int | tuple[int, int] = 32, patch_size: int = 4,
             depth: int = 12, drop_path: float = 0.0, in_channels: int = 3) -> VisionTransformer:
    return VisionTransformer(num_classes, 192, depth, 3, img_size, patch_size, in_channels,
                             drop_path=drop_path)


@register_model()
def vit_small(num_classes: int, img_size: int | tuple[int, int] = 32, patch_size: int = 4,
              depth: int = 12, drop_path: float = 0.0, in_channels: int = 3) -> VisionTransformer:
    return VisionTransformer(num_classes, 384, depth, 6, img_size, patch_size, in_channels,
                             drop_path=drop_path)
