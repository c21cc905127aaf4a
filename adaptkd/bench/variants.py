"""What ``adaptkd bench`` times, one step at a time: a method through the engine
(:class:`MethodVariant`), the physical floor of its networks (:class:`FloorVariant`), the method
alone on fixed logits and features (:class:`AloneVariant`) and the method in a hand-written loop
over :class:`adaptkd.Distiller` (:class:`DistillerVariant`)."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Variant:
    name: str
    kind: str  # "method" | "floor" | "alone" | "distiller"

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class MethodVariant(_Variant):
    kind = "method"

    def __init__(self, name: str, method: str, balancer: dict[str, Any], setup: dict[str, Any], trainer, xb: Tensor,
                 yb: Tensor, epoch: int) -> None:
        self.name, self.method, self.balancer, self.setup = name, method, balancer, setup
        self.trainer, self.xb, self.yb, self.epoch = trainer, xb, yb, epoch
        self.steps = 0
        self.paused = 0  # steps in which some learner did not step (SwitOKD's expert mode)

    def step(self) -> None:
        tr = self.trainer
        out, _ = tr.train_step(self.xb, self.yb, self.epoch, 0.5)
        tr.global_step += 1
        self.steps += 1
        if out.stepping is not None and len(set(tr.learners) - set(out.stepping)) > 0:
            self.paused += 1

    def check(self) -> None:
        self.trainer.raise_if_nonfinite()


class FloorVariant(_Variant):
    """Frozen forwards (no grad) + learners' forward/backward of CE + optimiser steps."""

    kind = "floor"

    def __init__(self, name: str, trainer, xb: Tensor, yb: Tensor) -> None:
        from adaptkd.engine.networks import build_network, freeze
        from adaptkd.engine.optim import build_optimizer
        from adaptkd.engine.runtime import maybe_compile

        self.name = name
        self.key = setup_key(trainer)
        dev = trainer.device

        def fresh(n: str) -> nn.Module:  # the same architecture, built anew (no hooks of the method's taps)
            net = build_network(trainer.net_cfgs[n], trainer.num_classes, trainer.data.in_channels, field=n).to(dev)
            return net.to(memory_format=torch.channels_last) if trainer.cfg.run.channels_last else net  # type: ignore[call-overload, unused-ignore]  # Module.to takes memory_format; torch's stub omits it

        self.frozen = [freeze(fresh(n)) for n in trainer.frozen]
        self.learners = [fresh(n).train() for n in trainer.learners]
        self.opts = [build_optimizer([p for p in net.parameters() if p.requires_grad], trainer.optim_cfgs[n])
                     for n, net in zip(trainer.learners, self.learners)]
        self.fwd_frozen, self.fwd_learners = list(self.frozen), list(self.learners)
        if trainer.cfg.run.compile:
            self.fwd_frozen = [maybe_compile(m, f"floor.{n}") for n, m in zip(trainer.frozen, self.frozen)]
            self.fwd_learners = [maybe_compile(m, f"floor.{n}") for n, m in zip(trainer.learners, self.learners)]
        x = fixed_input(trainer, xb)
        views = trainer.distiller.teacher_inputs
        with torch.no_grad():  # each teacher's own input (size, normalisation), prepared outside the timed step
            xt = views(x) if views is not None else {}
        self.x_frozen = [xt.get(n, x) for n in trainer.frozen]
        self.x, self.y = x, yb.to(dev)
        self.autocast = trainer.autocast
        self.scaler = torch.amp.GradScaler(dev.type, enabled=trainer.precision == "fp16")

    def step(self) -> None:
        with self.autocast():
            for net, xf in zip(self.fwd_frozen, self.x_frozen):
                with torch.no_grad():
                    net(xf)
            outs = [net(self.x) for net in self.fwd_learners]
        loss = F.cross_entropy(outs[0].float(), self.y)
        for o in outs[1:]:
            loss = loss + F.cross_entropy(o.float(), self.y)
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in self.opts:
            self.scaler.step(opt)
        self.scaler.update()

    def check(self) -> None:
        return None


