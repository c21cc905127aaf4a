"""Online distillation: the SwitOKD switching quantities and the KL to a detached peer.

Arithmetic of the authors' reference code (``docs/methods/online.md``). For one mini-batch of
teacher logits ``z_t``, student logits ``z_s`` [B, C] and labels ``y`` [B], with
``p = softmax(z / τ)`` and ``Y`` the one-hot labels:

- label distances ``t = mean_i Σ_c |p_t − Y|`` and ``s = mean_i Σ_c |p_s − Y|``;
- distillation gap ``G = mean_i Σ_c |p_s − p_t|``;
- adaptive coefficient ``ε = exp(−t / (t + s))`` and threshold ``δ = s − ε·t``;
- expert mode ⇔ ``G > δ`` and ``t < s`` (both strict); otherwise learning mode.

Everything is computed on detached logits: no gradient flows through the decision. The
reference uses τ = 1 everywhere (its label-distance helper takes no temperature); with τ ≠ 1
adaptkd applies τ to the label distances, the gap and the KL alike, as the paper's notation
``p^τ`` writes them (a variant the reference code has no counterpart for).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptkd.losses.logits import kl_rows

__all__ = [
    "SwitOKDDecision",
    "label_distance",
    "distillation_gap",
    "switokd_threshold",
    "switokd_decision",
    "switokd_mode",
    "online_kl_loss",
]


class SwitOKDDecision(NamedTuple):
    """One mini-batch's SwitOKD decision; every field is a detached 0-d tensor.

    Attributes:
        gap: G, batch mean of ‖p_s − p_t‖₁.
        teacher_distance: t, batch mean of ‖p_t − y‖₁.
        student_distance: s, batch mean of ‖p_s − y‖₁.
        epsilon: ε = exp(−t / (t + s)).
        threshold: δ = s − ε·t.
        expert: bool, ``G > δ and t < s`` (the teacher pauses).
    """

    gap: Tensor
    teacher_distance: Tensor
    student_distance: Tensor
    epsilon: Tensor
    threshold: Tensor
    expert: Tensor


def _check(logits: Tensor, temperature: float) -> None:
    if logits.dim() != 2:
        raise ValueError(f"expected logits of shape [B, C], got {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_pair(a: Tensor, b: Tensor, names: str, temperature: float) -> None:
    """``a`` as :func:`_check`, and ``b`` of the same shape (``names``: "teacher and student", ...)."""
    _check(a, temperature)
    if a.shape != b.shape:
        raise ValueError(f"expected {names} logits of the same shape [B, C], got {tuple(a.shape)} and {tuple(b.shape)}")


def label_distance(logits: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    """Batch mean of the L1 distance between ``softmax(logits / τ)`` and the one-hot labels.

    Shapes: logits [B, C], target int64 [B] → 0-d tensor (detached), in [0, 2).
    """
    _check(logits, temperature)
    z = logits.detach()
    p = F.softmax(z / temperature, dim=1)
    onehot = F.one_hot(target, z.shape[1]).to(p.dtype)
    return (p - onehot).abs().sum(dim=1).mean()


def distillation_gap(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """G: batch mean of ‖softmax(z_s/τ) − softmax(z_t/τ)‖₁ (detached), in [0, 2]."""
    _check_pair(teacher_logits, student_logits, "teacher and student", temperature)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    p_s = F.softmax(student_logits.detach() / temperature, dim=1)
    return (p_s - p_t).abs().sum(dim=1).mean()


def switokd_threshold(teacher_distance: Tensor, student_distance: Tensor) -> tuple[Tensor, Tensor]:
    """(ε, δ) from the label distances: ε = exp(−t/(t+s)), δ = s − ε·t.

    Where t + s = 0 (both networks exactly one-hot on every sample) the reference divides 0/0
    and gets ε = NaN; adaptkd uses ε = 1 there. The decision is the same either way (learning,
    since t < s fails).
    """
    t, s = teacher_distance.detach(), student_distance.detach()
    denom = t + s
    ratio = torch.where(denom > 0, t / denom, torch.zeros_like(t))
    eps = torch.exp(-ratio)
    return eps, s - eps * t


def switokd_decision(teacher_logits: Tensor, student_logits: Tensor, target: Tensor,
                     temperature: float = 1.0) -> SwitOKDDecision:
    """The SwitOKD mode decision of one teacher–student pair on one mini-batch.

    Args:
        teacher_logits, student_logits: [B, C] (detached here).
        target: int64 labels [B].
        temperature: τ > 0 (reference: 1).

    Returns:
        :class:`SwitOKDDecision`; ``expert`` is a bool 0-d tensor, true iff ``G > δ`` and
        ``t < s`` (strict), i.e. the teacher pauses this step.
    """
    gap = distillation_gap(teacher_logits, student_logits, temperature)
    t = label_distance(teacher_logits, target, temperature)
    s = label_distance(student_logits, target, temperature)
    eps, delta, expert = switokd_mode(gap, t, s)
    return SwitOKDDecision(gap, t, s, eps, delta, expert)


def switokd_mode(gap: Tensor, teacher_distance: Tensor, student_distance: Tensor,
                 eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(ε, δ, expert) from the statistics of one or more pairs (any matching shapes).

    ``eps`` None: ε and δ from :func:`switokd_threshold`; given (the reference's cross-pair ε,
    ``reference_slip``): δ = s − ε·t with that ε. ``expert`` (bool) is true iff ``G > δ`` and
    ``t < s`` (strict): the teacher pauses. :func:`switokd_decision` and the ``switokd`` method
    both decide through this function.
    """
    t, s = teacher_distance, student_distance
    if eps is None:
        eps, delta = switokd_threshold(t, s)
    else:
        delta = s - eps * t
    return eps, delta, (gap > delta) & (t < s)


def online_kl_loss(learner_logits: Tensor, target_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(p_target ‖ p_learner) to a detached peer: sum over classes, mean over the batch.

    ``p = softmax(z / τ)``; the target's logits are detached here, so the gradient reaches only
    ``learner_logits``. No τ² factor (the reference uses τ = 1, where it makes no difference).
    Shapes: [B, C], [B, C] → 0-d tensor.
    """
    _check_pair(learner_logits, target_logits, "learner and target", temperature)
    log_p_target = F.log_softmax(target_logits.detach() / temperature, dim=1)
    log_p_learner = F.log_softmax(learner_logits / temperature, dim=1)
    return kl_rows(log_p_target, log_p_learner).mean()
