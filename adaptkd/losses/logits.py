"""Logit distillation losses: Hinton KD and decoupled KD (DKD).

Every function follows the library convention: **sum over classes, mean over the batch**,
computed in the input's dtype, finite for any finite input. The teacher logits are used as
given; call them under ``torch.no_grad()`` (the engine does) so no gradient reaches a teacher.

The arithmetic is that of the reference code described in ``docs/methods/logit.md`` (mdistiller
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


# --------------------------------------------------------------------------------------------
# DTKD: dynamic temperature KD (JinYu1998/DTKD ``DTKD.py``; ``docs/methods/logit.md``)

__all__ += ["DTKDParts", "dtkd_sharpness", "dtkd_guarded", "dtkd_temperatures", "dtkd_loss", "dtkd_loss_parts"]

from typing import NamedTuple  # noqa: E402

_SHARPNESS = ("max", "logsumexp")


class DTKDParts(NamedTuple):
    """Everything one DTKD evaluation computes (see :func:`dtkd_loss_parts`).

    Attributes:
        loss: 0-d tensor, ``mean_i T^s_i · T^t_i · KL_i``.
        student_T: per-sample student temperature [B].
        teacher_T: per-sample teacher temperature [B].
        guarded: bool [B], the samples for which the reference rule gives no usable temperature
            (see :func:`dtkd_guarded`); with ``guard=True`` these used the reference T.
    """

    loss: Tensor
    student_T: Tensor
    teacher_T: Tensor
    guarded: Tensor


def dtkd_sharpness(logits: Tensor, sharpness: str = "max") -> Tensor:
    """Per-sample sharpness of a logit vector: [B, C] → [B].

    ``"max"``: the signed maximum logit ``max_c z_c`` (what the authors' code uses).
    ``"logsumexp"``: ``log Σ_c exp(z_c)`` (the paper's stated definition).
    """
    if sharpness == "max":
        return logits.amax(dim=1)
    if sharpness == "logsumexp":
        return torch.logsumexp(logits, dim=1)
    raise ValueError(f"sharpness must be one of {', '.join(_SHARPNESS)}, got {sharpness!r}")


def dtkd_guarded(student_logits: Tensor, teacher_logits: Tensor, *, sharpness: str = "max") -> Tensor:
    """bool [B]: samples where the reference temperature rule breaks down.

    The rule ``T_s = 2·m_s/(m_s+m_t)·T``, ``T_t = 2·m_t/(m_s+m_t)·T`` gives two temperatures in
    (0, 2T) exactly when both sharpness values are positive. A sample is *guarded* when it is
    not: ``m_s + m_t ≤ 0`` (temperatures undefined, or of the wrong sign and ordering) or one of
    ``m_s, m_t`` is ≤ 0 while the sum is positive (that model's temperature is ≤ 0: its
    distribution would be inverted or undefined). ``guarded.sum()`` is the guarded count.
    """
    _check_pair(student_logits, teacher_logits)
    m_s = dtkd_sharpness(student_logits, sharpness)
    m_t = dtkd_sharpness(teacher_logits, sharpness)
    return torch.minimum(m_s, m_t) <= 0


def _dtkd_temperatures(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, sharpness: str, guard: bool
) -> tuple[Tensor, Tensor, Tensor]:
    _check_pair(student_logits, teacher_logits)
    _check_temperature(temperature)
    m_s = dtkd_sharpness(student_logits, sharpness)
    m_t = dtkd_sharpness(teacher_logits, sharpness)
    guarded = torch.minimum(m_s, m_t) <= 0
    denom = m_t + m_s
    if guard:
        # A safe denominator in the replaced branch keeps the backward free of inf/NaN.
        denom = denom.masked_fill(guarded, 1.0)
    t_s = 2 * m_s / denom * temperature
    t_t = 2 * m_t / denom * temperature
    if guard:
        t_s = t_s.masked_fill(guarded, float(temperature))
        t_t = t_t.masked_fill(guarded, float(temperature))
    return t_s, t_t, guarded


def dtkd_temperatures(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    sharpness: str = "max",
    guard: bool = True,
) -> tuple[Tensor, Tensor]:
    """DTKD's per-sample temperatures ``(student_T [B], teacher_T [B])``.

    With m_s, m_t the per-sample sharpness (:func:`dtkd_sharpness`) of the student and teacher
    logits and T the reference temperature::

        T_s = 2·m_s / (m_t + m_s) · T        T_t = 2·m_t / (m_t + m_s) · T

    They sum to 2T, equal T when m_s = m_t, and the model with the larger (positive) sharpness
    gets the higher temperature. Gradients flow through both temperatures (no detach), as in
    the reference.

    Args:
        student_logits, teacher_logits: [B, C].
        temperature: the reference temperature T > 0.
        sharpness: ``"max"`` (reference code: signed max logit) or ``"logsumexp"`` (paper text).
        guard: if True, samples flagged by :func:`dtkd_guarded` (a sharpness ≤ 0) use T for
            both models (constant, no gradient through it). If False the reference arithmetic is
            applied unchanged: temperatures may be negative, huge or non-finite.
    """
    t_s, t_t, _ = _dtkd_temperatures(student_logits, teacher_logits, temperature, sharpness, guard)
    return t_s, t_t


def dtkd_loss_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    sharpness: str = "max",
    guard: bool = True,
) -> DTKDParts:
    """The DTKD term together with its temperatures and guard mask (one evaluation).

    ``loss = (1/B) Σ_i T^s_i · T^t_i · KL(softmax(t_i/T^t_i) ‖ softmax(s_i/T^s_i))``, KL summed
    over classes. Arguments as :func:`dtkd_temperatures`.
    """
    t_s, t_t, guarded = _dtkd_temperatures(student_logits, teacher_logits, temperature, sharpness, guard)
    log_ps = F.log_softmax(student_logits / t_s.unsqueeze(1), dim=1)
    log_pt = F.log_softmax(teacher_logits / t_t.unsqueeze(1), dim=1)
    loss = (kl_rows(log_pt, log_ps) * t_t * t_s).mean()
    return DTKDParts(loss, t_s, t_t, guarded)


def dtkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    sharpness: str = "max",
    guard: bool = True,
) -> Tensor:
    """The DTKD term alone: ``mean_i T^s_i · T^t_i · KL_i`` (0-d tensor).

    KL_i = KL(softmax(t_i/T^t_i) ‖ softmax(s_i/T^s_i)) summed over classes; the per-sample
    temperatures are those of :func:`dtkd_temperatures` and carry gradient. The product of the
    two temperatures replaces KD's T². A guarded sample (``guard=True``) contributes exactly its
    KD term ``T²·KL`` at the reference T. With ``guard=False, sharpness="max"`` this is the
    authors' arithmetic, negative losses included. Warm-up and weights belong to the method.
    """
    return dtkd_loss_parts(student_logits, teacher_logits, temperature, sharpness=sharpness, guard=guard).loss
