"""Balancers: how a learner's named loss terms become one loss, and its backward.

A method returns unweighted terms and their weights per learner (``StepOut``); the balancer
turns them into gradients. :class:`FixedBalance` is the usual weighted sum. Dynamic balancers
(``GradientBalance``) may set the task/distillation weight each step from gradient statistics.

The engine calls ``balancer.backward(out, ctx)`` once per step; it must leave the gradients of
every stepping learner's parameters in ``.grad`` and return the step's signals (0-d tensors, not
synchronised to the host).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import Tensor, nn

from adaptkd._registry import Registry
from adaptkd.comm import LOCAL, Communicator
from adaptkd.constraints import Angle, Count, Fraction, Probability, Scale, Weight
from adaptkd.errors import ConfigError
from adaptkd.methods.base import StepOut

__all__ = [
    "Balancer",
    "BalanceParams",
    "BackwardContext",
    "FixedBalance",
    "GradientBalance",
    "GradientParams",
    "controller_lambda",
    "decrease_interval",
    "dominance_bound",
    "cone_bound",
    "importance",
    "update_norm",
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
        networks: {learner: its network module (unwrapped)}; optional, used by
            ``GradientBalance(over="head")`` to find the last layer (``head_name``).
        comm: reductions across ranks (the identity on one process).
    """

    params: dict[str, list[nn.Parameter]]
    extra_params: dict[str, list[nn.Parameter]]
    task_terms: frozenset[str]
    stepping: list[str]
    step: int = 0
    scale: Callable[[Tensor], Tensor] = field(default=lambda t: t)
    networks: dict[str, nn.Module] = field(default_factory=dict)
    comm: Communicator = LOCAL


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


#: a balancer's option model (``Balancer[GradientParams]`` reads ``self.params`` as ``GradientParams``)
BP = TypeVar("BP", bound=BalanceParams)


class Balancer(nn.Module, Generic[BP]):
    """Base class, generic in its option model; subclasses implement :meth:`backward`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BalanceParams]] = BalanceParams

    def __init__(self, params: BP) -> None:
        super().__init__()
        self.params: BP = params

    def backward(self, out: StepOut, ctx: BackwardContext) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError


BALANCERS: Registry[type[Balancer]] = Registry("balancer", set_name=True)


def register_balancer(name: str):
    return BALANCERS.register(name)


def list_balancers() -> list[str]:
    return BALANCERS.names()


def _cls(name: str) -> type[Balancer]:
    return BALANCERS.get(name)


def balancer_params_model(name: str) -> type[BalanceParams]:
    return _cls(name).Params


def build_balancer(name: str, options: dict[str, Any]) -> Balancer:
    cls = _cls(name)
    return cls(cls.Params.model_validate(options))


@register_balancer("fixed")
class FixedBalance(Balancer[BalanceParams]):
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


# ----------------------------------------------------------------------------------------------
# Dynamic balancing (docs/methods/balance.md): adaptkd's own first-order analysis, motivated by
# Kim et al. 2025 ("Importance Analysis for Dynamic Control of Balancing Parameter in a Simple
# Knowledge Distillation Setting"), whose body was not available. Not the paper's rule.
#
# Notation: g_T, g_D are the gradients of the (normalised) task and distillation losses,
# a = ‖g_T‖, b = ‖g_D‖, c = cos(g_T, g_D); the update direction is g_λ = (1−λ)·g_T + λ·g_D.
# The functions below are pure tensor arithmetic (any float dtype, any broadcastable shape), so
# that they run on the device without host synchronisation and can be checked in float64.


def _div(num: Tensor, den: Tensor, default: float) -> Tensor:
    """``num / den`` where ``den > 0``, else ``default`` (no NaN/Inf from 0/0)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), default)


def _ratio(num: Tensor, den: Tensor, default: float) -> Tensor:
    """``num / den`` for fractions whose numerator is 0 wherever the denominator is (0/0 → ``default``).

    Two operations instead of :func:`_div`'s four: every ratio of §4 has this form (a denominator
    vanishes only together with its numerator), which keeps the controller cheap per step.
    """
    return torch.nan_to_num(num / den, nan=default)


