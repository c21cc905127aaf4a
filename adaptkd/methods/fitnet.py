"""``fitnet``: FitNets hints (Romero et al., ICLR 2015) — regress a student layer onto a teacher layer.

A learned regressor (1×1 conv, BatchNorm and ReLU optional) maps the tapped student feature to the
teacher's channels; when the spatial sizes differ the student feature is first resized to the
teacher's (adaptive average pooling when larger, bilinear interpolation otherwise).

* One stage (default, as RepDistiller / mdistiller): ``ce_weight·CE + hint_weight·MSE +
  kd_weight·KD(T)``, defaults 1 / 100 / 0.
* Two stages (``stage1_epochs: N``, as the paper): for epochs 1..N the only term is
  ``hint_weight·MSE``, so only the student up to the hint layer and the regressor receive
  gradients (layers after it get none and are not stepped); from epoch N+1 the hint is dropped
  and the student trains with ``ce_weight·CE + kd_weight·KD(T)`` (set ``kd_weight`` for the
  paper's KD stage).
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from adaptkd.constraints import EpochIndex, Temperature, Weight
from adaptkd.errors import ConfigError
from adaptkd.losses import hint_loss, kd_loss
from adaptkd.methods._taps import middle_tap, probe_shapes
from adaptkd.methods.base import Method, MethodContext, MethodParams, StepIn, StepOut, register_method
from adaptkd.methods.spec import Example, MethodSpec, NetworkNeeds


class FitNetParams(MethodParams):
    ce_weight: Weight = 1.0
    hint_weight: Weight = 100.0
    kd_weight: Weight = 0.0
    temperature: Temperature = 4.0
    #: the one hinted layer pair, as module paths (one entry each; ``student_taps``/``teacher_taps``
    #: as in AFD and RTK); default: the middle entry of each network's tap_blocks
    student_taps: list[str] | None = Field(None, min_length=1, max_length=1)
    teacher_taps: list[str] | None = Field(None, min_length=1, max_length=1)
    regressor_bn: bool = True
    regressor_relu: bool = False
    stage1_epochs: EpochIndex = 0  # 0: one stage; N: hint-only pre-training for N epochs


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``[B, C, H, W]`` to ``size``: average pooling when shrinking, bilinear otherwise."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@register_method("fitnet")
class FitNet(Method[FitNetParams]):
    Params = FitNetParams
    spec = MethodSpec(networks=NetworkNeeds(frozen=(1, 1)), example=Example({"hint_weight": 10.0}), family="feature")

    def __init__(self, params: FitNetParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.teacher = ctx.frozen[0]
        s_given = params.student_taps[0] if params.student_taps else None
        t_given = params.teacher_taps[0] if params.teacher_taps else None
        self.s_tap = middle_tap(ctx, "student", s_given, "student_taps")
        self.t_tap = middle_tap(ctx, self.teacher, t_given, "teacher_taps")
        (cs, _, _), = probe_shapes(ctx, "student", [self.s_tap], "student_taps")
        (ct, ht, wt), = probe_shapes(ctx, self.teacher, [self.t_tap], "teacher_taps")
        self.size = (ht, wt)
        layers: list[nn.Module] = [nn.Conv2d(cs, ct, 1, bias=not params.regressor_bn)]
        if params.regressor_bn:
            layers.append(nn.BatchNorm2d(ct))
        if params.regressor_relu:
            layers.append(nn.ReLU())
        self.regressor = nn.Sequential(*layers)

    @classmethod
    def check_training(cls, params: FitNetParams, *, epochs: int, balancer: str) -> None:
        stage1 = params.stage1_epochs
        if stage1 and stage1 >= epochs:
            raise ConfigError(f"field `method.stage1_epochs`: {stage1} leaves no second stage (optim.epochs={epochs})")
        if stage1 and balancer != "fixed":
            raise ConfigError(f"field `balance.name`: two-stage fitnet (stage1_epochs={stage1}) has no task term in "
                              f"stage 1; use balance fixed")

    def taps(self) -> dict[str, list[str]]:
        return {"student": [self.s_tap], self.teacher: [self.t_tap]}

    def logit_networks(self) -> set[str]:
        return {"student"} | ({self.teacher} if self.params.kd_weight > 0 else set())

    def _hint(self, inp: StepIn) -> Tensor:
        regressed = self.regressor(resize_to(inp.feats["student"][self.s_tap], self.size))
        return hint_loss(regressed, inp.feats[self.teacher][self.t_tap].detach())

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s = inp.logits["student"]
        if inp.epoch <= p.stage1_epochs:
            return StepOut(losses={"student": {"hint": self._hint(inp)}}, weights={"student": {"hint": p.hint_weight}},
                           logits={"student": s})
        losses = {"ce": F.cross_entropy(s, inp.y)}
        weights = {"ce": p.ce_weight}
        if p.stage1_epochs == 0:
            losses["hint"] = self._hint(inp)
            weights["hint"] = p.hint_weight
        if p.kd_weight > 0:
            losses["kd"] = kd_loss(s, inp.logits[self.teacher], p.temperature)
            weights["kd"] = p.kd_weight
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s})
