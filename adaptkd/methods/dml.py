"""``dml``: deep mutual learning (Zhang et al., CVPR 2018), the baseline of ``docs/methods/online.md``.

The SwitOKD machinery with switching off: every learner (the student, every trainable teacher,
every peer) minimises ``CE + Σ_{j≠i} KL(p_j ‖ p_i)`` with the peers' outputs detached (τ = 1,
batchmean) and every optimiser steps every iteration. With two networks this is exactly
SwitOKD's learning mode. ``peer_average: true`` divides the KL sum by K − 1 (the DML paper's form
for K > 2 networks; with two networks both forms are the same).
"""

from __future__ import annotations

from adaptkd.constraints import Temperature
from adaptkd.errors import ConfigError
from adaptkd.methods.base import MethodContext, MethodParams, register_method
from adaptkd.methods.spec import Roster
from adaptkd.methods.switokd import OnlineMethod


class DMLParams(MethodParams):
    temperature: Temperature = 1.0
    peer_average: bool = False


@register_method("dml")
class DML(OnlineMethod[DMLParams]):
    Params = DMLParams

    @classmethod
    def check_networks(cls, params: DMLParams, roster: Roster) -> None:
        if not roster.teachers and not roster.peers:
            raise ConfigError("field `peers`: method 'dml' needs at least two networks: add a trainable teacher "
                              "(`teachers: [{arch: ..., trainable: true}]`) or a peer (`peers: [{arch: ...}]`)")

    def __init__(self, params: DMLParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        ln = list(ctx.learners)
        if ctx.frozen or len(ln) < 2:
            raise ConfigError(f"method dml needs two or more learners and no frozen teacher, got learners "
                              f"{ln}, frozen {ctx.frozen}")
        weight = 1.0 / (len(ln) - 1) if params.peer_average else 1.0
        self._wire({n: [m for m in ln if m != n] for n in ln}, [], kl_weight=weight)