def importance(a: Tensor, b: Tensor, c: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """(I_T, I_D) of §4.2: I_T = (1−λ)⟨g_T, g_λ⟩, I_D = λ⟨g_D, g_λ⟩ (so ΔL_λ ≈ −η(I_T + I_D))."""
    ab = a * b * c
    i_t = (1 - lam) * ((1 - lam) * a * a + lam * ab)
    i_d = lam * ((1 - lam) * ab + lam * b * b)
    return i_t, i_d


def update_norm(a: Tensor, b: Tensor, c: Tensor, lam: Tensor | float) -> Tensor:
    """‖g_λ‖ = sqrt((1−λ)²a² + 2λ(1−λ)·abc + λ²b²)."""
    sq = (1 - lam) ** 2 * a * a + 2 * lam * (1 - lam) * a * b * c + lam * lam * b * b
    return sq.clamp_min(0).sqrt()


def dominance_bound(a: Tensor, b: Tensor, c: Tensor, rho: float = 1.0) -> Tensor:
    """λ_ρ (§4.2): the smallest λ with I_D ≥ ρ·I_T.

    With k = λb/((1−λ)a), I_D ≥ ρ·I_T ⟺ k² + c(1−ρ)k − ρ ≥ 0 ⟺ k ≥ k_ρ, the positive root
    k_ρ = [c(ρ−1) + sqrt(c²(ρ−1)² + 4ρ)] / 2; then λ_ρ = k_ρ·a / (k_ρ·a + b). ρ = 1 gives a/(a+b).
    """
    k = (c * (rho - 1) + torch.sqrt(c * c * (rho - 1) ** 2 + 4 * rho)) / 2 if rho != 1.0 else 1.0
    return _ratio(k * a, k * a + b, 0.0)


def decrease_interval(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """[λ_lo, λ_hi] (§4.3): both losses decrease to first order iff λ_lo ≤ λ ≤ λ_hi.

    λ_lo = a|c|/(b + a|c|) and λ_hi = a/(a + b|c|) when c < 0; [0, 1] when c ≥ 0.
    """
    neg = (-c).clamp_min(0)
    a_neg = a * neg
    lo = _ratio(a_neg, b + a_neg, 0.0)
    hi = _ratio(a, a + b * neg, 1.0)
    return lo, hi


def cone_bound(a: Tensor, b: Tensor, c: Tensor, psi0_deg: float) -> Tensor:
    """λ_ψ0 (§5 C1 variant): the largest λ with cos(g_T, g_λ) ≥ cos ψ0.

    λ_ψ0 = a·sin ψ0 / (a·sin ψ0 + b·sin(φ − ψ0)) when φ = arccos(c) > ψ0, else 1 (also 1 when
    a = 0: there is no task direction to stay close to). Uses sin(φ − ψ0) = sin φ·cos ψ0 − c·sin ψ0.
    """
    psi = math.radians(psi0_deg)
    sin_p, cos_p = math.sin(psi), math.cos(psi)
    c = c.clamp(-1, 1)
    sin_phi_minus = (1 - c * c).clamp_min(0).sqrt() * cos_p - c * sin_p
    num = a * sin_p
    bound = _div(num, num + b * sin_phi_minus, 1.0)
    return torch.where((c < cos_p) & (a > 0), bound, 1.0)


def controller_lambda(p: "GradientParams", a: Tensor, b: Tensor, c: Tensor, lam0: Tensor | float) -> dict[str, Tensor]:
    """λ of the configured controller (§5) and the interval bounds, from the statistics a, b, c.

    Returns {"lambda", "lambda_lo", "lambda_hi", "lambda_rho"} (+ "lambda_psi" with ψ0). The
    clip [lambda_min, lambda_max] is applied last.
    """
    lo, hi = decrease_interval(a, b, c)
    lam_rho = dominance_bound(a, b, c, p.rho)
    lower = torch.maximum(lam_rho, lo)
    out = {"lambda_lo": lo, "lambda_hi": hi, "lambda_rho": lam_rho}
    if p.controller == "safe":
        upper = hi
        if p.psi0 is not None:
            upper = cone_bound(a, b, c, p.psi0)
            out["lambda_psi"] = upper
        nominal = torch.maximum(lower, lam0) if isinstance(lam0, Tensor) else lower.clamp_min(lam0)
        lam = torch.minimum(upper, nominal)  # task safety wins over dominance
    elif p.controller == "task_max":
        lam = torch.where(b * c < a, lower, hi)
    elif p.controller == "ratio":
        lam = _ratio(p.kappa * a, p.kappa * a + b, p.kappa / (1 + p.kappa))
        if p.task_safe:
            lam = torch.minimum(lam, hi)
    else:  # cosine_gate
        gate = c.clamp_min(0) if p.gate == "soft" else (c > 0).to(c.dtype)
        w = p.w0 * gate
        lam = w / (1 + w)
    out["lambda"] = lam.clamp(p.lambda_min, p.lambda_max)
    return out


_CONTROLLER_OPTIONS = {
    "rho": ("safe", "task_max"),
    "psi0": ("safe",),
    "kappa": ("ratio",),
    "task_safe": ("ratio",),
    "w0": ("cosine_gate",),
    "gate": ("cosine_gate",),
}


class GradientParams(BalanceParams):
    """Options of ``balance: {name: gradient, ...}`` (see docs/methods/balance.md)."""

    controller: Literal["safe", "task_max", "ratio", "cosine_gate"] = "safe"
    over: Literal["logits", "head", "params"] = "logits"
    lambda0: float | Literal["method"] = 0.9
    rho: Scale = 1.0
    psi0: Angle | None = None
    kappa: Scale = 1.0
    task_safe: bool = False
    w0: Weight = 9.0
    gate: Literal["soft", "hard"] = "soft"
    ema: Fraction = 0.0
    lambda_min: Probability = 0.0
    lambda_max: Probability = 1.0
    every: Count = 1
    renormalise: bool = False

    @field_validator("lambda0", mode="before")
    @classmethod
    def _lambda0_not_bool(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError(f"lambda0 must be in [0, 1] or 'method', got the boolean {v}")
        return v

    @field_validator("lambda0")
    @classmethod
    def _lambda0(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0.0 <= v <= 1.0:
            raise ValueError(f"lambda0 must be in [0, 1] or 'method', got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "GradientParams":
        if self.lambda_min > self.lambda_max:
            raise ValueError(f"lambda_min ({self.lambda_min}) must not exceed lambda_max ({self.lambda_max})")
        for key, ctrls in _CONTROLLER_OPTIONS.items():
            if key in self.model_fields_set and self.controller not in ctrls:
                raise ValueError(f"option `{key}` applies only to controller {' / '.join(ctrls)}, "
                                 f"not {self.controller!r}")
        if "lambda0" in self.model_fields_set and self.controller != "safe" and not self.renormalise:
            raise ValueError(f"option `lambda0` is used by controller 'safe' or with renormalise: true; controller "
                             f"{self.controller!r} ignores it")
        return self


def _grads(loss: Tensor, inputs: Sequence[Tensor], retain: bool) -> list[Tensor | None]:
    """∂loss/∂inputs, None for an input the loss does not reach (no error)."""
    if not loss.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad(loss, inputs, retain_graph=retain, allow_unused=True))


def _flat(grads: list[Tensor]) -> Tensor:
    """One flat vector of the gradients, in at least float32 (float64 stays float64)."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    return flat.to(torch.promote_types(flat.dtype, torch.float32))


@dataclass
class _Groups:
    """One learner's losses split for the convex form: loss = s·[(1−λ)·L̂_T + λ·L̂_D]."""

    task: Tensor      # L̂_T = Σ_task w_k L_k / W_T
    distill: Tensor   # L̂_D = Σ_distill w_k L_k / W_D
    scale: Tensor | float  # s = W_T + W_D
    lam_method: Tensor | float  # W_D / (W_T + W_D)
    task_names: list[str]
    distill_names: list[str]


def _normalised(terms: dict[str, Tensor], weights: dict[str, Any]) -> tuple[Tensor, Tensor | float]:
    """(Σ w_k L_k / W, W) with W = Σ w_k; the plain mean of the terms where W = 0."""
    ws = [weights.get(k, 1.0) for k in terms]
    total_w: Tensor | float = sum(ws)
    norm: list[Any]
    if isinstance(total_w, Tensor):
        ok = total_w > 0
        safe = torch.where(ok, total_w, torch.ones_like(total_w))
        norm = [torch.where(ok, w / safe, torch.full_like(safe, 1.0 / len(ws))) for w in ws]
    else:
        norm = [w / total_w for w in ws] if total_w > 0 else [1.0 / len(ws)] * len(ws)
    loss: Tensor | None = None
    for v, w in zip(terms.values(), norm):
        part = v * w
        loss = part if loss is None else loss + part
    assert loss is not None, "no terms to normalise"  # the groups are never empty (_split)
    return loss, total_w


@register_balancer("gradient")
class GradientBalance(Balancer[GradientParams]):
    """Per learner: loss = s·[(1−λ)·L̂_T + λ·L̂_D] with λ set each update from gradient statistics.

    L̂_T / L̂_D are the method's task / distillation terms with the method's weights normalised
    within each group, s = W_T + W_D is the method's total weight, so λ replaces only the
    method's group balance W_D/(W_T+W_D). Statistics a, b, c come from gradients with respect to
    the learner's logits (``over: logits``), its last Linear layer (``head``) or all its network
    parameters (``params``, exact). See docs/methods/balance.md.
    """

    Params = GradientParams
    _SIG = ("a", "b", "dot", "c", "lambda", "renorm", "lambda_lo", "lambda_hi", "lambda_rho", "lambda_psi")

    def __init__(self, params: GradientParams) -> None:
        super().__init__(params)
        self.state: dict[str, Tensor] = {}  # learner -> vector over _SIG
        self._checked: set[tuple[str, frozenset[str]]] = set()
        self._heads: dict[str, tuple[str, list[Tensor]]] = {}
        self._views: dict[str, tuple[Tensor, ...]] = {}

    # -- checkpointing -------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"state": {k: v.detach().clone() for k, v in self.state.items()}}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.state = {k: v.clone() for k, v in state.get("state", {}).items()}
        self._views = {}

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _split(terms: dict[str, Tensor], weights: dict[str, Any], task_terms: frozenset[str]) -> _Groups | None:
        """The convex-form groups, or None when the learner has terms of one group only."""
        t_names = [k for k in terms if k in task_terms]
        d_names = [k for k in terms if k not in task_terms]
        if not t_names or not d_names:
            return None
        lt, wt = _normalised({k: terms[k] for k in t_names}, weights)
        ld, wd = _normalised({k: terms[k] for k in d_names}, weights)
        s = wt + wd
        lam_m: Tensor | float
        if isinstance(s, Tensor):
            lam_m = _div(wd * torch.ones_like(s), s, 0.0)
        else:
            lam_m = wd / s if s > 0 else 0.0
        return _Groups(lt, ld, s, lam_m, t_names, d_names)

    def _stat_inputs(self, learner: str, g: _Groups, terms: dict[str, Tensor], out: StepOut,
                     ctx: BackwardContext) -> list[Tensor]:
        """What the statistics differentiate with respect to (logits or head), checked once per term set."""
        over = self.params.over
        if over == "logits":
            z = out.logits.get(learner)
            if z is None or not z.requires_grad:
                raise ConfigError(f"field `balance.over`: 'logits' needs learner {learner!r}'s logits with gradient in "
                                  f"the method's output; use over: params")
            inputs, what = [z], f"logits of {learner!r}"
        else:
            if learner not in self._heads:
                net = ctx.networks.get(learner)
                head_name = getattr(net, "head_name", None)
                head = dict(net.named_modules()).get(head_name) if net is not None and head_name else None
                if not isinstance(head, nn.Linear):
                    raise ConfigError(f"field `balance.over`: 'head' needs learner {learner!r}'s network with a "
                                      f"`head_name` naming its last nn.Linear; use over: logits or params")
                self._heads[learner] = (str(head_name), [p for p in head.parameters() if p.requires_grad])
            head_name, inputs = self._heads[learner]
            what = f"last layer `{head_name}` of {learner!r}"
        key = (learner, frozenset(terms))
        if key not in self._checked:
            unreached = [k for k in g.task_names + g.distill_names
                         if all(x is None for x in _grads(terms[k], inputs, True))]
            if unreached:
                raise ConfigError(
                    f"field `balance.over`: {over!r} measures gradients at the {what}, but term(s) "
                    f"{unreached} do not reach it "
                    f"(feature-only terms). Use `balance.over: params` (exact, one extra backward per update)."
                )
            self._checked.add(key)
        return inputs

    def _update(self, learner: str, g: _Groups, a2: Tensor, b2: Tensor, dot: Tensor, comm: Communicator) -> None:
        """New statistics (mean over the ranks) → (EMA) → controller → stored state vector (kept when non-finite)."""
        p = self.params
        raw = comm.mean(torch.stack([a2, b2, dot]))
        cur = torch.cat([raw[:2].clamp_min(0).sqrt(), raw[2:]])  # (a, b, ⟨g_T, g_D⟩)
        old = self.state.get(learner)
        ok = torch.isfinite(cur).all()
        if old is None:
            sm = torch.where(ok, cur, 0.0)
        else:
            prev = old[:3]
            sm = torch.where(ok, p.ema * prev + (1 - p.ema) * cur if p.ema > 0 else cur, prev)
        a, b, d = sm.unbind()
        c = _ratio(d, a * b, 0.0).clamp(-1, 1)
        lam0: Tensor | float = g.lam_method if p.lambda0 == "method" else p.lambda0
        if isinstance(lam0, Tensor):
            lam0 = lam0.to(a.dtype)
        res = controller_lambda(p, a, b, c, lam0)
        lam = res["lambda"]
        r = _div(update_norm(a, b, c, lam0), update_norm(a, b, c, lam), 1.0) if p.renormalise else lam.new_ones(())
        psi = res.get("lambda_psi", lam)
        self.state[learner] = torch.stack([a, b, d, c, lam, r, res["lambda_lo"], res["lambda_hi"],
                                           res["lambda_rho"], psi]).detach()
        self._views.pop(learner, None)

    def _view(self, learner: str) -> tuple[Tensor, ...]:
        """The state vector's entries as 0-d views (one ``unbind`` per update, reused in between)."""
        if learner not in self._views:
            self._views[learner] = self.state[learner].unbind()
        return self._views[learner]

    def _coefs(self, learner: str, g: _Groups) -> tuple[Tensor, Tensor]:
        """(s·r·(1−λ), s·r·λ) from the stored state."""
        v = self._view(learner)
        lam = v[4]
        if self.params.renormalise:
            sr = v[5] * g.scale
            return sr * (1 - lam), sr * lam
        if isinstance(g.scale, float) and g.scale == 1.0:
            return 1 - lam, lam
        return g.scale * (1 - lam), g.scale * lam

    def _signals(self, learner: str, signals: dict[str, Tensor]) -> None:
        v = self._view(learner)
        names = ["a", "b", "c", "lambda", "lambda_lo", "lambda_hi", "lambda_rho"]
        if self.params.psi0 is not None:
            names.append("lambda_psi")
        if self.params.renormalise:
            names.append("renorm")
        for n in names:
            signals[f"balance/{learner}/{n}"] = v[self._SIG.index(n)]

    # -- the step ------------------------------------------------------------------------------
    def backward(self, out: StepOut, ctx: BackwardContext) -> dict[str, Tensor]:
        p = self.params
        signals: dict[str, Tensor] = {}
        groups: dict[str, _Groups] = {}
        plain: dict[str, Tensor] = {}  # learners with task terms only or distillation terms only
        for learner in ctx.stepping:
            terms = out.losses.get(learner)
            if not terms:
                continue
            weights = out.weights.get(learner, {})
            g = self._split(terms, weights, ctx.task_terms)
            if g is None:
                plain[learner] = weighted_sum(terms, weights)
                signals[f"loss/{learner}"] = plain[learner].detach()
            else:
                groups[learner] = g
        if not groups and not plain:
            return signals
        due = [n for n in groups if n not in self.state or ctx.step % p.every == 0]
        if p.over == "params" and due:
            self._params_step(groups, plain, due, ctx)
        else:
            for learner in due:
                g = groups[learner]
                inputs = self._stat_inputs(learner, g, out.losses[learner], out, ctx)
                gt = [x for x in _grads(g.task, inputs, True) if x is not None]
                gd = [x for x in _grads(g.distill, inputs, True) if x is not None]
                ft, fd = _flat(gt), _flat(gd)
                self._update(learner, g, ft.dot(ft), fd.dot(fd), ft.dot(fd), ctx.comm)
            total: Tensor | None = None
            for loss in plain.values():
                total = loss if total is None else total + loss
            for learner, g in groups.items():
                ct, cd = self._coefs(learner, g)
                loss = ct * g.task + cd * g.distill
                signals[f"loss/{learner}"] = loss.detach()
                total = loss if total is None else total + loss
            assert total is not None, "a backward without any loss"  # the engine calls it with losses only
            ctx.scale(total).backward()
        for learner in groups:
            self._signals(learner, signals)
        return signals

    def _params_step(self, groups: dict[str, _Groups], plain: dict[str, Tensor], due: list[str],
                     ctx: BackwardContext) -> None:
        """Exact statistics over every network parameter: two autograd.grad per learner, no third backward.

        Gradients are taken with respect to every stepping learner's network and method
        parameters, so a learner's loss that reaches another learner contributes exactly as in
        the plain backward; a, b, c use the learner's own network parameters only (method-owned
        modules are excluded from the statistics, as in the spec, but still get their exact
        gradient of the combined loss).
        """
        if ctx.comm.world_size > 1:
            raise ConfigError("field `balance.over`: 'params' sets gradients directly and bypasses DDP's gradient "
                              "synchronisation; in multi-process runs use over: logits or head")
        inputs: list[nn.Parameter] = []
        own: dict[str, list[int]] = {}
        seen: dict[int, int] = {}
        for learner in list(groups) + list(plain):
            for plist, is_own in ((ctx.params.get(learner, []), True), (ctx.extra_params.get(learner, []), False)):
                for prm in plist:
                    if not prm.requires_grad:
                        continue
                    if id(prm) not in seen:
                        seen[id(prm)] = len(inputs)
                        inputs.append(prm)
                    if is_own:
                        own.setdefault(learner, []).append(seen[id(prm)])
        unit = ctx.scale(torch.ones((), device=inputs[0].device)) if inputs else 1.0
        acc: list[Tensor | None] = [None] * len(inputs)
        def add(j: int, x: Tensor) -> None:
            prev = acc[j]
            acc[j] = x if prev is None else prev + x

        for loss in plain.values():  # one plain gradient each, accumulated like a backward
            for j, x in enumerate(_grads(ctx.scale(loss), inputs, True)):
                if x is not None:
                    add(j, x)
        names = list(groups)
        for i, learner in enumerate(names):
            g = groups[learner]
            last = i == len(names) - 1
            gt = _grads(ctx.scale(g.task), inputs, True)
            gd = _grads(ctx.scale(g.distill), inputs, not last)
            if learner in due:
                idx = own.get(learner, [])
                ft = _flat([x if (x := gt[j]) is not None else torch.zeros_like(inputs[j]) for j in idx]) / unit
                fd = _flat([x if (x := gd[j]) is not None else torch.zeros_like(inputs[j]) for j in idx]) / unit
                self._update(learner, g, ft.dot(ft), fd.dot(fd), ft.dot(fd), ctx.comm)
            ct, cd = self._coefs(learner, g)
            # s·r·[(1−λ)·g_T + λ·g_D], with foreach kernels where both gradients exist (the usual case)
            pairs = [(j, xt, xd) for j, (xt, xd) in enumerate(zip(gt, gd))
                     if xt is not None and xd is not None and xt.dtype == ct.dtype]
            both = [j for j, _, _ in pairs]
            if both:
                parts = torch._foreach_mul([xt for _, xt, _ in pairs], ct)
                torch._foreach_add_(parts, torch._foreach_mul([xd for _, _, xd in pairs], cd))
                for j, fused in zip(both, parts):
                    add(j, fused)
            done = set(both)
            for j, (xt, xd) in enumerate(zip(gt, gd)):
                if j in done or (xt is None and xd is None):
                    continue
                part: Tensor | None = xt * ct.to(xt.dtype) if xt is not None else None
                if xd is not None:
                    part = xd * cd.to(xd.dtype) if part is None else part + xd * cd.to(xd.dtype)
                assert part is not None  # one of the two gradients exists here
                add(j, part)
        for prm, grad in zip(inputs, acc):
            if grad is None:
                continue
            prm.grad = grad if prm.grad is None else prm.grad + grad
