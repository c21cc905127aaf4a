"""What one :class:`~adaptkd.distiller.Distiller` call returns, and the error a Distiller raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from adaptkd.balance import weighted_sum
from adaptkd.errors import AdaptkdError
from adaptkd.methods import StepOut

__all__ = ["DistillOutput", "DistillerError"]


class DistillerError(AdaptkdError, ValueError):
    """A Distiller cannot be built or used as asked; the message says what to change."""


@dataclass
class DistillOutput:
    """What one Distiller call returns.

    Attributes:
        terms: {learner: {term: unweighted 0-d loss}} (the method's named loss terms).
        weights: {learner: {term: weight (float or 0-d tensor)}}; a missing weight is 1.
        signals: {name: 0-d (or small) tensor}: every adaptive quantity of the method, plus the
            balancer's after :meth:`Distiller.backward`. Tensors on the device: read them (``.item()``)
            only when you log.
        logits: {network: float32 logits [B, C]} for every network, teachers included.
        stepping: the learners whose optimiser steps this iteration (all, except when an online
            method pauses one, e.g. SwitOKD's expert mode).
        epoch, step: the epoch (from 1; None when unknown) and the step (from 0) the method saw.
        step_out: the method's raw :class:`~adaptkd.methods.StepOut`.
    """

    terms: dict[str, dict[str, Tensor]]
    weights: dict[str, dict[str, Any]]
    signals: dict[str, Tensor]
    logits: dict[str, Tensor]
    stepping: list[str]
    epoch: int | None
    step: int
    step_out: StepOut
    _guard: str | None = field(default=None, repr=False)
    _loss: Tensor | None = field(default=None, repr=False)

    @property
    def loss(self) -> Tensor:
        """The 0-d total to back-propagate: Σ over stepping learners Σ_k w_k·L_k (computed on first use).

        With a balancer that sets the weights from gradient statistics (``balance="gradient"``)
        this is the method-weighted total, for logging only: back-propagating it raises an error
        that says to call :meth:`Distiller.backward` instead.
        """
        if self._loss is None:
            total: Tensor | None = None
            for learner in self.stepping:
                terms = self.terms.get(learner)
                if terms:
                    part = weighted_sum(terms, self.weights.get(learner, {}))
                    total = part if total is None else total + part
            if total is None:
                raise DistillerError("no learner has a loss this step (every learner is paused)")
            if self._guard is not None and total.requires_grad:
                message = self._guard

                def refuse(grad: Tensor) -> Tensor:
                    raise DistillerError(message)

                total.register_hook(refuse)
            self._loss = total
        return self._loss
