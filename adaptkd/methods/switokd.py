"""``switokd``: switchable online KD (Qian et al., ECCV 2022; ``docs/methods/online.md``).

Every network trains from scratch. Each learner minimises ``CE + Σ KL(p_peer ‖ p_self)`` with
the peers' outputs detached (τ = 1, batchmean, weights 1). Once per step, from the pre-update
outputs, every teacher–student pair decides its mode (:func:`switokd_decision`):

- learning mode (``G ≤ δ`` or ``t ≥ s``): both step;
- expert mode (``G > δ`` and ``t < s``): the teacher pauses — its optimiser is not called at all
  (no momentum, no weight decay) while its forward still runs in train mode (BN statistics
  update, as in the reference); the student keeps learning from it.

Topologies (learners in config order: ``student``, ``teachers``, ``peers``):

- ``1T1S``: student S, teachers [T]. T: CE + KL(S); S: CE + KL(T).
- ``2T1S``: student S, teachers [T1, T2]. Tk: CE + KL(S) + KL(T_other), paused when its pair is in
  expert mode; S: CE + KL(T1) + KL(T2).
- ``1T2S``: student S1, teachers [T], peers [S2]. T: CE + KL(S1) + KL(S2), the KL to a student
  whose pair is in expert mode dropped; T steps unless both pairs are in expert mode (the
  reference still calls its optimiser then: ``reference_paused_step: true``).
  Sk: CE + KL(S_other) + KL(T).

Each pair uses its own ε. The reference code computes one pair's ε from the other pair's
distances (2T1S: pair 2 uses pair 1's ε; 1T2S: pair (T,S1) uses pair (T,S2)'s ε);
``reference_slip: true`` reproduces that. Deciding which optimisers step needs one host read of
the modes per step (the reference branches on the host too). DML (``dml``) is the same
machinery with no pairs, i.e. always in learning mode.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Protocol, cast

import torch
import torch.nn.functional as F

from adaptkd.constraints import Temperature
from adaptkd.errors import ConfigError
from adaptkd.losses.online import distillation_gap, label_distance, online_kl_loss, switokd_mode
from adaptkd.methods.base import Method, MethodContext, MethodParams, P, StepIn, StepOut, register_method
from adaptkd.methods.spec import Example, MethodSpec, NetworkNeeds, Roster

STATS = ("gap", "threshold", "epsilon", "t_dist", "s_dist", "expert")


class OnlineOptions(Protocol):
    """The option every online method has (``DMLParams``, ``SwitOKDParams``)."""

    temperature: float


class OnlineMethod(Method[P]):
    """Mutual learning among all learners with optional SwitOKD teacher–student pairs."""

    kind = "online"
    spec = MethodSpec(
        networks=NetworkNeeds(frozen=(0, 0), trainable=(0, None), peers=(0, None)),
        example=Example(trainable=1),
        signals={"switokd/*/paused": "fraction", "switokd/*": "mean"}, hidden=("switokd/*/paused",),
        family="online", figures="switokd",
    )

    def __init__(self, params: P, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.comm = ctx.comm

    def _wire(self, sources: dict[str, list[str]], pairs: list[tuple[str, str]], kl_weight: float = 1.0,
              slip: dict[int, int] | None = None) -> None:
        self.sources, self.pairs, self.kl_weight, self.slip = sources, pairs, kl_weight, dict(slip or {})
        self.pair_names = [f"{t}-{s}" for t, s in pairs]
        self.teacher_pairs: dict[str, list[int]] = {}
        for k, (t, _) in enumerate(pairs):
            self.teacher_pairs.setdefault(t, []).append(k)

    def _decide(self, z: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """[pairs, 6] detached rows (G, δ, ε, t, s, expert) from the pre-update logits."""
        tau = cast(OnlineOptions, self.params).temperature
        g = torch.stack([distillation_gap(z[t], z[s], tau) for t, s in self.pairs])
        td = torch.stack([label_distance(z[t], y, tau) for t, _ in self.pairs])
        sd = torch.stack([label_distance(z[s], y, tau) for _, s in self.pairs])
        if self.comm.world_size > 1:
            # One decision for the global batch, identical on every rank (DataParallel semantics).
            g, td, sd = self.comm.mean(torch.stack([g, td, sd]))
        eps, delta, expert = switokd_mode(g, td, sd)
        if self.slip:  # the reference's cross-pair ε (opt-in)
            eps = eps.clone()
            for k, j in self.slip.items():
                eps[k] = eps[j]
            eps, delta, expert = switokd_mode(g, td, sd, eps)
        return torch.stack([g, delta, eps, td, sd, expert.to(g.dtype)], dim=1)

    def forward(self, inp: StepIn) -> StepOut:
        tau, z, y = cast(OnlineOptions, self.params).temperature, inp.logits, inp.y
        losses, weights = {}, {}
        for n in self.ctx_learners:
            terms = {"ce": F.cross_entropy(z[n], y)}
            for src in self.sources[n]:
                terms[f"kl_{src}"] = online_kl_loss(z[n], z[src], tau)
            losses[n] = terms
            weights[n] = {k: (1.0 if k == "ce" else self.kl_weight) for k in terms}
        out = StepOut(losses=losses, weights=weights, logits={n: z[n] for n in self.ctx_learners})
        if not self.pairs:
            return out
        stats = self._decide(z, y)
        for k, name in enumerate(self.pair_names):
            for i, stat in enumerate(STATS):
                out.signals[f"switokd/{name}/{stat}"] = stats[k, i]
        for t, ks in self.teacher_pairs.items():  # paused: expert in every pair it teaches (hidden signal)
            out.signals[f"switokd/{t}/paused"] = stats[ks, -1].amin()
        flags = [v > 0.5 for v in stats[:, -1].tolist()]  # the one host read per step
        stepping = set(self.ctx_learners) - set(self.teacher_pairs)
        for t, ks in self.teacher_pairs.items():
            paused = all(flags[k] for k in ks)
            if not paused or getattr(self.params, "reference_paused_step", False):  # a SwitOKD option
                stepping.add(t)
            expert_students = {self.pairs[k][1] for k in ks if flags[k]}
            for term in weights[t]:
                if paused or term[3:] in expert_students:
                    weights[t][term] = 0.0
        out.stepping = stepping
        return out

    def epoch_summary(self, reduced: dict[str, Any]) -> dict[str, Any]:
        """Per pair the expert fraction and the mean of each statistic; per teacher its paused fraction."""
        if not self.pairs or not reduced:
            return {}
        rec: dict[str, Any] = {}
        for name in self.pair_names:
            rec[f"switokd/{name}/expert_frac"] = reduced[f"switokd/{name}/expert"]
            for stat in STATS[:-1]:
                rec[f"switokd/{name}/{stat}_mean"] = reduced[f"switokd/{name}/{stat}"]
        for t in self.teacher_pairs:
            rec[f"switokd/{t}/paused_frac"] = reduced[f"switokd/{t}/paused"]
        return rec


class SwitOKDParams(MethodParams):
    topology: Literal["1T1S", "2T1S", "1T2S"] = "1T1S"
    temperature: Temperature = 1.0
    reference_slip: bool = False
    reference_paused_step: bool = False


# topology: (trainable teachers, peers)
SHAPES = {"1T1S": (1, 0), "2T1S": (2, 0), "1T2S": (1, 1)}


@register_method("switokd")
class SwitOKD(OnlineMethod[SwitOKDParams]):
    Params = SwitOKDParams
    spec = replace(OnlineMethod.spec, speed_target=("dml", 1.0))

    @classmethod
    def network_needs(cls, params: SwitOKDParams) -> NetworkNeeds:
        nt, npr = SHAPES[params.topology]
        return NetworkNeeds(frozen=(0, 0), trainable=(nt, nt), peers=(npr, npr))

    @classmethod
    def check_networks(cls, params: SwitOKDParams, roster: Roster) -> None:
        p = params
        have = (len(roster.teachers), len(roster.peers))
        if have != SHAPES[p.topology]:
            fits = [k for k, v in SHAPES.items() if v == have]
            hint = f"set `method.topology: {fits[0]}`" if fits else "switokd supports 1T1S, 2T1S and 1T2S"
            nt, npr = SHAPES[p.topology]
            raise ConfigError(
                f"field `method.topology`: {p.topology} needs {nt} trainable teacher(s) and {npr} peer(s), "
                f"the config has {have[0]} teacher(s) and {have[1]} peer(s); {hint}"
            )
        if p.topology == "1T1S" and (p.reference_slip or p.reference_paused_step):
            raise ConfigError("field `method.reference_slip`/`method.reference_paused_step`: only for the "
                              "three-network topologies 2T1S and 1T2S")
        if p.reference_paused_step and p.topology != "1T2S":
            raise ConfigError("field `method.reference_paused_step`: only for topology 1T2S (the reference's "
                              "2T1S does not step a paused teacher)")

    def __init__(self, params: SwitOKDParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        ln = list(ctx.learners)
        if ctx.frozen or len(ln) != sum(SHAPES[params.topology]) + 1:
            raise ConfigError(f"method switokd ({params.topology}) got learners {ln} and frozen {ctx.frozen}")
        if params.topology == "1T1S":
            s, t = ln
            self._wire({s: [t], t: [s]}, [(t, s)])
        elif params.topology == "2T1S":
            s, t1, t2 = ln
            self._wire({s: [t1, t2], t1: [s, t2], t2: [s, t1]}, [(t1, s), (t2, s)],
                       slip={1: 0} if params.reference_slip else None)
        else:
            s1, t, s2 = ln
            self._wire({s1: [s2, t], s2: [s1, t], t: [s1, s2]}, [(t, s1), (t, s2)],
                       slip={0: 1} if params.reference_slip else None)
