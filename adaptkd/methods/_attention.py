"""Layer-level query/key attention shared by ``afd`` and ``rtk`` (``docs/methods/features.md``).

One side's layers ask (queries), the other side's layers answer (keys):

* query of layer i: ``BN(Linear(GAP(f_i)))`` — no ReLU;
* key of layer j: ``ReLU(BN(Linear(GAP(f_j))))``;
* a bilinear map per *query* layer from one ``Linear(d → d·n_q)`` + ``BatchNorm1d`` applied to every
  key (the BatchNorm sees the ``B·n_k`` stacked keys): ``k̃_{j,i}``;
* learnable layer-position embeddings ``p_q [n_q, d]``, ``p_k [n_k, d]`` (Xavier normal);
* logits ``e[b, i, j] = (q_i · k̃_{j,i} + p_i · p_j) / √d`` and the softmax over keys ``j``.

AFD: queries = teacher layers, keys = student layers. RTK (default orientation): queries =
student layers, keys = teacher layers. Module names are the same in both, so an RTK run with
``orientation: teacher_query`` has exactly AFD's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptkd.methods._taps import default_taps, probe_shapes
from adaptkd.methods.base import Method, MethodContext, P, StepIn


class _Proj(nn.Module):
    """``Linear → BatchNorm1d (→ ReLU)``."""

    def __init__(self, cin: int, cout: int, relu: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout)
        self.bn = nn.BatchNorm1d(cout)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.linear(x))
        return F.relu(y) if self.relu else y


class LayerAttention(nn.Module):
    """Attention of ``n_q`` query layers over ``n_k`` key layers → ``[B, n_q, n_k]``.

    Args:
        query_channels: channel count of each query-side feature.
        key_channels: channel count of each key-side feature.
        qk_dim: ``d``, the query/key width (AFD: 128).
    """

    def __init__(self, query_channels: Sequence[int], key_channels: Sequence[int], qk_dim: int = 128) -> None:
        super().__init__()
        self.n_q, self.n_k, self.qk_dim = len(query_channels), len(key_channels), int(qk_dim)
        d = self.qk_dim
        self.query = nn.ModuleList([_Proj(c, d, relu=False) for c in query_channels])
        self.key = nn.ModuleList([_Proj(c, d, relu=True) for c in key_channels])
        self.bilinear = _Proj(d, d * self.n_q, relu=False)
        self.pos_query = nn.Parameter(torch.empty(self.n_q, d))
        self.pos_key = nn.Parameter(torch.empty(self.n_k, d))
        nn.init.xavier_normal_(self.pos_query)
        nn.init.xavier_normal_(self.pos_key)

    def logits(self, query_feats: Sequence[Tensor], key_feats: Sequence[Tensor]) -> Tensor:
        """Attention logits ``e [B, n_q, n_k]`` from ``[B, C, H, W]`` features."""
        b = query_feats[0].shape[0]
        q = torch.stack([p(f.mean((2, 3))) for p, f in zip(self.query, query_feats)], dim=1)  # [B, n_q, d]
        k = torch.stack([p(f.mean((2, 3))) for p, f in zip(self.key, key_feats)], dim=1)  # [B, n_k, d]
        kt = self.bilinear(k.reshape(b * self.n_k, self.qk_dim)).view(b, self.n_k, self.n_q, self.qk_dim)
        e = torch.einsum("bkqd,bqd->bqk", kt, q) + self.pos_query @ self.pos_key.t()
        return e / math.sqrt(self.qk_dim)

    def forward(self, query_feats: Sequence[Tensor], key_feats: Sequence[Tensor]) -> Tensor:
        """Attention weights ``[B, n_q, n_k]``: softmax over the key layers."""
        return F.softmax(self.logits(query_feats, key_feats), dim=2)


def gather(feats: dict[str, Tensor], taps: list[str], relu: bool, detach: bool = False) -> list[Tensor]:
    """The tapped features in tap order (ReLU applied when asked; detached for teachers)."""
    out = [feats[n].detach() if detach else feats[n] for n in taps]
    return [F.relu(f) for f in out] if relu else out


def require_batch(x: Tensor) -> None:
    """BatchNorm1d in training mode needs two samples (a static shape check, no sync)."""
    if x.shape[0] < 2:
        raise ValueError(
            "feature attention (BatchNorm1d) needs batches of at least 2 samples; "
            "set data.drop_last: true so that no 1-sample batch is formed"
        )


class LayerPairOptions(Protocol):
    """The options the layer-attention methods share (fields of both ``AFDParams`` and ``RTKParams``)."""

    student_taps: list[str] | None
    teacher_taps: list[str] | None
    kd_weight: float
    feature_relu: bool


class LayerPairMethod(Method[P]):
    """Base of the layer-attention methods (AFD, RTK): one frozen teacher; the student's and the
    teacher's tapped layers (options ``student_taps`` / ``teacher_taps``, default every tap block)
    and their channel counts, probed once at construction. :meth:`pair` reads one step's logits
    and features (teacher features detached)."""

    def __init__(self, params: P, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        opts = self.pair_options
        self.teacher = ctx.frozen[0]
        self.s_taps = default_taps(ctx, "student", opts.student_taps, "student_taps")
        self.t_taps = default_taps(ctx, self.teacher, opts.teacher_taps, "teacher_taps")
        self.s_channels = [c for c, _, _ in probe_shapes(ctx, "student", self.s_taps, "student_taps")]
        self.t_channels = [c for c, _, _ in probe_shapes(ctx, self.teacher, self.t_taps, "teacher_taps")]

    @property
    def pair_options(self) -> LayerPairOptions:
        return cast(LayerPairOptions, self.params)

    def taps(self) -> dict[str, list[str]]:
        return {"student": self.s_taps, self.teacher: self.t_taps}

    def logit_networks(self) -> set[str]:
        return {"student"} | ({self.teacher} if self.pair_options.kd_weight > 0 else set())

    def pair(self, inp: StepIn) -> tuple[Tensor, Tensor | None, list[Tensor], list[Tensor]]:
        """(student logits, teacher logits (None for a backbone teacher), student features, detached teacher
        features)."""
        s, t = inp.logits["student"], inp.logits.get(self.teacher)
        require_batch(s)
        relu = self.pair_options.feature_relu
        fs = gather(inp.feats["student"], self.s_taps, relu)
        ft = gather(inp.feats[self.teacher], self.t_taps, relu, detach=True)
        return s, t, fs, ft
