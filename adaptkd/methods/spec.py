"""What a method declares about itself, once, in its own file (``spec = MethodSpec(...)``).

The rest of the package reads the spec from the method registry: the config check and the engine
check the networks against :attr:`MethodSpec.networks` (one message format,
:func:`check_roster`); the determinism, fault, bench and fingerprint tooling build a tiny run
from :attr:`MethodSpec.example`; the engine reduces the signals named in
:attr:`MethodSpec.signals` over each epoch (:class:`adaptkd.engine.meter.SignalMeter`); the
report draws the figures of :attr:`MethodSpec.figures`. This module imports nothing from the
package but the errors.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from adaptkd.errors import ConfigError

__all__ = ["Count", "NetworkNeeds", "Example", "MethodSpec", "Roster", "Reduce", "REDUCTIONS", "check_roster"]

#: How a signal reduces over an epoch: mean over steps, sum, min, max, the last step's value, or
#: the fraction of steps on which it was non-zero.
Reduce = Literal["mean", "sum", "min", "max", "last", "fraction"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "min", "max", "last", "fraction")

#: (minimum, maximum) number of networks of one kind; maximum None means no limit.
Count = tuple[int, "int | None"]


@dataclass(frozen=True)
class NetworkNeeds:
    """How many networks of each kind a method takes besides the student."""

    frozen: Count = (1, None)  # frozen teachers (``teachers`` without ``trainable``)
    trainable: Count = (0, 0)  # trainable teachers (``teachers`` with ``trainable: true``)
    peers: Count = (0, 0)  # online peers (``peers``)


@dataclass(frozen=True)
class Example:
    """A tiny run of the method: its options (warm-ups shortened so every term acts within 2-3
    epochs) and its networks (counts of frozen teachers, trainable teachers and peers; None
    means the minimum the method needs)."""

    options: Mapping[str, Any] = field(default_factory=dict)
    frozen: int | None = None
    trainable: int | None = None
    peers: int | None = None


#: ``MethodSpec.cacheable`` of a method that reads only its frozen teachers' logits
LOGITS: frozenset[str] = frozenset({"logits"})


@dataclass(frozen=True)
class MethodSpec:
    """A method's declaration.

    Attributes:
        networks: the networks it takes (see :meth:`Method.network_needs` for options that change it).
        example: tiny options and networks for the tooling (tests, bench, fingerprint).
        signals: {signal-name pattern (``fnmatch``, e.g. ``"switokd/*/gap"``): reduction}; the
            engine reduces each matching step signal over the epoch and hands the results to
            :meth:`Method.epoch_summary`. Signals not listed are logged per step only.
        hidden: patterns of signals reduced over the epoch but not written to step records.
        family: the method family (``logit``, ``feature``, ``online``, ``unic``): the kill-and-resume
            test runs one method of each.
        figures: the report's figure family drawn for its runs ("" = the generic panel only).
        cacheable: the teacher outputs a teacher cache can replay for it (``adaptkd.replay``):
            ``LOGITS`` when the frozen teachers' logits are all it reads; empty when its teacher
            signal cannot be stored per view (feature maps, token sets, teachers that learn) and
            a ``teachers_cache`` is refused.
        speed_target: the step time ``adaptkd bench`` holds it to: (reference, max ratio), the
            reference being ``floor`` (its networks' own forward/backward), ``kd`` or ``dml``.
    """

    networks: NetworkNeeds = field(default_factory=NetworkNeeds)
    example: Example = field(default_factory=Example)
    signals: Mapping[str, Reduce] = field(default_factory=dict)
    hidden: tuple[str, ...] = ()
    family: str = "logit"
    figures: str = ""
    cacheable: frozenset[str] = frozenset()
    speed_target: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.signals.items() if v not in REDUCTIONS}
        if bad:
            raise ValueError(f"signal reductions must be one of {', '.join(REDUCTIONS)}, got {bad}")

    def reduction(self, signal: str) -> str | None:
        """The reduction of step signal ``signal`` (the first matching pattern), or None."""
        for pattern, how in self.signals.items():
            if fnmatch.fnmatchcase(signal, pattern):
                return how
        return None

    def is_hidden(self, signal: str) -> bool:
        return any(fnmatch.fnmatchcase(signal, p) for p in self.hidden)


@dataclass(frozen=True)
class Roster:
    """The networks of a run besides the student, as the method sees them when it is checked.

    ``teachers`` in config order with ``trainable`` flags; ``peers`` in order.
    """

    teachers: tuple[str, ...] = ()
    trainable: tuple[bool, ...] = ()
    peers: tuple[str, ...] = ()

    @property
    def frozen_teachers(self) -> list[str]:
        return [t for t, tr in zip(self.teachers, self.trainable) if not tr]

    @property
    def trainable_teachers(self) -> list[str]:
        return [t for t, tr in zip(self.teachers, self.trainable) if tr]


def _quantity(count: Count, noun: str) -> str:
    lo, hi = count
    words = {0: "no", 1: "one", 2: "two", 3: "three"}
    plural = f"{noun}s"
    if hi is not None and lo == hi:
        return f"exactly {words.get(lo, lo)} {noun if lo == 1 else plural}" if lo else f"no {plural}"
    if hi is None:
        return f"at least {words.get(lo, lo)} {noun if lo == 1 else plural}"
    return f"{lo} to {hi} {plural}"


def _outside(n: int, count: Count) -> bool:
    lo, hi = count
    return n < lo or (hi is not None and n > hi)


def check_roster(method: str, needs: NetworkNeeds, roster: Roster) -> None:
    """Raise :class:`ConfigError` naming the field when ``roster`` does not fit ``needs``."""
    if needs.trainable == (0, 0):
        for i, tr in enumerate(roster.trainable):
            if tr:
                raise ConfigError(f"field `teachers.{i}.trainable`: method {method!r} distils from frozen teachers; "
                                  "set it false (online KD: method dml or switokd)")
    if needs.frozen == (0, 0):
        for i, tr in enumerate(roster.trainable):
            if not tr:
                raise ConfigError(
                    f"field `teachers.{i}.trainable`: method {method!r} trains every network online from scratch; "
                    "set `trainable: true` (to distil from a frozen teacher use kd, dkd or dtkd)"
                )
    kinds = [("teachers", needs.frozen, len(roster.frozen_teachers), "frozen teacher"),
             ("teachers", needs.trainable, len(roster.trainable_teachers), "trainable teacher"),
             ("peers", needs.peers, len(roster.peers), "online peer")]
    for where, count, n, noun in kinds:
        if _outside(n, count):
            raise ConfigError(f"field `{where}`: method {method!r} takes {_quantity(count, noun)}, the config has {n}")
