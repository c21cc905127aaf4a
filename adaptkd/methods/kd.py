"""``kd``: Hinton knowledge distillation (mdistiller ``KD.py``; ``docs/methods/logit.md``).

Total: ``ce_weight · CE(s, y) + kd_weight · T² · mean_i KL(p_t ‖ p_s)``; defaults 0.1 / 0.9, T=4.
"""

from __future__ import annotations

import torch.nn.functional as F

from adaptkd.constraints import Temperature, Weight
from adaptkd.losses import kd_loss
from adaptkd.methods.base import Method, MethodParams, StepIn, StepOut, register_method
from adaptkd.methods.common import teacher_logits
from adaptkd.methods.spec import LOGITS, MethodSpec


class KDParams(MethodParams):
    temperature: Temperature = 4.0
    ce_weight: Weight = 0.1
    kd_weight: Weight = 0.9


@register_method("kd")
class KD(Method[KDParams]):
    Params = KDParams
    spec = MethodSpec(family="logit", cacheable=LOGITS, speed_target=("floor", 1.05))

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s = inp.logits["student"]
        t = teacher_logits(inp, self.ctx_frozen)
        losses = {"ce": F.cross_entropy(s, inp.y), "kd": kd_loss(s, t, p.temperature)}
        weights = {"ce": p.ce_weight, "kd": p.kd_weight}
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s})
