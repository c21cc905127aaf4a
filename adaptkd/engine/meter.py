"""Epoch metering of a method's signals: each declared signal reduced over the epoch's steps.

The method names its signals and their reductions in ``spec.signals``
(:class:`adaptkd.methods.spec.MethodSpec`); :class:`SignalMeter` accumulates them on the device
after every training step that counts (a step skipped for non-finite values does not) and reads
them once per epoch. Means divide the float32 sums in float64 on the host.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptkd.methods.spec import MethodSpec

__all__ = ["SignalMeter"]


class SignalMeter:
    """Reduce the step signals ``spec.signals`` names (mean, sum, min, max, last, fraction) over an epoch."""

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec
        self._plan: dict[str, str | None] = {}  # signal name → reduction (None: not reduced)
        self.reset()

    def reset(self) -> None:
        self._acc: dict[str, Tensor] = {}
        self.steps = 0

    def state_dict(self) -> dict[str, Any]:
        """The running reductions (CPU tensors), for a checkpoint written inside an epoch."""
        return {"steps": self.steps, "acc": {k: v.detach().cpu() for k, v in self._acc.items()}}

    def load_state_dict(self, state: dict[str, Any] | None, device: torch.device | str = "cpu") -> None:
        """Continue the epoch a checkpoint was written in (``None``: start a new epoch)."""
        self.reset()
        if state:
            self.steps = int(state["steps"])
            self._acc = {k: v.to(device) for k, v in state["acc"].items()}
            for k in self._acc:
                self._how(k)

    def _how(self, name: str) -> str | None:
        if name not in self._plan:
            self._plan[name] = self.spec.reduction(name)
        return self._plan[name]

    def update(self, signals: dict[str, Tensor]) -> None:
        """Add one step's signals (0-d or 1-d device tensors; no host synchronisation)."""
        for name, v in signals.items():
            how = self._how(name)
            if how is None:
                continue
            v = v.detach().float()
            if how == "fraction":
                v = (v != 0).float()
            prev = self._acc.get(name)
            if prev is None or how == "last":
                self._acc[name] = v.clone()
            elif how == "min":
                self._acc[name] = torch.minimum(prev, v)
            elif how == "max":
                self._acc[name] = torch.maximum(prev, v)
            else:  # mean, sum, fraction: a running float32 sum
                self._acc[name] = prev + v
        self.steps += 1

    def summary(self) -> dict[str, Any]:
        """{signal: float (0-d) or list of floats (1-d)} over the steps since the last summary; resets."""
        if not self._acc or not self.steps:
            self.reset()
            return {}
        names = list(self._acc)
        sizes = [self._acc[n].numel() for n in names]
        flat = torch.cat([self._acc[n].reshape(-1) for n in names]).tolist()  # the one host read
        out: dict[str, Any] = {}
        i = 0
        for name, n in zip(names, sizes):
            how = self._plan[name]
            vals = [v / self.steps if how in ("mean", "fraction") else v for v in flat[i:i + n]]
            out[name] = vals[0] if self._acc[name].dim() == 0 else vals
            i += n
        self.reset()
        return out
