"""Stand-ins that say what to pass: a method's context and step input whose unknown fields explain
themselves when a method reads them (a Distiller built without ``epochs=``, ``example_input=``...);
:func:`has_epoch_schedule` says whether a method reads the epoch at all."""

from __future__ import annotations

from typing import Any, ClassVar

from adaptkd.distiller.output import DistillerError
from adaptkd.methods import MethodContext, StepIn

__all__ = ["ExplainedContext", "StepInNoEpoch", "has_epoch_schedule"]


class ExplainedContext(MethodContext):
    """A MethodContext whose unknown fields (None) raise a clear error when a method reads them."""

    _hints: ClassVar[dict[str, str]] = {
        "epochs": "it schedules over the whole run: pass epochs= and steps_per_epoch= to the Distiller",
        "steps_per_epoch": "it schedules over the whole run: pass epochs= and steps_per_epoch= to the Distiller",
        "sample_input": "it measures feature shapes when it is built: pass example_input= (a small batch shaped "
                        "like your training inputs) to the Distiller",
        "num_classes": "it needs the number of classes: pass num_classes= to the Distiller",
    }

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value is None and name in ExplainedContext._hints:
            method = object.__getattribute__(self, "__dict__").get("method_name", "?")
            raise DistillerError(f"method {method!r} needs `{name}`: {ExplainedContext._hints[name]}")
        return value

    def __repr__(self) -> str:
        return f"MethodContext(learners={self.learners}, frozen={self.frozen})"


class StepInNoEpoch(StepIn):
    """A StepIn for a step whose epoch the Distiller was not told; reading ``epoch`` explains what to pass."""

    def __getattribute__(self, name: str) -> Any:
        if name == "epoch":
            method = object.__getattribute__(self, "__dict__").get("method_name", "?")
            raise DistillerError(
                f"method {method!r} reads the epoch (its warm-up or stages count epochs from 1), but the Distiller "
                "was not told it: pass epoch= to each call, call distiller.set_epoch(epoch) when an epoch starts, "
                "or give steps_per_epoch= when you build the Distiller"
            )
        return object.__getattribute__(self, name)


def has_epoch_schedule(options: Any) -> bool:
    """True when an option named ``*epoch*`` (a warm-up, a stage) is set anywhere in the method's options."""
    if isinstance(options, dict):
        return any(("epoch" in str(k) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)
                   or has_epoch_schedule(v) for k, v in options.items())
    if isinstance(options, (list, tuple)):
        return any(has_epoch_schedule(v) for v in options)
    return False
