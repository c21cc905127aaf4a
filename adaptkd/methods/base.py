"""The method contract: what the engine gives a method each step and what it gets back.

A method is a small ``nn.Module`` that wires loss functions (``adaptkd.losses``) to networks and
holds the method's state (running statistics, projectors, mode). The engine runs every network
once per step (frozen teachers under ``no_grad``) and hands the method their logits and the
features it asked for; the method returns *unweighted* loss terms per learner with their
weights, the logits to score, every adaptive signal, and which learners step now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from adaptkd._registry import Registry
from adaptkd.comm import LOCAL, Communicator
from adaptkd.errors import ConfigError
from adaptkd.methods.spec import MethodSpec, NetworkNeeds, Roster, check_roster

__all__ = [
    "StepIn",
    "StepOut",
    "MethodContext",
    "Method",
    "MethodParams",
    "register_method",
    "method_class",
    "list_methods",
    "build_method",
    "check_method",
    "example_networks",
    "warmup_factor",
]


class MethodParams(BaseModel):
    """Base of every method's options (``method:`` keys other than ``name``)."""

    model_config = ConfigDict(extra="forbid")


#: a method's option model (``Method[KDParams]`` reads ``self.params`` as ``KDParams``)
P = TypeVar("P", bound=MethodParams)


@dataclass
class StepIn:
    """Everything a method sees in one step.

    Attributes:
        x: the augmented input batch [B, ...].
        y: int64 targets [B].
        epoch: current epoch, counted from 1 (as the reference trainers do).
        step: global optimisation step, counted from 0.
        logits: {network name: logits [B, C]} for every network (learners and frozen teachers),
            float32.
        feats: {network name: {tap name: tensor}} for the taps the method asked for.
    """

    x: Tensor
    y: Tensor
    epoch: int
    step: int
    logits: dict[str, Tensor]
    feats: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class StepOut:
    """What a method returns.

    Attributes:
        losses: {learner: {term: unweighted 0-d loss}}.
        weights: {learner: {term: weight (float or 0-d tensor)}}; a term without a weight has 1.
        logits: {learner: logits} used for training accuracy.
        signals: {name: 0-d (or small) tensor} — every adaptive quantity, logged at the interval.
        stepping: the learners whose optimiser steps this iteration, as a Python set (None = all).
    """

    losses: dict[str, dict[str, Tensor]]
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)
    logits: dict[str, Tensor] = field(default_factory=dict)
    signals: dict[str, Tensor] = field(default_factory=dict)
    stepping: set[str] | None = None

    def weight(self, learner: str, term: str) -> Any:
        return self.weights.get(learner, {}).get(term, 1.0)


@dataclass
class MethodContext:
    """What a method may know when it is built.

    Attributes:
        networks: {name: module} — every network (learners first: ``student``, trainable
            teachers, peers; then frozen teachers).
        learners: names of the trainable networks.
        frozen: names of the frozen teachers.
        arches: {name: architecture string}.
        num_classes: number of classes.
        epochs: total epochs.
        steps_per_epoch: optimiser steps per epoch.
        sample_input: a small float batch on the device (for probing feature shapes).
        inputs: {frozen teacher: ``sample_input`` converted to that teacher's input spec}; see
            :meth:`sample_for`.
        seed, rank, world_size: for seeded, per-rank random draws.
        comm: reductions across ranks (the identity on one process); methods never call
            ``torch.distributed`` themselves.
        device: torch device.
    """

    networks: dict[str, nn.Module]
    learners: list[str]
    frozen: list[str]
    arches: dict[str, str]
    num_classes: int
    epochs: int
    steps_per_epoch: int
    sample_input: Tensor
    inputs: dict[str, Tensor] = field(default_factory=dict)
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    comm: Communicator = LOCAL

    def sample_for(self, name: str) -> Tensor:
        """The sample batch as network ``name`` sees it (a teacher: converted to its input spec)."""
        return self.inputs.get(name, self.sample_input)

    def probe_features(self, name: str, taps: list[str]) -> dict[str, Tensor]:
        """Run network ``name`` once on ``sample_input`` (no grad, mode preserved) and return taps."""
        from adaptkd.taps import FeatureTaps

        net = self.networks[name]
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), FeatureTaps(net, taps, detach=True) as t:
                net(self.sample_for(name))
        finally:
            net.train(was_training)
        return dict(t.outputs)


