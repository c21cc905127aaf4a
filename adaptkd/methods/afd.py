"""``afd``: attention-based feature distillation (Ji et al., AAAI 2021; ``specs/rtk.md`` §2).

Teacher layers query, student layers answer: ``α[b, t, s]`` = softmax over student layers of
``(q_t · W_t k_s + p_t · p_s)/√d``; values are spatial attention maps (student maps pooled to the
teacher's size); ``L_AFD = Σ_t mean_b Σ_s α·D``. Total ``ce_weight·CE + kd_weight·KD(T) +
afd_weight·L_AFD`` = CE + 0.9·KD(T=4) + 200·AFD by default, as the authors' code. The attention
module trains with the student's optimiser (weight decay included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from adaptkd.losses import afd_loss, attention_map_distances, kd_loss
from adaptkd.methods._attention import LayerAttention, default_taps, gather, probe_shapes, require_batch, require_one_teacher
from adaptkd.methods.base import Method, MethodContext, MethodParams, StepIn, StepOut, register_method


class AFDParams(MethodParams):
    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(0.9, ge=0)
    afd_weight: float = Field(200.0, ge=0)
    qk_dim: int = Field(128, ge=1)
    student_taps: list[str] | None = None  # default: the student's tap_blocks
    teacher_taps: list[str] | None = None  # default: the teacher's tap_blocks
    feature_relu: bool = False  # ReLU on tapped features (reproduces the reference's WRN features)


@register_method("afd")
class AFD(Method):
    Params = AFDParams

    def __init__(self, params: AFDParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.teacher = ctx.frozen[0]
        self.s_taps = default_taps(ctx, "student", params.student_taps, "student_taps")
        self.t_taps = default_taps(ctx, self.teacher, params.teacher_taps, "teacher_taps")
        s_shapes = probe_shapes(ctx, "student", self.s_taps, "student_taps")
        t_shapes = probe_shapes(ctx, self.teacher, self.t_taps, "teacher_taps")
        self.attention = LayerAttention([c for c, _, _ in t_shapes], [c for c, _, _ in s_shapes], params.qk_dim)

    @classmethod
    def check_networks(cls, cfg) -> None:
        super().check_networks(cfg)
        require_one_teacher(cls.name, cfg)

    def taps(self) -> dict[str, list[str]]:
        return {"student": self.s_taps, self.teacher: self.t_taps}

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s, t = inp.logits["student"], inp.logits[self.teacher]
        require_batch(s)
        fs = gather(inp.feats["student"], self.s_taps, p.feature_relu)
        ft = gather(inp.feats[self.teacher], self.t_taps, p.feature_relu, detach=True)
        att = self.attention(ft, fs)  # [B, T, S], softmax over student layers
        afd = afd_loss(att, attention_map_distances(fs, ft))
        losses = {"ce": F.cross_entropy(s, inp.y), "kd": kd_loss(s, t, p.temperature), "afd": afd}
        weights = {"ce": p.ce_weight, "kd": p.kd_weight, "afd": p.afd_weight}
        with torch.no_grad():
            entropy = torch.special.entr(att.detach()).sum(2).mean()
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s},
                       signals={"afd/attention_entropy": entropy})
