"""Logit distillation losses: Hinton KD and decoupled KD (DKD).

Every function follows the library convention: **sum over classes, mean over the batch**,
computed in the input's dtype, finite for any finite input. The teacher logits are used as
given; call them under ``torch.no_grad()`` (the engine does) so no gradient reaches a teacher.

The arithmetic is that of the reference code described in ``specs/logit.md`` (mdistiller
``KD.py`` and ``DKD.py``), restated stably with ``log_softmax``/``logsumexp`` so that where the
reference overflows in float32 (the log of an underflowed probability) these stay finite, and
where the reference is finite they agree with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kd_loss", "dkd_loss", "kl_rows"]


def _check_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "expected student and teacher logits of the same shape [B, C], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def _check_temperature(temperature: float | Tensor) -> None:
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def kl_rows(log_p_target: Tensor, log_p_learner: Tensor) -> Tensor:
    """Per-row KL(p_target ‖ p_learner) from log-probabilities, summed over the last dim.

    Uses xlogy semantics: entries where the target probability is 0 contribute 0.
    Shapes: [B, C] → [B].
    """
    p = log_p_target.exp()
    return (p * (log_p_target - log_p_learner)).sum(dim=-1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton KD: ``T² · mean_i KL(softmax(t_i/T) ‖ softmax(s_i/T))``.

    Args:
        student_logits: [B, C].
        teacher_logits: [B, C] (no gradient expected).
        temperature: T > 0.

    Returns:
        0-d tensor: KL summed over classes, averaged over the batch, times T².
    """
    _check_pair(student_logits, teacher_logits)
    _check_temperature(temperature)
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=1)
    return kl_rows(log_pt, log_ps).mean() * (temperature**2)


def _target_mask(logits: Tensor, target: Tensor) -> Tensor:
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be [B] with B={logits.shape[0]}, got {tuple(target.shape)}")
    return F.one_hot(target.long(), logits.shape[1]).to(torch.bool)


def _binary_log_probs(scaled: Tensor, mask: Tensor) -> Tensor:
    """log [p_target, Σ_{c≠target} p_c] per row, stably. [B, C] → [B, 2]."""
    lse_all = torch.logsumexp(scaled, dim=1)
    log_target = (scaled.masked_fill(~mask, float("-inf"))).logsumexp(dim=1) - lse_all
    log_other = (scaled.masked_fill(mask, float("-inf"))).logsumexp(dim=1) - lse_all
    return torch.stack([log_target, log_other], dim=1)


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled KD: ``α·TCKD + β·NCKD`` (both already carry T², sum over bins, mean over batch).

    TCKD is the KL between the binary distributions [p_target, Σ_{c≠target} p_c] of teacher and
    student at temperature T. NCKD is the KL between the distributions over the C−1 non-target
    classes. The reference obtains the latter by subtracting 1000 from the scaled target logit;
    here the target class is removed exactly (identical wherever the reference is exact, and
    still exact when the scaled target logit exceeds the others by 1000 or more). With C = 2 the
    non-target distribution has one class and NCKD is 0.

    Args:
        student_logits, teacher_logits: [B, C].
        target: [B] int class indices.
        alpha, beta: weights of TCKD and NCKD.
        temperature: T > 0.

    Returns:
        0-d tensor.
    """
    _check_pair(student_logits, teacher_logits)
    _check_temperature(temperature)
    mask = _target_mask(student_logits, target)
    s = student_logits / temperature
    t = teacher_logits / temperature

    tckd = kl_rows(_binary_log_probs(t, mask), _binary_log_probs(s, mask)).mean()

    # Non-target distributions: log-softmax over the C-1 other classes; the target entry is
    # excluded from the sum (filled with 0 before the product so no inf-inf appears anywhere,
    # in the forward or the backward).
    log_pt_nt = F.log_softmax(t.masked_fill(mask, float("-inf")), dim=1).masked_fill(mask, 0.0)
    log_ps_nt = F.log_softmax(s.masked_fill(mask, float("-inf")), dim=1).masked_fill(mask, 0.0)
    p_t_nt = log_pt_nt.exp().masked_fill(mask, 0.0)
    nckd = (p_t_nt * (log_pt_nt - log_ps_nt)).sum(dim=1).mean()

    return (alpha * tckd + beta * nckd) * (temperature**2)