class Method(nn.Module, Generic[P]):
    """Base class of every method, generic in its option model.

    Subclasses (``class KD(Method[KDParams])``) set ``Params`` (their option model), ``task_terms``
    (names of task-loss terms; every other term is a distillation term for the balancer) and implement
    :meth:`forward`.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    task_terms: frozenset[str] = frozenset({"ce"})  # an instance may set its own (compose)
    #: "offline": frozen teachers, the student learns; "online": several learners train together.
    kind: ClassVar[str] = "offline"

    def __init__(self, params: P, ctx: MethodContext) -> None:
        super().__init__()
        self.params: P = params
        self.ctx_learners = list(ctx.learners)
        self.ctx_frozen = list(ctx.frozen)

    # -- the method's declaration and configuration-time checks ----------------------------
    #: what the method declares about itself (networks, example, epoch signals, families)
    spec: ClassVar[MethodSpec] = MethodSpec()

    @classmethod
    def network_needs(cls, params: P) -> NetworkNeeds:
        """The networks the method takes with these options (default: ``spec.networks``)."""
        return cls.spec.networks

    @classmethod
    def check_networks(cls, params: P, roster: Roster) -> None:
        """Method-specific checks of the roster beyond the counts (raise ConfigError naming the field)."""
        return None

    @classmethod
    def check_training(cls, params: P, *, epochs: int, balancer: str) -> None:
        """Checks of the options against the schedule and the balancer (raise ConfigError)."""
        return None

    @classmethod
    def check(cls, params: P, roster: Roster, *, epochs: int, balancer: str) -> None:
        """Every configuration-time check of the validated ``params``: the method's own, then the counts."""
        cls.check_networks(params, roster)
        check_roster(cls.name, cls.network_needs(params), roster)
        cls.check_training(params, epochs=epochs, balancer=balancer)

    # -- per-step interface ------------------------------------------------------------------
    def taps(self) -> dict[str, list[str]]:
        """{network name: [module paths]} the engine should capture each step."""
        return {}

    def logit_networks(self) -> set[str]:
        """Names of the networks whose logits this method reads (default: every network).

        The engine refuses, by name, a backbone without a classifier among them before training.
        """
        return set(self.ctx_learners) | set(self.ctx_frozen)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Which learner's optimiser trains this method's own parameters (default: the student)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return {"student": params} if params else {}

    def forward(self, inp: StepIn) -> StepOut:  # pragma: no cover - abstract
        raise NotImplementedError

    def epoch_summary(self, reduced: dict[str, Any]) -> dict[str, Any]:
        """The epoch record's fields from the engine's reductions of ``spec.signals``.

        ``reduced``: {signal name: Python float (0-d signals) or list of floats (vector signals)},
        empty when no training step ran. Default: each as ``train/<signal>``. A pure function of
        its input: the engine, not the method, accumulates over the epoch.
        """
        return {f"train/{k}": v for k, v in reduced.items()}

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint (tensors belong in buffers/state_dict)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        return None


METHODS: Registry[type[Method]] = Registry("method", set_name=True)


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""
    return METHODS.register(name)


def list_methods() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def build_method(name: str, options: dict[str, Any], ctx: MethodContext) -> Method:
    cls = method_class(name)
    return cls(cls.Params.model_validate(options), ctx)


def check_method(name: str, options: dict[str, Any], roster: Roster, *, epochs: int, balancer: str) -> None:
    """Validate method ``name``'s options and check them and ``roster`` (ConfigError naming the field)."""
    cls = method_class(name)
    try:
        params = cls.Params.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"method {name!r}: invalid options: {exc.errors()[0].get('msg', exc)}") from None
    cls.check(params, roster, epochs=epochs, balancer=balancer)


def example_networks(name: str) -> tuple[int, int, int]:
    """(frozen teachers, trainable teachers, peers) of method ``name``'s example run (``spec.example``;
    a count the example leaves open is the minimum the method needs with the example's options)."""
    cls = method_class(name)
    ex = cls.spec.example
    needs = cls.network_needs(cls.Params.model_validate(dict(ex.options)))
    pick = [(ex.frozen, needs.frozen), (ex.trainable, needs.trainable), (ex.peers, needs.peers)]
    frozen, trainable, peers = (given if given is not None else count[0] for given, count in pick)
    return frozen, trainable, peers


def warmup_factor(epoch: int, warmup: float) -> float:
    """``min(epoch / warmup, 1)`` with epochs counted from 1 (warmup 0 means no warm-up)."""
    if warmup <= 0:
        return 1.0
    return min(epoch / warmup, 1.0)
