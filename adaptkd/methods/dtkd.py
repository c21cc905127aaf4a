"""``dtkd``: dynamic temperature KD (JinYu1998/DTKD ``DTKD.py``; ``docs/methods/logit.md``).

Total: ``min(epoch / warmup, 1) · (α·L_dtkd + β·L_kd) + γ·CE`` (epochs from 1; the CE term is
not warmed up), with L_dtkd = mean_i T^s_i·T^t_i·KL_i at per-sample temperatures from the max
logits and L_kd the vanilla KD term at the reference T. Defaults: α 3, β 1, γ (ce_weight) 1,
T 4, warm-up 20. ``sharpness: logsumexp`` is the paper's stated variant; ``guard: false`` is the
authors' arithmetic unchanged (see :func:`adaptkd.losses.dtkd_temperatures`).

Signals each logging step: ``dtkd/{student,teacher}_T_{mean,min,max}`` and ``dtkd/guarded``;
per epoch the same as ``train/dtkd/...`` (mean over steps, min, max, guarded total).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from adaptkd.constraints import Epochs, Temperature, Weight
from adaptkd.losses import dtkd_loss_parts, kd_loss
from adaptkd.methods.base import Method, MethodParams, StepIn, StepOut, register_method, warmup_factor
from adaptkd.methods.common import teacher_logits
from adaptkd.methods.compose import DTKD_REDUCTIONS, dtkd_signals
from adaptkd.methods.spec import LOGITS, Example, MethodSpec


class DTKDParams(MethodParams):
    temperature: Temperature = 4.0
    alpha: Weight = 3.0
    beta: Weight = 1.0
    ce_weight: Weight = 1.0
    warmup_epochs: Epochs = 20.0
    sharpness: Literal["max", "logsumexp"] = "max"
    guard: bool = True


@register_method("dtkd")
class DTKD(Method[DTKDParams]):
    Params = DTKDParams
    spec = MethodSpec(example=Example({"warmup_epochs": 2}),
                      signals={f"dtkd/{k}": v for k, v in DTKD_REDUCTIONS.items()}, family="logit", figures="dtkd",
                      cacheable=LOGITS, speed_target=("kd", 1.03))

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s = inp.logits["student"]
        t = teacher_logits(inp, self.ctx_frozen)
        parts = dtkd_loss_parts(s, t, p.temperature, sharpness=p.sharpness, guard=p.guard)
        losses = {"dtkd": parts.loss, "kd": kd_loss(s, t, p.temperature), "ce": F.cross_entropy(s, inp.y)}
        warm = warmup_factor(inp.epoch, p.warmup_epochs)
        weights = {"dtkd": p.alpha * warm, "kd": p.beta * warm, "ce": p.ce_weight}
        signals = dtkd_signals(parts, "dtkd")
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s}, signals=signals)
