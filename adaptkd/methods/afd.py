"""``afd``: attention-based feature distillation (Ji et al., AAAI 2021; ``docs/methods/features.md``).

Teacher layers query, student layers answer: ``α[b, t, s]`` = softmax over student layers of
``(q_t · W_t k_s + p_t · p_s)/√d``; values are spatial attention maps (student maps pooled to the
teacher's size); ``L_AFD = Σ_t mean_b Σ_s α·D``. Total ``ce_weight·CE + kd_weight·KD(T) +
afd_weight·L_AFD`` = CE + 0.9·KD(T=4) + 200·AFD by default, as the authors' code. The attention
module trains with the student's optimiser (weight decay included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptkd.constraints import Temperature, Weight, Width
from adaptkd.losses import afd_loss, attention_map_distances, kd_loss
from adaptkd.methods._attention import LayerAttention, LayerPairMethod
from adaptkd.methods.base import MethodContext, MethodParams, StepIn, StepOut, register_method
from adaptkd.methods.spec import MethodSpec, NetworkNeeds


class AFDParams(MethodParams):
    temperature: Temperature = 4.0
    ce_weight: Weight = 1.0
    kd_weight: Weight = 0.9
    afd_weight: Weight = 200.0
    qk_dim: Width = 128
    student_taps: list[str] | None = None  # default: the student's tap_blocks
    teacher_taps: list[str] | None = None  # default: the teacher's tap_blocks
    feature_relu: bool = False  # ReLU on tapped features (reproduces the reference's WRN features)


@register_method("afd")
class AFD(LayerPairMethod[AFDParams]):
    Params = AFDParams
    spec = MethodSpec(networks=NetworkNeeds(frozen=(1, 1)), family="feature", speed_target=("kd", 1.15))

    def __init__(self, params: AFDParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.attention = LayerAttention(self.t_channels, self.s_channels, params.qk_dim)

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s, t, fs, ft = self.pair(inp)
        att = self.attention(ft, fs)  # [B, T, S], softmax over student layers
        afd = afd_loss(att, attention_map_distances(fs, ft))
        kd = {"kd": kd_loss(s, t, p.temperature)} if t is not None else {}  # none from a backbone (kd_weight 0)
        losses = {"ce": F.cross_entropy(s, inp.y), **kd, "afd": afd}
        weights = {"ce": p.ce_weight, "kd": p.kd_weight, "afd": p.afd_weight}
        with torch.no_grad():
            entropy = torch.special.entr(att.detach()).sum(2).mean()
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s},
                       signals={"afd/attention_entropy": entropy})
