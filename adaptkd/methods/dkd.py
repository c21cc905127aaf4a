"""``dkd``: decoupled KD (mdistiller ``DKD.py``; ``docs/methods/logit.md``).

Total: ``ce_weight · CE(s, y) + min(epoch / warmup, 1) · (α·TCKD + β·NCKD)``; the CE term is
not warmed up. Defaults: ce_weight 1, α 1, β 8, T 4, warm-up 20 epochs (epochs from 1).
"""

from __future__ import annotations

import torch.nn.functional as F

from adaptkd.constraints import PositiveEpochs, Temperature, Weight
from adaptkd.losses import dkd_loss
from adaptkd.methods.base import Method, MethodParams, StepIn, StepOut, register_method, warmup_factor
from adaptkd.methods.common import teacher_logits
from adaptkd.methods.spec import LOGITS, Example, MethodSpec


class DKDParams(MethodParams):
    temperature: Temperature = 4.0
    ce_weight: Weight = 1.0
    alpha: Weight = 1.0
    beta: Weight = 8.0
    warmup_epochs: PositiveEpochs = 20.0


@register_method("dkd")
class DKD(Method[DKDParams]):
    Params = DKDParams
    spec = MethodSpec(example=Example({"warmup_epochs": 2}), family="logit", cacheable=LOGITS,
                      speed_target=("floor", 1.05))

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s = inp.logits["student"]
        t = teacher_logits(inp, self.ctx_frozen)
        losses = {
            "ce": F.cross_entropy(s, inp.y),
            "dkd": dkd_loss(s, t, inp.y, alpha=p.alpha, beta=p.beta, temperature=p.temperature),
        }
        weights = {"ce": p.ce_weight, "dkd": warmup_factor(inp.epoch, p.warmup_epochs)}
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s})
