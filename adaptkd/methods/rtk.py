"""``rtk``: representative teacher keys — a **reconstruction** (``docs/methods/features.md``).

The RTK paper's body was not available; this follows the reconstruction in the spec, every
uncertain choice an option. Student layers query teacher keys (``orientation: student_query``):
``A[b, s, t]`` = softmax over teacher layers of ``(q_s · W_s k_t + p_s · p_t)/√d`` (AFD's attention
with the roles swapped). Each teacher key's influence is the mean of the ``k`` largest attention
values it receives; keys whose influence is at or above the threshold are kept (hard mask, no
gradient; top-1 fallback), and the loss is AFD's attention-weighted distance over the kept keys,
optionally renormalised. Total ``ce_weight·CE + kd_weight·KD(T) + rtk_weight·L_RTK`` with AFD's
defaults (1, 0.9, T=4, 200). With ``threshold: 0``, ``renormalise: false`` and
``orientation: teacher_query`` it is exactly ``afd``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator

from adaptkd.constraints import Temperature, Threshold, Weight, Width
from adaptkd.losses import attention_map_distances, kd_loss, rtk_influence, rtk_loss, select_keys
from adaptkd.methods._attention import LayerAttention, LayerPairMethod
from adaptkd.methods.base import MethodContext, MethodParams, StepIn, StepOut, register_method
from adaptkd.methods.spec import MethodSpec, NetworkNeeds


class RTKParams(MethodParams):
    temperature: Temperature = 4.0
    ce_weight: Weight = 1.0
    kd_weight: Weight = 0.9
    rtk_weight: Weight = 200.0
    qk_dim: Width = 128
    student_taps: list[str] | None = None  # default: the student's tap_blocks
    teacher_taps: list[str] | None = None  # default: the teacher's tap_blocks
    feature_relu: bool = False
    orientation: Literal["student_query", "teacher_query"] = "student_query"
    k: Width = 2  # top-k values averaged per teacher key (min(k, S) used)
    influence_scope: Literal["batch", "sample"] = "batch"
    threshold_rule: Literal["fixed", "relative", "top_m"] = "fixed"
    threshold: Threshold | None = None  # fixed: τ (None → 1/T); relative: multiplier (None → 1)
    relative_to: Literal["mean", "median"] = "mean"
    top_m: Width | None = None  # keys kept by the top_m rule
    renormalise: bool = False

    @model_validator(mode="after")
    def _top_m_given(self) -> "RTKParams":
        if self.threshold_rule == "top_m" and self.top_m is None:
            raise ValueError("threshold_rule 'top_m' needs `top_m` (how many teacher keys to keep)")
        return self


@register_method("rtk")
class RTK(LayerPairMethod[RTKParams]):
    Params = RTKParams
    spec = MethodSpec(networks=NetworkNeeds(frozen=(1, 1)), signals={"rtk/kept_per_key": "mean"},
                      hidden=("rtk/kept_per_key",), family="feature", figures="rtk", speed_target=("kd", 1.15))

    def __init__(self, params: RTKParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        s_ch, t_ch = self.s_channels, self.t_channels
        if params.threshold_rule == "top_m" and params.top_m is not None and params.top_m > len(t_ch):
            raise ValueError(f"method option `top_m`: {params.top_m} exceeds the {len(t_ch)} teacher taps")
        self.student_queries = params.orientation == "student_query"
        q, k = (s_ch, t_ch) if self.student_queries else (t_ch, s_ch)
        self.attention = LayerAttention(q, k, params.qk_dim)

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s, t, fs, ft = self.pair(inp)
        if self.student_queries:
            att = self.attention(fs, ft)  # [B, S, T], softmax over teacher layers
            att_st, dist = att, attention_map_distances(fs, ft).transpose(1, 2)
        else:
            att = self.attention(ft, fs)  # [B, T, S], softmax over student layers (AFD's layout)
            att_st, dist = att.transpose(1, 2), attention_map_distances(fs, ft)
        with torch.no_grad():
            influence = rtk_influence(att_st.detach(), p.k, p.influence_scope)
            keep = select_keys(influence, p.threshold_rule, p.threshold, p.top_m or 1, p.relative_to)
        loss = rtk_loss(att, dist, keep, teacher_axis=2 if self.student_queries else 1, renormalise=p.renormalise)
        kd = {"kd": kd_loss(s, t, p.temperature)} if t is not None else {}  # none from a backbone (kd_weight 0)
        losses = {"ce": F.cross_entropy(s, inp.y), **kd, "rtk": loss}
        weights = {"ce": p.ce_weight, "kd": p.kd_weight, "rtk": p.rtk_weight}
        with torch.no_grad():
            kept = keep.to(att.dtype)
            kept_per_key = kept if kept.dim() == 1 else kept.mean(0)
            signals = {
                "rtk/influence": influence if influence.dim() == 1 else influence.mean(0),
                "rtk/kept_fraction": kept_per_key.mean(),
                "rtk/attention_entropy": torch.special.entr(att.detach()).sum(2).mean(),
                "rtk/kept_per_key": kept_per_key,  # hidden: only its epoch mean is logged
            }
        return StepOut(losses={"student": losses}, weights={"student": weights}, logits={"student": s},
                       signals=signals)

    def epoch_summary(self, reduced: dict[str, Any]) -> dict[str, Any]:
        """Mean kept fraction over the epoch, and how often each teacher tap was kept."""
        per_key = reduced.get("rtk/kept_per_key")
        if not per_key:
            return {}
        out = {"rtk/kept_fraction_epoch": sum(per_key) / len(per_key)}
        out.update({f"rtk/kept/{name}": v for name, v in zip(self.t_taps, per_key)})
        return out
