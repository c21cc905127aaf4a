"""UNIC multi-teacher distillation: token loss, teacher-drop weights, teacher standardisation.

Pure functions (``docs/methods/unic.md``; the arithmetic of the authors' reference code):

* :func:`unic_token_loss` — per image, the mean of the class-token loss and the mean patch-token
  loss, where one token's loss is ``0.5·(1 − cos) + 0.5·smoothL1_β=1`` (mean over channels).
* :func:`teacher_drop_weights` — detached weights [K, B]: each image's highest-loss teacher is
  kept, every other teacher is dropped when its draw ``u < p``; the keep matrix divided by its
  total (``global``, the reference) or per image (``per_image``).
* :func:`standardize` — EMA standardisation of teacher features with the reference's order:
  normalise with the state *before* the update, then move the state towards the batch
  statistics with weight ``momentum`` on the new batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "token_loss",
    "unic_pair_loss",
    "unic_token_loss",
    "teacher_drop_weights",
    "standardize",
    "STD_EPS",
]

#: eps of the reference standardiser; it enters twice (stored in the std, and again when dividing).
STD_EPS = 1e-6


def token_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Per-token loss ``0.5·(1 − cos(s, t)) + 0.5·mean_c smoothL1_β=1(s − t)``.

    Shapes ``[..., D]`` -> ``[...]``. The cosine is over the last (channel) dim, eps 1e-8.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"token_loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    cos = F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)
    sl1 = F.smooth_l1_loss(student, teacher, reduction="none", beta=1.0).mean(-1)
    return 0.5 * (1.0 - cos) + 0.5 * sl1


def unic_pair_loss(student_cls: Tensor, student_patch: Tensor, teacher_cls: Tensor, teacher_patch: Tensor) -> Tensor:
    """Per-image loss [B] from separate class tokens [B, Dc] and patch tokens [B, N, Dp].

    ``mean(L_cls, mean_n L_patch_n)``: the class and patch tokens may have different widths
    (a CNN teacher's pooled feature and its spatial positions).
    """
    if student_cls.dim() != 2 or student_patch.dim() != 3:
        raise ValueError(
            f"unic_pair_loss: expected class tokens [B, D] and patch tokens [B, N, D], got "
            f"{tuple(student_cls.shape)} and {tuple(student_patch.shape)}"
        )
    l_cls = token_loss(student_cls, teacher_cls)
    l_patch = token_loss(student_patch, teacher_patch).mean(1)
    return 0.5 * (l_cls + l_patch)


def unic_token_loss(student_tokens: Tensor, teacher_tokens: Tensor) -> Tensor:
    """UNIC distillation loss per image.

    Args:
        student_tokens: [B, 1 + N, D], index 0 the class token, then N ≥ 1 patch tokens.
        teacher_tokens: the same shape (already standardised, as the method does).

    Returns:
        [B]: ``0.5·L_cls + 0.5·mean_n L_patch_n`` with the per-token loss of :func:`token_loss`.
    """
    if student_tokens.dim() != 3 or student_tokens.shape[1] < 2:
        raise ValueError(f"unic_token_loss: expected tokens [B, 1 + N, D] with N >= 1, got "
                         f"{tuple(student_tokens.shape)}")
    if student_tokens.shape != teacher_tokens.shape:
        raise ValueError(
            f"unic_token_loss: student {tuple(student_tokens.shape)} and teacher {tuple(teacher_tokens.shape)} differ"
        )
    return unic_pair_loss(student_tokens[:, 0], student_tokens[:, 1:], teacher_tokens[:, 0], teacher_tokens[:, 1:])


def teacher_drop_weights(
    losses: Tensor,
    draws: Tensor,
    p: float = 0.5,
    normalize: Literal["global", "per_image"] = "global",
) -> Tensor:
    """Teacher-dropping weights (detached) for per-teacher, per-image losses.

    Args:
        losses: [K, B] loss of teacher k on image b (only compared; no gradient flows).
        draws: [K, B] uniform draws in [0, 1). The draw of an image's protected teacher is unused.
        p: drop probability; a non-protected teacher is dropped when its draw ``u < p`` (strict:
            ``u == p`` keeps it). ``p = 0`` keeps everything, ``p = 1`` keeps only the maximum.
        normalize: ``"global"`` (reference): keep / Σ_{k,b} keep, so an image that keeps more
            teachers weighs more; ``"per_image"``: keep / (B · Σ_k keep), every image weighs 1/B.

    Returns:
        [K, B] weights in the losses' dtype, summing to 1, with no autograd history. On ties the
        first teacher (lowest index) with the highest loss is protected.
    """
    if losses.dim() != 2:
        raise ValueError(f"teacher_drop_weights: losses must be [K, B], got {tuple(losses.shape)}")
    if draws.shape != losses.shape:
        raise ValueError(f"teacher_drop_weights: draws {tuple(draws.shape)} must match losses {tuple(losses.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"teacher_drop_weights: p must be in [0, 1], got {p}")
    if normalize not in ("global", "per_image"):
        raise ValueError(f"teacher_drop_weights: normalize must be 'global' or 'per_image', got {normalize!r}")
    with torch.no_grad():
        loss = losses.detach()
        k, b = loss.shape
        protected = torch.arange(k, device=loss.device)[:, None] == loss.argmax(0)[None, :]
        keep = (protected | (draws.detach() >= p)).to(loss.dtype)
        if normalize == "global":
            return keep / keep.sum()
        return keep / (keep.sum(0, keepdim=True) * b)


def standardize(
    x: Tensor,
    mean: Tensor,
    std: Tensor,
    momentum: float | Tensor,
    *,
    stats: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Standardise ``x`` with running statistics, and update them (the reference's order).

    Args:
        x: [..., D]; statistics are over every dim but the last.
        mean, std: running state shaped like ``x`` with size-1 leading dims (e.g. [1, D] for
            class tokens [B, D], [1, 1, D] for patch tokens [B, N, D]). Initial state: 0 and 1.
        momentum: weight ``m`` on the new batch (1 = replace, 0 = leave the state unchanged).
        stats: optional ``(batch_mean, batch_std)`` computed elsewhere (e.g. over every rank of
            a distributed batch); ``batch_std`` must already include the ``+ 1e-6``.

    Returns:
        ``(y, new_mean, new_std)`` with
        ``y = (x − mean) / (std + 1e-6)`` (state *before* the update),
        ``batch_std = std_unbiased(x) + 1e-6``,
        ``new_mean = (1 − m)·mean + m·batch_mean``, ``new_std = (1 − m)·std + m·batch_std``.
    """
    if x.dim() < 2:
        raise ValueError(f"standardize: x must be [..., D] with at least 2 dims, got {tuple(x.shape)}")
    want = (1,) * (x.dim() - 1) + (x.shape[-1],)
    if tuple(mean.shape) != want or tuple(std.shape) != want:
        raise ValueError(
            f"standardize: mean {tuple(mean.shape)} and std {tuple(std.shape)} must be {want} for x {tuple(x.shape)}"
        )
    y = (x - mean) / (std + STD_EPS)
    if stats is None:
        dims = tuple(range(x.dim() - 1))
        batch_mean = x.mean(dims, keepdim=True)
        batch_std = x.std(dims, keepdim=True) + STD_EPS
    else:
        batch_mean, batch_std = stats
    new_mean = (1.0 - momentum) * mean + momentum * batch_mean
    new_std = (1.0 - momentum) * std + momentum * batch_std
    return y, new_mean, new_std
