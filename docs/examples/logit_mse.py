"""A complete method in one file: logit matching by mean squared error (Ba & Caruana, 2014).

The student regresses the teacher's logits: ``ce_weight · CE(s, y) + mse_weight · mean_ic (s_ic − t_ic)²``.
docs/writing-a-method.md walks through this file; tests/test_writing_a_method.py trains it.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from adaptkd.methods import Example, Method, MethodParams, MethodSpec, StepIn, StepOut, register_method
from adaptkd.methods.common import teacher_logits
from adaptkd.methods.spec import LOGITS


# 1. The loss: a pure function of tensors (in a package of your own, or adaptkd/losses/ for a built-in).
def logit_mse_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over batch and classes of the squared logit difference; student [B, C], teacher [B, C] → 0-d."""
    return (student - teacher.detach()).pow(2).mean()


# 2. The options: a pydantic model; every key of the config's `method:` section but `name`.
class LogitMSEParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    mse_weight: float = Field(0.5, ge=0)


# 3. The method: its spec, and one forward per step returning unweighted terms and their weights.
@register_method("logit_mse")
class LogitMSE(Method):
    Params = LogitMSEParams
    spec = MethodSpec(
        example=Example({"mse_weight": 0.1}),  # the tiny run the test and fingerprint tooling train
        signals={"logit_mse/gap": "mean"},  # the engine logs its epoch mean as train/logit_mse/gap
        family="logit",
        cacheable=LOGITS,  # it reads only the teacher's logits
    )

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s = inp.logits["student"]
        t = teacher_logits(inp, self.ctx_frozen)
        losses = {"ce": F.cross_entropy(s, inp.y), "mse": logit_mse_loss(s, t)}
        weights = {"ce": p.ce_weight, "mse": p.mse_weight}
        gap = (s.detach() - t).abs().mean()  # a device tensor: no host synchronisation in the step
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s},
                       signals={"logit_mse/gap": gap})
