"""``compose``: a weighted sum of registered logit loss terms, configured entirely in YAML.

    method:
      name: compose
      terms:
        - {loss: dtkd, weight: 3.0, warmup_epochs: 20}
        - {loss: dkd, weight: 1.0, beta: 8, warmup_epochs: 20}
        - {loss: ce, weight: 1.0}

Total: ``Σ_k weight_k · min(epoch / warmup_k, 1) · L_k`` (epochs from 1; ``warmup_epochs: 0``,
the default, means no warm-up). Every term has the common keys ``loss``, ``weight``,
``warmup_epochs`` and ``name`` (the term's name in logs; defaults to the loss name and must be
unique, so two terms of one loss need names) plus its loss's own options. ``ce`` terms are task
terms; every other term is a distillation term for the balancer.

The composable losses form a small registry: a new logit loss plugs in with
``@register_term("name")`` on a :class:`LossTerm` subclass that declares its options as pydantic
fields and implements ``compute``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, SerializeAsAny, ValidationError, WrapValidator, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor

from adaptkd._registry import Registry
from adaptkd.constraints import Epochs, Fraction, Temperature, Weight
from adaptkd.errors import ConfigError
from adaptkd.losses import DTKDParts, dkd_loss, dtkd_loss_parts, kd_loss
from adaptkd.methods.base import Method, MethodParams, StepIn, StepOut, register_method, warmup_factor
from adaptkd.methods.common import teacher_logits
from adaptkd.methods.spec import LOGITS, Example, MethodSpec, NetworkNeeds, Reduce, Roster

__all__ = ["LossTerm", "register_term", "list_terms", "ComposeParams", "Compose", "dtkd_signals"]


class LossTerm(MethodParams):
    """One composable loss term: common keys plus (in subclasses) the loss's own options."""

    loss: str
    weight: Weight = 1.0
    warmup_epochs: Epochs = 0.0
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")

    #: a task term (the balancer's "task" side) rather than a distillation term
    task: ClassVar[bool] = False
    #: the term reads the teacher's logits
    needs_teacher: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return self.name or self.loss

    def compute(self, student: Tensor, teacher: Tensor | None, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(unweighted 0-d loss, {signal suffix: 0-d tensor})."""
        raise NotImplementedError


_TERMS: Registry[type[LossTerm]] = Registry("loss term")


def register_term(name: str):
    """Class decorator: register a :class:`LossTerm` subclass as loss ``name``."""
    return _TERMS.register(name)


def list_terms() -> list[str]:
    return _TERMS.names()


def _error(kind: str, message: str, loc: tuple[Any, ...], value: Any, **ctx: Any) -> ValidationError:
    err = PydanticCustomError(kind, message, ctx or None)
    return ValidationError.from_exception_data("term", [{"type": err, "loc": loc, "input": value}])


def _validate_term(value: Any, _handler: Any) -> LossTerm:
    """Dispatch one ``terms`` entry to its loss's option model (errors keep their field path)."""
    if isinstance(value, LossTerm):
        return value
    if not isinstance(value, dict):
        raise _error("term_mapping", "expected a mapping with a `loss` key, such as {loss: kd, weight: 1.0}", (), value)
    if "loss" not in value:
        raise _error("missing", "required, but missing", ("loss",), None)
    name = value["loss"]
    if name not in _TERMS:
        close = _TERMS.closest(name, n=2)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise _error("unknown_loss", "unknown loss {name}{hint} (composable losses: {known})", ("loss",), name,
                     name=repr(name), hint=hint, known=", ".join(list_terms()))
    return _TERMS.get(name).model_validate(value)


class ComposeParams(MethodParams):
    terms: list[Annotated[SerializeAsAny[LossTerm], WrapValidator(_validate_term)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "ComposeParams":
        seen: set[str] = set()
        for i, term in enumerate(self.terms):
            if term.key in seen:
                raise _error("duplicate_term", "term name {key} is used twice; give one of them a `name`",
                             ("terms", i, "name"), term.key, key=repr(term.key))
            seen.add(term.key)
        return self


#: epoch reduction of each DTKD signal (:func:`dtkd_signals`); the engine logs them as ``train/<prefix>/<signal>``
DTKD_REDUCTIONS: dict[str, Reduce] = {"student_T_mean": "mean", "student_T_min": "min", "student_T_max": "max",
                                      "teacher_T_mean": "mean", "teacher_T_min": "min", "teacher_T_max": "max",
                                      "guarded": "sum"}


def dtkd_signals(parts: DTKDParts, prefix: str = "") -> dict[str, Tensor]:
    """Temperature mean/min/max of student and teacher and the guarded count, as device tensors
    (no host sync), named ``<prefix>/<signal>`` (just ``<signal>`` without a prefix)."""
    temps = torch.stack([parts.student_T.detach(), parts.teacher_T.detach()])
    mean, (lo, hi) = temps.mean(1), torch.aminmax(temps, dim=1)
    out = {}
    for i, who in enumerate(("student", "teacher")):
        out[f"{who}_T_mean"], out[f"{who}_T_min"], out[f"{who}_T_max"] = mean[i], lo[i], hi[i]
    out["guarded"] = parts.guarded.sum().float()
    return {f"{prefix}/{k}" if prefix else k: v for k, v in out.items()}


# -- the built-in composable losses ----------------------------------------------------------
@register_term("ce")
class CETerm(LossTerm):
    """Cross-entropy on the labels (a task term)."""

    task: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = False
    label_smoothing: Fraction = 0.0

    def compute(self, student, teacher, target):
        return F.cross_entropy(student, target, label_smoothing=self.label_smoothing), {}


@register_term("kd")
class KDTerm(LossTerm):
    """Hinton KD, ``T² · mean_i KL`` (:func:`adaptkd.losses.kd_loss`)."""

    temperature: Temperature = 4.0

    def compute(self, student, teacher, target):
        return kd_loss(student, teacher, self.temperature), {}


@register_term("dkd")
class DKDTerm(LossTerm):
    """Decoupled KD, ``α·TCKD + β·NCKD`` (:func:`adaptkd.losses.dkd_loss`)."""

    alpha: Weight = 1.0
    beta: Weight = 8.0
    temperature: Temperature = 4.0

    def compute(self, student, teacher, target):
        return dkd_loss(student, teacher, target, alpha=self.alpha, beta=self.beta, temperature=self.temperature), {}


@register_term("dtkd")
class DTKDTerm(LossTerm):
    """The DTKD term, ``mean_i T^s_i·T^t_i·KL_i`` (:func:`adaptkd.losses.dtkd_loss`), with signals."""

    temperature: Temperature = 4.0
    sharpness: Literal["max", "logsumexp"] = "max"
    guard: bool = True

    def compute(self, student, teacher, target):
        parts = dtkd_loss_parts(student, teacher, self.temperature, sharpness=self.sharpness, guard=self.guard)
        return parts.loss, dtkd_signals(parts)


# -- the method ------------------------------------------------------------------------------
@register_method("compose")
class Compose(Method[ComposeParams]):
    """Σ weight·warm-up·term over the configured terms (see the module docstring)."""

    Params = ComposeParams
    spec = MethodSpec(
        networks=NetworkNeeds(frozen=(0, None)),  # a teacher when a term reads one (check_networks)
        example=Example({"terms": [{"loss": "dtkd", "weight": 1.0, "warmup_epochs": 2},
                                   {"loss": "dkd", "weight": 1.0, "beta": 2.0}, {"loss": "ce", "weight": 1.0}]},
                        frozen=1),
        signals={f"*/{k}": how for k, how in DTKD_REDUCTIONS.items()},  # a dtkd term's signals, any term name
        family="logit", figures="dtkd",
        cacheable=LOGITS,
        speed_target=("floor", 1.05),
    )

    def __init__(self, params: ComposeParams, ctx) -> None:
        super().__init__(params, ctx)
        self.terms = list(params.terms)
        self.task_terms = frozenset(t.key for t in self.terms if t.task)

    @classmethod
    def check_networks(cls, params: ComposeParams, roster: Roster) -> None:
        users = [t.key for t in params.terms if t.needs_teacher]
        if users and not roster.teachers:
            raise ConfigError(f"field `teachers`: the compose terms {', '.join(users)} need a teacher; "
                              f"add one under `teachers`")

    def forward(self, inp: StepIn) -> StepOut:
        s = inp.logits["student"]
        t = teacher_logits(inp, self.ctx_frozen) if self.ctx_frozen else None
        losses, weights, signals = {}, {}, {}
        for term in self.terms:
            loss, sig = term.compute(s, t, inp.y)
            losses[term.key] = loss
            weights[term.key] = term.weight * warmup_factor(inp.epoch, term.warmup_epochs)
            signals.update({f"{term.key}/{k}": v for k, v in sig.items()})
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s}, signals=signals)
