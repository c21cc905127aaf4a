"""``ce``: the student alone, trained with cross-entropy. Also how teachers are trained."""

from __future__ import annotations

import torch.nn.functional as F

from adaptkd.constraints import Fraction
from adaptkd.methods.base import Method, MethodParams, StepIn, StepOut, register_method
from adaptkd.methods.spec import MethodSpec, NetworkNeeds


class CEParams(MethodParams):
    label_smoothing: Fraction = 0.0


@register_method("ce")
class CE(Method[CEParams]):
    """Plain cross-entropy on the labels: ``CE(s, y)``."""

    Params = CEParams
    spec = MethodSpec(networks=NetworkNeeds(frozen=(0, None)), family="logit")

    def forward(self, inp: StepIn) -> StepOut:
        s = inp.logits["student"]
        ce = F.cross_entropy(s, inp.y, label_smoothing=self.params.label_smoothing)
        return StepOut(losses={"student": {"ce": ce}}, logits={"student": s})
