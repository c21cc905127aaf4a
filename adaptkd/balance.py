"""Balancers: how a learner's named loss terms become one loss, and its backward.

A method returns unweighted terms and their weights per learner (``StepOut``); the balancer
turns them into gradients. :class:`FixedBalance` is the usual weighted sum. Dynamic balancers
(``GradientBalance``) may set the task/distillation weight each step from gradient statistics.

The engine calls ``balancer.backward(out, ctx)`` once per step; it must leave the gradients of
every stepping learner's parameters in ``.grad`` and return the step's signals (0-d tensors, not
synchronised to the host).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from adaptkd.methods.base import StepOut

__all__ = [
    "Balancer",
    "BalanceParams",
    "BackwardContext",
    "FixedBalance",
    "register_balancer",
    "build_balancer",
    "list_balancers",
    "balancer_params_model",
    "weighted_sum",
]


class BalanceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class BackwardContext:
    """What a balancer needs besides the method's output.

    Attributes:
        params: {learner: trainable parameters of that learner (its network, not the method's
            extra modules)}.
        extra_params: {learner: the method's own parameters trained by that learner's optimiser}.
        task_terms: names of task-loss terms; all other terms are distillation terms.
        stepping: learners whose optimisers step now (only their losses are backpropagated).
        step: global step, from 0.
        scale: loss scaling for fp16 (GradScaler.scale) or the identity.
    """

    params: dict[str, list[nn.Parameter]]
    extra_params: dict[str, list[nn.Parameter]]
    task_terms: frozenset[str]
    stepping: list[str]
    step: int = 0
    scale: Callable[[Tensor], Tensor] = field(default=lambda t: t)


def weighted_sum(terms: dict[str, Tensor], weights: dict[str, Any]) -> Tensor:
    """Σ_k w_k · L_k (weight 1 for a term without one)."""
    total: Tensor | None = None
    for name, value in terms.items():
        w = weights.get(name, 1.0)
        part = value * w if not (isinstance(w, (int, float)) and w == 1.0) else value
        total = part if total is None else total + part
    if total is None:
        raise ValueError("a learner returned no loss terms")
    return total


class Balancer(nn.Module):
    """Base class; subclasses implement :meth:`backward`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BalanceParams]] = BalanceParams

    def __init__(self, params: BalanceParams) -> None:
        super().__init__()
        self.params = params

    def backward(self, out: StepOut, ctx: BackwardContext) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError


_REGISTRY: dict[str, type[Balancer]] = {}


def register_balancer(name: str):
    def deco(cls: type[Balancer]) -> type[Balancer]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"balancer {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_balancers() -> list[str]:
    return sorted(_REGISTRY)


def _cls(name: str) -> type[Balancer]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        raise KeyError(f"unknown balancer {name!r}" + (f"; closest: {', '.join(close)}" if close else "")) from None


def balancer_params_model(name: str) -> type[BalanceParams]:
    return _cls(name).Params


def build_balancer(name: str, options: dict[str, Any]) -> Balancer:
    cls = _cls(name)
    return cls(cls.Params.model_validate(options))


@register_balancer("fixed")
class FixedBalance(Balancer):
    """The plain weighted sum ``Σ_k w_k·L_k`` per learner, one backward for all learners."""

    def backward(self, out: StepOut, ctx: BackwardContext) -> dict[str, Tensor]:
        signals: dict[str, Tensor] = {}
        total: Tensor | None = None
        for learner in ctx.stepping:
            terms = out.losses.get(learner)
            if not terms:
                continue
            loss = weighted_sum(terms, out.weights.get(learner, {}))
            signals[f"loss/{learner}"] = loss.detach()
            total = loss if total is None else total + loss
        if total is not None:
            ctx.scale(total).backward()
        return signals