class AloneVariant(_Variant):
    """The method alone: its forward and the balancer's backward on the logits and features of one
    step, held fixed (the learners' as leaf tensors, so the backward stops there; no network runs):
    what the method adds to its floor, free of the networks' noise."""

    kind = "alone"

    def __init__(self, mv: MethodVariant) -> None:
        tr = mv.trainer
        self.name, self.of, self.d, self.epoch, self.steps = f"{mv.name}[alone]", mv.name, tr.distiller, mv.epoch, 0
        self.x, self.y = fixed_input(tr, mv.xb), mv.yb.to(tr.device)
        with torch.no_grad():
            logits, feats = tr.forward_all(self.x)
        learners = set(self.d.learner_names)

        def leaf(v: Any, grad: bool) -> Any:
            if not isinstance(v, Tensor):
                return v
            v = v.detach().clone()
            return v.requires_grad_() if grad and v.is_floating_point() else v

        self.logits = {k: leaf(v, k in learners) for k, v in logits.items()}
        self.feats = {n: {k: leaf(v, n in learners) for k, v in f.items()} for n, f in feats.items()}
        self.params = {n: [t for t in (self.logits.get(n), *self.feats.get(n, {}).values())
                           if isinstance(t, Tensor) and t.requires_grad] for n in self.d.learner_names}
        self.zero = [t for ts in self.params.values() for t in ts] + list(self.d.method.parameters())

    def step(self) -> None:
        from adaptkd.balance import BackwardContext
        from adaptkd.methods import StepIn

        for t in self.zero:
            t.grad = None
        d = self.d
        out = d.method(StepIn(x=self.x, y=self.y, epoch=self.epoch, step=self.steps, logits=self.logits,
                              feats=self.feats))
        stepping = [n for n in d.learner_names if out.stepping is None or n in out.stepping]
        params = cast(dict[str, list[nn.Parameter]], self.params)  # leaf tensors: only their gradients are read
        d.balancer.backward(out, BackwardContext(params=params, extra_params=d.extra_params,
                                                 task_terms=d.method.task_terms, stepping=stepping,
                                                 step=self.steps, comm=d.comm))
        self.steps += 1


class DistillerVariant(_Variant):
    """The method in a hand-written loop over :class:`adaptkd.Distiller` (the trainer's, with its
    optimisers) on the already augmented batch: ``out = distiller(x, y)``, ``distiller.backward(out)``,
    ``distiller.step(optimisers, out)`` — the engine's step without augmentation, learning-rate
    schedule and non-finite checks."""

    kind = "distiller"

    def __init__(self, mv: MethodVariant) -> None:
        tr = mv.trainer
        self.name, self.of, self.d, self.epoch = f"{mv.name}[distiller]", mv.name, tr.distiller, mv.epoch
        self.optims, self.autocast, self.scaler = tr.optims, tr.autocast, tr.scaler
        self.x, self.y = fixed_input(tr, mv.xb), mv.yb.to(tr.device)

    def step(self) -> None:
        with self.autocast():
            out = self.d(self.x, self.y, epoch=self.epoch)
        for opt in self.optims.values():
            opt.zero_grad(set_to_none=True)
        self.d.backward(out, scaler=self.scaler)
        self.d.step(self.optims, out, scaler=self.scaler)


def fixed_input(trainer, xb: Tensor) -> Tensor:
    """The batch as the networks see it (normalised, no random augmentation; channels_last if set)."""
    x = trainer.eval_aug(xb.to(trainer.device))
    if trainer.cfg.run.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _net_label(net) -> str:
    args = ",".join(f"{k}={v}" for k, v in net.args.items())
    return net.arch + (f"({args})" if args else "")


def setup_key(trainer) -> str:
    frozen = "+".join(_net_label(trainer.net_cfgs[n]) for n in trainer.frozen) or "-"
    learners = "+".join(_net_label(trainer.net_cfgs[n]) for n in trainer.learners)
    return f"{frozen}→{learners}"
