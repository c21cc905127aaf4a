"""Feature-distillation losses: spatial attention maps, AFD, RTK key selection, FitNet hints.

Pure functions (tensors in, tensors out). Shapes: ``B`` batch, ``T`` teacher layers, ``S``
student layers, ``P`` positions (``H·W``) of a teacher layer.

* AFD (Ji et al., AAAI 2021; ``docs/methods/features.md``, verified against the authors' code): values are
  spatial attention maps, the distance of a (teacher, student) pair is the mean over the teacher's
  positions of the squared difference, and the loss is ``Σ_t mean_b Σ_s α_{b,t,s}·D_{b,t,s}``.
* RTK (``docs/methods/features.md``, a *reconstruction*: the paper body was not available): influence of
  each teacher key = mean of the top-k attention values it receives, a hard selection of the
  keys at or above a threshold, and the AFD loss restricted to the kept keys.
* FitNet hint: mean squared error between the regressed student feature and the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "spatial_attention",
    "attention_map_distances",
    "afd_loss",
    "rtk_influence",
    "select_keys",
    "rtk_loss",
    "hint_loss",
]


def _channel_energy(feat: Tensor) -> Tensor:
    """Channel mean of the squared feature ``[B, C, H, W]`` → ``[B, 1, H, W]``."""
    if feat.dim() != 4:
        raise ValueError(f"spatial attention maps need a [B, C, H, W] feature, got shape {tuple(feat.shape)}")
    return feat.pow(2).mean(1, keepdim=True)


def _finish_map(m: Tensor, size: tuple[int, int] | None, eps: float) -> Tensor:
    if size is not None and tuple(m.shape[-2:]) != tuple(size):
        m = F.adaptive_avg_pool2d(m, size)
    return F.normalize(m.flatten(1), dim=1, eps=eps)


def spatial_attention(feat: Tensor, size: tuple[int, int] | None = None, eps: float = 1e-12) -> Tensor:
    """Spatial attention map of a feature ``[B, C, H, W]`` → ``[B, P]``.

    The channel mean of the squared feature, adaptive-average-pooled to ``size`` (when given and
    different from ``(H, W)``), flattened over positions and L2-normalised over them
    (``x / max(‖x‖₂, eps)``, as ``F.normalize``).
    """
    return _finish_map(_channel_energy(feat), size, eps)


def attention_map_distances(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
    """AFD's pairwise distances ``D [B, T, S]`` between every teacher and student layer.

    ``D[b, t, s] = mean_p (v̂_{s→t}[b, p] − v_t[b, p])²`` where ``v_t`` is teacher layer t's spatial
    attention map and ``v̂_{s→t}`` student layer s's map pooled to teacher layer t's ``H×W``
    (:func:`spatial_attention`). Student maps are pooled once per distinct teacher size; the
    teacher layers of one size are handled together, the sum of squared differences computed
    directly (``torch.cdist`` without the matrix-product shortcut, squared), so equal maps give
    exactly 0.
    """
    if not student_feats or not teacher_feats:
        raise ValueError("attention_map_distances needs at least one student and one teacher feature")
    energy = [_channel_energy(f) for f in student_feats]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, ft in enumerate(teacher_feats):
        groups.setdefault((int(ft.shape[-2]), int(ft.shape[-1])), []).append(i)
    parts, order = [], []
    for size, idx in groups.items():
        vs = torch.stack([_finish_map(m, size, 1e-12) for m in energy], dim=1)  # [B, S, P]
        vt = torch.stack([spatial_attention(teacher_feats[i]) for i in idx], dim=1)  # [B, Tg, P]
        dist = torch.cdist(vt, vs, compute_mode="donot_use_mm_for_euclid_dist")  # [B, Tg, S]
        parts.append(dist.pow(2) / vs.shape[-1])
        order += idx
    d = torch.cat(parts, dim=1)
    if order != sorted(order):
        d = d[:, [order.index(t) for t in range(len(order))]]
    return d


def afd_loss(attention: Tensor, distances: Tensor) -> Tensor:
    """``Σ_t mean_b Σ_s α[b, t, s]·D[b, t, s]`` for ``attention``, ``distances`` of shape ``[B, T, S]``.

    (The roles of the two last axes only matter to the caller: the value is
    ``mean_b Σ_{i,j} α·D``.)
    """
    if attention.shape != distances.shape or attention.dim() != 3:
        raise ValueError(f"afd_loss: attention {tuple(attention.shape)} and distances {tuple(distances.shape)} must be "
                         f"equal [B, T, S] shapes")
    return (attention * distances).sum(2).mean(0).sum()


def rtk_influence(attention_st: Tensor, k: int = 2, scope: Literal["batch", "sample"] = "batch") -> Tensor:
    """Influence of each teacher key: the mean of the ``k`` largest attention values it receives.

    Args:
        attention_st: attention laid out ``[B, S, T]`` (student axis 1, teacher axis 2), whatever
            side produced the queries.
        k: how many of the largest values to average; ``min(k, S)`` is used.
        scope: ``"batch"`` — average the attention over the batch first, one influence per key
            ``[T]``; ``"sample"`` — per sample ``[B, T]``.
    """
    if attention_st.dim() != 3:
        raise ValueError(f"rtk_influence expects [B, S, T] attention, got {tuple(attention_st.shape)}")
    if k < 1:
        raise ValueError(f"rtk_influence: k must be >= 1, got {k}")
    kk = min(int(k), attention_st.shape[1])
    if scope == "batch":
        return attention_st.mean(0).topk(kk, dim=0).values.mean(0)
    if scope == "sample":
        return attention_st.topk(kk, dim=1).values.mean(1)
    raise ValueError(f"rtk_influence: scope must be 'batch' or 'sample', got {scope!r}")


def select_keys(
    influence: Tensor,
    rule: Literal["fixed", "relative", "top_m"] = "fixed",
    threshold: float | None = None,
    top_m: int = 1,
    relative_to: Literal["mean", "median"] = "mean",
) -> Tensor:
    """Which teacher keys are representative: a boolean mask shaped like ``influence [..., T]``.

    A key is kept when its influence is **at or above** (``>=``) the rule's threshold:

    * ``fixed``: ``threshold`` (default ``1/T``, the uniform-attention level);
    * ``relative``: ``threshold × statistic`` of the row's influences (default multiplier 1),
      the statistic being the mean or the median (``torch.median``: the lower middle value for an
      even count);
    * ``top_m``: the ``m``-th largest influence of the row (ties at the boundary are all kept).

    When a row keeps nothing, its largest-influence key (the first on ties) is kept instead.
    Computed without gradient; the mask is detached.
    """
    if influence.dim() < 1 or influence.shape[-1] < 1:
        raise ValueError(f"select_keys: influence must be [..., T] with T >= 1, got {tuple(influence.shape)}")
    n = influence.shape[-1]
    with torch.no_grad():
        infl = influence.detach()
        if rule == "fixed":
            thr: Tensor | float = 1.0 / n if threshold is None else float(threshold)  # a float: no host-to-device copy
        elif rule == "relative":
            factor = 1.0 if threshold is None else float(threshold)
            if relative_to == "mean":
                stat = infl.mean(-1, keepdim=True)
            elif relative_to == "median":
                stat = infl.median(-1, keepdim=True).values
            else:
                raise ValueError(f"select_keys: relative_to must be 'mean' or 'median', got {relative_to!r}")
            thr = factor * stat
        elif rule == "top_m":
            if not 1 <= int(top_m) <= n:
                raise ValueError(f"select_keys: top_m must be in [1, {n}] (the number of teacher keys), got {top_m}")
            thr = infl.topk(int(top_m), dim=-1).values[..., -1:]
        else:
            raise ValueError(f"select_keys: rule must be 'fixed', 'relative' or 'top_m', got {rule!r}")
        keep = infl >= thr
        best = torch.zeros_like(keep).scatter_(-1, infl.argmax(-1, keepdim=True), True)
        empty = ~keep.any(-1, keepdim=True)
        return keep | (empty & best)


def rtk_loss(
    attention: Tensor,
    distances: Tensor,
    keep: Tensor,
    *,
    teacher_axis: Literal[1, 2] = 2,
    renormalise: bool = False,
) -> Tensor:
    """AFD's attention-weighted distance restricted to the kept teacher keys.

    Args:
        attention: ``[B, Q, K]`` attention weights, softmax over the last axis.
        distances: ``[B, Q, K]`` distances aligned with ``attention``.
        keep: boolean mask over the teacher axis: ``[T]`` (one mask for the batch) or ``[B, T]``.
        teacher_axis: which of axes 1, 2 indexes teacher layers (2 when students query teacher
            keys, 1 when teachers query).
        renormalise: divide the kept weights by their sum over the softmax (last) axis, so that
            each query's kept weights sum to 1 (rows whose weights are all dropped stay 0).

    Returns ``mean_b Σ_{q,k} keep·Ã·D`` — with every key kept and no renormalisation, exactly
    :func:`afd_loss`.
    """
    if teacher_axis not in (1, 2):
        raise ValueError(f"rtk_loss: teacher_axis must be 1 or 2, got {teacher_axis}")
    m = keep.to(attention.dtype)
    if m.dim() == 1:
        m = m.view(1, -1, 1) if teacher_axis == 1 else m.view(1, 1, -1)
    elif m.dim() == 2:
        m = m.unsqueeze(2) if teacher_axis == 1 else m.unsqueeze(1)
    else:
        raise ValueError(f"rtk_loss: keep must be [T] or [B, T], got {tuple(keep.shape)}")
    w = attention * m
    if renormalise:
        total = w.sum(-1, keepdim=True)
        w = torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))
    return afd_loss(w, distances)


def hint_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """FitNet hint: ``mean((student − teacher)²)`` over every element (as ``F.mse_loss``).

    The usual FitNet convention (RepDistiller / mdistiller ``HintLoss``): a mean over batch,
    channels and positions, paired with a large weight (100). Shapes must match.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"hint_loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ")
    return F.mse_loss(student, teacher)
