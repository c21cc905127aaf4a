"""``unic``: multi-teacher distillation (UNIC, Sariyildiz et al., ECCV 2024; ``docs/methods/unic.md``).

Per frozen teacher t, the student's tapped blocks feed a **ladder of projectors** (separate class-
and patch-token ladders, one Linear→GELU→Linear per block, outputs summed); the teacher's class
and patch tokens are **standardised** with EMA statistics (momentum on a per-iteration cosine
schedule 1 → 0.001); the per-image loss ``L[t, b]`` (``unic_pair_loss``) is aggregated with
**teacher dropping** (each image's highest-loss teacher kept, the others dropped with probability
p, detached weights normalised over the batch). Optional CE / KD terms train the student's head.

Total: ``unic_weight · Σ_{t,b} w[t,b]·L[t,b] + ce_weight · CE + kd_weight · T²·KL(mean teacher)``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from adaptkd.constraints import InitStd, Multiplier, Probability, Temperature, Weight
from adaptkd.errors import ConfigError
from adaptkd.losses import kd_loss, standardize, teacher_drop_weights
from adaptkd.losses.tokens import STD_EPS, unic_pair_loss
from adaptkd.methods._unic_parts import Ladder, gathered_moments, token_grid, tokens_of
from adaptkd.methods.base import Method, MethodContext, MethodParams, StepIn, StepOut, register_method
from adaptkd.methods.common import teacher_logits
from adaptkd.methods.spec import Example, MethodSpec, Roster
from adaptkd.taps import input_of


class UNICParams(MethodParams):
    #: student blocks feeding the ladder: module paths or indices into the student's `tap_blocks`
    #: (negative from the end); None = every tap block (the reference: every ViT block).
    student_blocks: list[int | str] | None = None
    #: {teacher name: module path} whose output gives that teacher's tokens; default: a ViT's
    #: final LayerNorm `norm` (the reference's x_norm targets), a CNN's last tap block.
    teacher_taps: dict[str, str] = Field(default_factory=dict)
    hidden_mult: Multiplier = 1.0  # projector hidden width / block width
    last_hidden_mult: Multiplier = 4.0  # the same on the last block (reference 3072/768)
    init_std: InitStd = 0.02
    standardize: bool = True
    momentum_start: Probability = 1.0
    momentum_end: Probability = 0.001
    drop_prob: Probability = 0.5
    drop_normalize: Literal["global", "per_image"] = "global"
    unic_weight: Weight = 1.0
    ce_weight: Weight = 1.0
    kd_weight: Weight = 0.0
    temperature: Temperature = 4.0


def unic_momentum(step: int, total: int, start: float = 1.0, end: float = 0.001) -> float:
    """Standardiser momentum at iteration ``step`` of ``total``: ``end + ½(start − end)(1 + cos(π·i/total))``.

    The reference's per-iteration cosine schedule (no warm-up); steps past the end keep the last value.
    """
    i = min(max(step, 0), max(total - 1, 0))
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * i / max(total, 1)))


def _config_error(msg: str) -> Exception:
    return ConfigError(msg)


@register_method("unic")
class UNIC(Method[UNICParams]):
    Params = UNICParams
    spec = MethodSpec(
        example=Example({"drop_prob": 0.5}, frozen=2),  # two teachers, so that teacher dropping has something to drop
        signals={"unic/loss/*": "mean", "unic/kept/*": "mean"}, family="unic", figures="unic",
        speed_target=("floor", 1.15),
    )

    @classmethod
    def check_networks(cls, params: UNICParams, roster: Roster) -> None:
        teachers = list(roster.teachers)
        unknown = sorted(set(params.teacher_taps) - set(teachers))
        if unknown:
            raise _config_error(f"field `method.teacher_taps`: unknown teacher(s) {unknown}; the "
                                f"teachers are {teachers}")

    def __init__(self, params: UNICParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        p = params
        if ctx.world_size > 1 and p.ce_weight == 0 and p.kd_weight == 0:
            raise _config_error("field `method.ce_weight`: with ce_weight and kd_weight 0 the student's head gets no "
                                "gradient, which DDP (find_unused_parameters off) refuses; keep ce_weight > 0 under "
                                "torchrun, or train label-free on one process")
        self.teachers = list(ctx.frozen)
        student = ctx.networks["student"]
        self.blocks = self._student_blocks(student, p.student_blocks)
        try:
            probe = ctx.probe_features("student", self.blocks)
        except KeyError as exc:
            raise _config_error(f"field `method.student_blocks`: {exc.args[0]}") from None
        feats = [probe[b] for b in self.blocks]
        if any(f.dim() != feats[0].dim() or f.dim() not in (3, 4) for f in feats):
            raise _config_error(f"field `method.student_blocks`: the blocks {self.blocks} must all give tokens "
                                f"[B, 1+N, D] or all feature maps [B, C, H, W]; got {[tuple(f.shape) for f in feats]}")
        if feats[0].dim() == 3:
            ns = {f.shape[1] - 1 for f in feats}
            if len(ns) != 1 or 0 in ns:
                raise _config_error(f"field `method.student_blocks`: token counts differ or are empty: "
                                    f"{[tuple(f.shape) for f in feats]}")
            self.grid = token_grid(student, ns.pop())
            self.student_grid: tuple[int, int] | None = self.grid
        else:
            self.grid = (int(feats[-1].shape[-2]), int(feats[-1].shape[-1]))
            self.student_grid = None
        in_dims = [int(f.shape[-1] if f.dim() == 3 else f.shape[1]) for f in feats]
        hidden = [max(1, round(p.hidden_mult * d)) for d in in_dims]
        hidden[-1] = max(1, round(p.last_hidden_mult * in_dims[-1]))

        # Teachers: what to tap, token layout and widths.
        self.t_tap: dict[str, str] = {}
        self.t_grid: dict[str, tuple[int, int] | None] = {}
        self.t_head: dict[str, str | None] = {}
        cls_dims, patch_dims = [], []
        for name in self.teachers:
            net = ctx.networks[name]
            tap = p.teacher_taps.get(name) or self._default_tap(name, net)
            head = getattr(net, "head_name", None)
            try:  # the tap's output and the head's input, in one no-grad forward in eval mode
                probe = ctx.probe_features(name, [tap, input_of(head)] if head else [tap])
            except KeyError as exc:
                raise _config_error(f"field `method.teacher_taps`: {name}: {exc.args[0]}") from None
            out, head_in = probe[tap], (probe[input_of(head)] if head else None)
            if out.dim() == 3:
                self.t_grid[name], self.t_head[name] = token_grid(net, out.shape[1] - 1), None
                cls_dims.append(int(out.shape[-1]))
                patch_dims.append(int(out.shape[-1]))
            elif out.dim() == 4:
                use_head = head_in is not None and head_in.dim() == 2
                self.t_grid[name], self.t_head[name] = None, head if use_head else None
                cls_dims.append(int(head_in.shape[1]) if use_head and head_in is not None else int(out.shape[1]))
                patch_dims.append(int(out.shape[1]))
            else:
                raise _config_error(f"teacher {name!r}: tap {tap!r} gives {tuple(out.shape)}; need tokens [B, 1+N, D] "
                                    "or a feature map [B, C, H, W] (set method.teacher_taps)")
            self.t_tap[name] = tap
        # Each CNN teacher's class token is its pooled feature: the input of its classifier head,
        # a tap the engine captures during its (single, no-grad) teacher forward (see taps()).

        self.cls_ladder = Ladder(in_dims, hidden, cls_dims, p.init_std)
        self.patch_ladder = Ladder(in_dims, hidden, patch_dims, p.init_std)
        self._keys = {n: re.sub(r"\W", "_", n) for n in self.teachers}
        for n, dc, dp in zip(self.teachers, cls_dims, patch_dims):
            k = self._keys[n]
            self.register_buffer(f"stats_{k}_cls_mean", torch.zeros(1, dc))
            self.register_buffer(f"stats_{k}_cls_std", torch.ones(1, dc))
            self.register_buffer(f"stats_{k}_patch_mean", torch.zeros(1, 1, dp))
            self.register_buffer(f"stats_{k}_patch_std", torch.ones(1, 1, dp))
        self.total_steps = max(1, ctx.epochs * ctx.steps_per_epoch)
        self._all_reduce = ctx.comm.sum if ctx.comm.world_size > 1 else None  # statistics over every rank's batch
        self._gen = torch.Generator(device=ctx.device)
        self._gen.manual_seed(ctx.seed + ctx.rank)

    # -- construction helpers ---------------------------------------------------------------
    @staticmethod
    def _student_blocks(student: nn.Module, wanted: list[int | str] | None) -> list[str]:
        taps = list(getattr(student, "tap_blocks", []) or [])
        if wanted is None:
            if not taps:
                raise _config_error("field `method.student_blocks`: the student has no `tap_blocks`; list module paths")
            return taps
        out: list[str] = []
        for b in wanted:
            if isinstance(b, int):
                if not -len(taps) <= b < len(taps):
                    raise _config_error(f"field `method.student_blocks`: index {b} is outside the student's "
                                        f"{len(taps)} tap blocks {taps}")
                b = taps[b]
            if b not in out:
                out.append(b)
        if not out:
            raise _config_error("field `method.student_blocks`: empty list; give at least one block")
        return out

    @staticmethod
    def _default_tap(name: str, net: nn.Module) -> str:
        modules = dict(net.named_modules())
        if getattr(net, "final_tokens", None):  # an adapted ViT-style model's final normalised tokens
            return str(net.final_tokens)
        if hasattr(net, "patch_grid") and isinstance(modules.get("norm"), nn.LayerNorm):
            return "norm"
        taps = list(getattr(net, "tap_blocks", []) or [])
        if not taps:
            raise _config_error(f"field `method.teacher_taps`: teacher {name!r} has no `tap_blocks`; "
                                f"name the module to tap")
        return taps[-1]

    # -- the method -------------------------------------------------------------------------
    def taps(self) -> dict[str, list[str]]:
        return {"student": list(self.blocks),
                **{n: [t] + ([input_of(h)] if (h := self.t_head[n]) else []) for n, t in self.t_tap.items()}}

    def logit_networks(self) -> set[str]:
        return set(self.ctx_learners) | (set(self.teachers) if self.params.kd_weight > 0 else set())

    def momentum(self, step: int) -> float:
        if not self.training:
            return 0.0
        return unic_momentum(step, self.total_steps, self.params.momentum_start, self.params.momentum_end)

    def _standardize(self, name: str, kind: str, x: Tensor, m: float) -> Tensor:
        mean = getattr(self, f"stats_{self._keys[name]}_{kind}_mean")
        std = getattr(self, f"stats_{self._keys[name]}_{kind}_std")
        with torch.no_grad():
            if m == 0.0:  # eval / momentum 0: the state is used, not changed
                return (x - mean) / (std + STD_EPS)
            bm, bs, count = gathered_moments(x, self._all_reduce)
            y, new_mean, new_std = standardize(x, mean, std, m, stats=(bm, bs))
            ok = count >= 2  # one row has no unbiased std: keep the state (the reference stores NaN)
            mean.copy_(torch.where(ok, new_mean, mean))
            std.copy_(torch.where(ok, new_std, std))
        return y

    def teacher_tokens(self, name: str, inp: StepIn) -> tuple[Tensor, Tensor]:
        """(class [B, Dc], patch [B, N, Dp]) targets of one teacher, on the student's grid (not standardised)."""
        feat = inp.feats[name][self.t_tap[name]]
        cls, patch = tokens_of(feat, self.t_grid[name], self.grid)
        head = self.t_head[name]
        if head is not None:
            cls = inp.feats[name][input_of(head)].float()
        return cls, patch

    def forward(self, inp: StepIn) -> StepOut:
        p = self.params
        s = inp.logits["student"]
        sf = inp.feats["student"]
        toks = [tokens_of(sf[b], self.student_grid, self.grid) for b in self.blocks]
        out_cls = self.cls_ladder([c for c, _ in toks])
        out_patch = self.patch_ladder([q for _, q in toks])
        m = self.momentum(inp.step) if p.standardize else 0.0
        per_teacher = []
        for i, name in enumerate(self.teachers):
            t_cls, t_patch = self.teacher_tokens(name, inp)
            if p.standardize:
                t_cls = self._standardize(name, "cls", t_cls, m)
                t_patch = self._standardize(name, "patch", t_patch, m)
            per_teacher.append(unic_pair_loss(out_cls[i], out_patch[i], t_cls, t_patch))
        losses = torch.stack(per_teacher)  # [K, B]
        draws = torch.rand(losses.shape, generator=self._gen, device=losses.device, dtype=losses.dtype)
        w = teacher_drop_weights(losses, draws, p.drop_prob, p.drop_normalize)
        terms = {"unic": (w * losses).sum()}
        weights: dict[str, Any] = {"unic": p.unic_weight}
        if p.ce_weight > 0:
            terms["ce"], weights["ce"] = F.cross_entropy(s, inp.y), p.ce_weight
        if p.kd_weight > 0:
            terms["kd"], weights["kd"] = kd_loss(s, teacher_logits(inp, self.teachers), p.temperature), p.kd_weight
        signals = self._signals(losses.detach(), w, m)
        return StepOut(losses={"student": terms}, weights={"student": weights}, logits={"student": s}, signals=signals)

    def _signals(self, losses: Tensor, w: Tensor, m: float) -> dict[str, Tensor]:
        loss_t, kept_t, coeff_t = losses.mean(1), (w > 0).to(losses.dtype).mean(1), w.sum(1)
        sig = {"unic/momentum": torch.tensor(m)}
        for i, n in enumerate(self.teachers):
            sig[f"unic/loss/{n}"] = loss_t[i]
            sig[f"unic/kept/{n}"] = kept_t[i]
            sig[f"unic/coeff/{n}"] = coeff_t[i]
        return sig

    def epoch_summary(self, reduced: dict[str, Any]) -> dict[str, Any]:
        """Per-teacher epoch means of the loss and the kept fraction, as ``unic/epoch_<key>/<teacher>``."""
        return {f"unic/epoch_{key}/{n}": reduced[f"unic/{key}/{n}"]
                for key in ("loss", "kept") for n in self.teachers if f"unic/{key}/{n}" in reduced}

    # -- checkpointed state besides the buffers -----------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"drop_generator": self._gen.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "drop_generator" in state:
            self._gen.set_state(state["drop_generator"].cpu())
