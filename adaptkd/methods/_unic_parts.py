"""Building blocks of the ``unic`` method: the ladder of projectors, token views of any network's
features, and batch statistics gathered over every rank.

Kept apart from ``unic.py`` so that the method file reads like the spec; see ``docs/methods/unic.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptkd.losses.tokens import STD_EPS

__all__ = ["Ladder", "tokens_of", "resize_tokens", "token_grid", "gathered_moments"]


class Ladder(nn.Module):
    """Ladder of projectors for one token type (class or patch) and K teachers.

    For teacher t and tapped student block k there is one projector
    ``P_{t,k}(x) = W2_{t,k} · GELU(W1_{t,k} · x + b1_{t,k}) + b2_{t,k}`` (exact, erf GELU), and the
    ladder's output for teacher t is the plain sum ``Σ_k P_{t,k}(x_k)`` (``docs/methods/unic.md``).

    Stored fused, with the same arithmetic: block k's first layers of all K teachers are one
    ``Linear(in_k, K·hidden_k)``; teacher t's second layers over all blocks are one matrix
    ``[out_t, Σ_k hidden_k]`` (the sum over blocks *is* that matmul over the concatenated hidden
    units) plus one bias per block (summed, so each keeps its own parameter as in the reference).
    Each projector can be read back separately with :meth:`projector`.

    Args:
        in_dims: input width of each tapped block (in ladder order).
        hidden_dims: hidden width of each block's projectors.
        out_dims: output width per teacher.
        init_std: truncated-normal std of every weight (biases start at zero).
    """

    def __init__(self, in_dims: Sequence[int], hidden_dims: Sequence[int], out_dims: Sequence[int],
                 init_std: float = 0.02) -> None:
        super().__init__()
        if not in_dims or len(in_dims) != len(hidden_dims) or not out_dims:
            raise ValueError(f"Ladder: need one hidden width per block and at least one teacher, got "
                             f"in {list(in_dims)}, hidden {list(hidden_dims)}, out {list(out_dims)}")
        self.in_dims = [int(d) for d in in_dims]
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.out_dims = [int(d) for d in out_dims]
        k = len(self.out_dims)
        self.fc1 = nn.ModuleList(nn.Linear(c, k * h) for c, h in zip(self.in_dims, self.hidden_dims))
        total = sum(self.hidden_dims)
        self.fc2_weight = nn.ParameterList(nn.Parameter(torch.empty(d, total)) for d in self.out_dims)
        self.fc2_bias = nn.ParameterList(nn.Parameter(torch.zeros(len(self.in_dims), d)) for d in self.out_dims)
        for fc in self.fc1:
            lin = cast(nn.Linear, fc)
            nn.init.trunc_normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)
        for w in self.fc2_weight:
            nn.init.trunc_normal_(w, std=init_std)

    @property
    def num_teachers(self) -> int:
        return len(self.out_dims)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """``xs[k]``: [..., in_k] features of block k -> one [..., out_t] tensor per teacher."""
        if len(xs) != len(self.fc1):
            raise ValueError(f"Ladder: expected {len(self.fc1)} block inputs, got {len(xs)}")
        k = self.num_teachers
        lead = xs[0].shape[:-1]
        # Teacher-major hidden units [K, M, Σh] (M = rows): one contiguous slab per teacher, so the
        # per-teacher second layers read (and backpropagate into) contiguous memory.
        hidden = [fc(x.reshape(-1, x.shape[-1])).view(-1, k, h).transpose(0, 1)
                  for fc, x, h in zip(self.fc1, xs, self.hidden_dims)]
        act = F.gelu(torch.cat(hidden, -1) if len(hidden) > 1 else hidden[0].contiguous())
        return [F.linear(a, self.fc2_weight[t], self.fc2_bias[t].sum(0)).view(*lead, -1)
                for t, a in enumerate(act.unbind(0))]

    def projector(self, teacher: int, block: int) -> nn.Sequential:
        """A detached copy of projector P_{teacher, block} as ``Linear → GELU → Linear``."""
        c, h, d = self.in_dims[block], self.hidden_dims[block], self.out_dims[teacher]
        off = sum(self.hidden_dims[:block])
        src = cast(nn.Linear, self.fc1[block])
        dtype, device = src.weight.dtype, src.weight.device
        fc1, fc2 = nn.Linear(c, h, dtype=dtype, device=device), nn.Linear(h, d, dtype=dtype, device=device)
        with torch.no_grad():
            fc1.weight.copy_(src.weight[teacher * h:(teacher + 1) * h])
            fc1.bias.copy_(src.bias[teacher * h:(teacher + 1) * h])
            fc2.weight.copy_(self.fc2_weight[teacher][:, off:off + h])
            fc2.bias.copy_(self.fc2_bias[teacher][block])
        return nn.Sequential(fc1, nn.GELU(), fc2)


def resize_tokens(patch: Tensor, grid: tuple[int, int], target: tuple[int, int]) -> Tensor:
    """Patch tokens [B, h·w, D] on ``grid`` (row-major) -> [B, H·W, D] on ``target`` (adaptive average pool)."""
    if tuple(grid) == tuple(target):
        return patch
    b, n, d = patch.shape
    m = patch.transpose(1, 2).reshape(b, d, grid[0], grid[1])
    return F.adaptive_avg_pool2d(m, target).flatten(2).transpose(1, 2)


def tokens_of(feat: Tensor, grid: tuple[int, int] | None, target: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
    """(class token [B, D], patch tokens [B, N, D]) of one tapped feature.

    * ViT tokens [B, 1 + N, D]: index 0 is the class token, the rest the patch tokens on ``grid``.
    * CNN maps [B, C, H, W]: the spatial mean is the class token, the positions the patch tokens.

    The patch tokens are resized to ``target`` (adaptive average pooling over the grid) when it
    differs (``target=None`` keeps them as they are).
    """
    if feat.dim() == 3:
        cls, patch = feat[:, 0], feat[:, 1:]
        if target is not None:
            if grid is None:
                raise ValueError("tokens_of: the patch grid of token features is needed to resize them")
            patch = resize_tokens(patch, grid, target)
        return cls, patch
    if feat.dim() == 4:
        cls = feat.mean((2, 3))
        if target is not None and tuple(feat.shape[-2:]) != tuple(target):
            feat = F.adaptive_avg_pool2d(feat, target)
        return cls, feat.flatten(2).transpose(1, 2)
    raise ValueError(f"tokens_of: expected tokens [B, 1+N, D] or a feature map [B, C, H, W], got {tuple(feat.shape)}")


def token_grid(net: nn.Module, num_patches: int) -> tuple[int, int]:
    """The patch grid of a token network: its ``patch_grid`` or, failing that, a square grid."""
    grid = getattr(net, "patch_grid", None)
    if grid is not None:
        grid = (int(grid[0]), int(grid[1]))
        if grid[0] * grid[1] == num_patches:
            return grid
    side = int(math.isqrt(num_patches))
    if side * side != num_patches:
        raise ValueError(f"cannot tell the patch grid of {num_patches} tokens (no `patch_grid` "
                         f"attribute, not a square)")
    return (side, side)


def gathered_moments(x: Tensor, all_reduce: Callable[[Tensor], object] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean and unbiased std (+ 1e-6) of ``x`` [..., D] over every dim but the last,
    over the batches of *all* ranks, and the number of rows they cover.

    Equal to the statistics of the concatenated global batch (what the reference computes after
    ``concat_all_gather``), computed in two exact passes with two small in-place sum-reductions:
    the global count and sum (-> mean), then the global sum of squared deviations (-> variance).
    ``all_reduce``: an in-place SUM over the ranks (the method's ``Communicator.sum``); None (one
    process) returns the local statistics.

    Returns:
        (mean, std, count) — mean/std shaped [1, …, 1, D], count a 0-d tensor (float).
    """
    reduce = all_reduce
    dims = tuple(range(x.dim() - 1))
    rows = x.numel() // max(x.shape[-1], 1)
    if reduce is None:
        mean = x.mean(dims, keepdim=True)
        std = x.std(dims, keepdim=True) + STD_EPS
        return mean, std, torch.tensor(float(rows), device=x.device)
    first = torch.cat([x.sum(dims).reshape(-1), x.new_tensor([float(rows)])])
    reduce(first)
    count = first[-1]
    mean = (first[:-1] / count).reshape((1,) * len(dims) + (x.shape[-1],))
    second = (x - mean).pow(2).sum(dims).reshape(-1).contiguous()
    reduce(second)
    std = (second / (count - 1)).sqrt().reshape(mean.shape) + STD_EPS
    return mean, std, count
