"""The :class:`Distiller` module: a student, its teachers and a method with its state; one call per step.

How it is built from its arguments or a config is :mod:`adaptkd.distiller.build`; this module holds
what it is and does: the learners and frozen teachers, the method, balancer and taps
(:meth:`Distiller._setup`), the optimiser groups, the step (:meth:`Distiller.forward`,
:meth:`Distiller.backward`, :meth:`Distiller.step`) and its saved state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adaptkd.balance import BackwardContext, Balancer, FixedBalance, build_balancer
from adaptkd.distiller.build import assemble, config_from_arguments, config_from_file, data_inputs
from adaptkd.distiller.context import StepInNoEpoch, has_epoch_schedule
from adaptkd.distiller.output import DistillerError, DistillOutput
from adaptkd.engine.meter import SignalMeter
from adaptkd.engine.roster import attach_taps
from adaptkd.methods import MethodContext, StepIn, build_method
from adaptkd.taps import FeatureTaps, _unwrap

__all__ = ["FORMAT", "Distiller"]

#: the format tag of the state a Distiller saves
FORMAT = "adaptkd.distiller/1"


class Distiller(nn.Module):
    """A student, its teachers and a method with its state, as one module.

    Args:
        student: any ``nn.Module`` mapping inputs ``[B, ...]`` to logits ``[B, C]``.
        teachers: ``nn.Module``s, zoo names (``"resnet32x4"``) or dicts of a config's network
            fields (``{"arch": "resnet32x4", "checkpoint": "t.pt"}``). For offline methods they are
            frozen here (eval mode, ``requires_grad=False``); for online methods (``dml``,
            ``switokd``) they are learners that train.
        method: a registered method name (``adaptkd.methods.list_methods()``).
        peers: extra online learners (``dml``, SwitOKD ``1T2S``).
        balance: ``None`` (the method's weights), a balancer name (``"gradient"``) or a dict
            ``{"name": "gradient", **options}``.
        example_input: a small batch like the training inputs; needed by methods that measure
            feature shapes when built (fitnet, afd, rtk, unic) and to build zoo-name networks.
        num_classes: classes (for zoo-name networks; inferred from the student on ``example_input``).
        epochs, steps_per_epoch: the run's length. With ``steps_per_epoch`` the Distiller counts
            the epoch itself (``step // steps_per_epoch + 1``); methods scheduled over the whole
            run (UNIC's standardiser momentum) need both.
        seed: seeds the method's own random draws (UNIC's teacher dropping).
        device: where to build (default: the student's device). Build on the device you train on:
            some method state (random generators) is created there.
        checkpoint_teachers: include the teachers' weights in ``state_dict()`` (off by default).
        teacher_inputs: optional module mapping a batch to ``{teacher name: that teacher's input}``
            for teachers trained on another input size or normalisation (e.g.
            :class:`adaptkd.engine.views.TeacherInputs`; :meth:`from_config` with ``data=`` builds it).
        **options: the method's options (``temperature=4``, ``warmup_epochs=20``...).
    """

    def __init__(
        self,
        student: nn.Module,
        teachers: Sequence[nn.Module | str | dict[str, Any]] = (),
        method: str = "kd",
        *,
        peers: Sequence[nn.Module | str | dict[str, Any]] = (),
        balance: str | dict[str, Any] | None = None,
        example_input: Tensor | None = None,
        num_classes: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        checkpoint_teachers: bool = False,
        teacher_inputs: nn.Module | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        cfg, given = config_from_arguments(student, teachers, peers, method, balance=balance, seed=seed, epochs=epochs,
                                           options=options)
        self._init_from_config(cfg, given, example_input=example_input, num_classes=num_classes,
                               epochs=epochs, steps_per_epoch=steps_per_epoch, device=device,
                               checkpoint_teachers=checkpoint_teachers, teacher_inputs=teacher_inputs)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        networks: Mapping[str, nn.Module] | None = None,
        data: Any = None,
        example_input: Tensor | None = None,
        num_classes: int | None = None,
        steps_per_epoch: int | None = None,
        device: torch.device | str | None = None,
        checkpoint_teachers: bool = False,
    ) -> Distiller:
        """Build from an experiment config (path, dict or :class:`~adaptkd.config.Config`).

        Its ``student``/``teachers``/``peers``, ``method``, ``balance``, ``optim`` (epochs and
        per-network optimiser overrides, see :meth:`build_optimizers`) and ``run.seed`` are used.
        ``networks`` passes modules by network name (``{"student": net}``) instead of building
        them from the zoo. ``data`` (the :class:`~adaptkd.data.DataBundle` you train on) tells the
        class count, the example input (its first 4 training images, normalised), the steps per
        epoch (``data.batch_size``, ``data.drop_last``, ``run.max_steps_per_epoch``) and what each
        frozen teacher is fed (a teacher trained on another input size or normalisation gets the
        batch converted, as in ``adaptkd train``).
        """
        cfg, given = config_from_file(config, networks)
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        if data is not None:
            example_input, num_classes, steps_per_epoch = data_inputs(data, cfg, example_input, num_classes,
                                                                      steps_per_epoch)
        self._init_from_config(cfg, given, example_input=example_input, num_classes=num_classes,
                               epochs=cfg.optim.epochs, steps_per_epoch=steps_per_epoch, device=device,
                               checkpoint_teachers=checkpoint_teachers, data=data)
        return self

    def _init_from_config(self, cfg: Any, given: dict[str, nn.Module], *, example_input: Tensor | None,
                          num_classes: int | None, epochs: int | None, steps_per_epoch: int | None,
                          device: torch.device | str | None, checkpoint_teachers: bool, data: Any = None,
                          teacher_inputs: nn.Module | None = None) -> None:
        from adaptkd.engine.networks import check_logit_sources

        parts = assemble(cfg, given, example_input=example_input, num_classes=num_classes, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, device=device, data=data, teacher_inputs=teacher_inputs)
        try:
            self._setup(parts.networks, learners=parts.learners, frozen=parts.frozen, method=cfg.method.name,
                        options=cfg.method.options(), balance=cfg.balance.name,
                        balance_options=cfg.balance.options(), ctx=parts.ctx, checkpoint_teachers=checkpoint_teachers,
                        teacher_inputs=parts.teacher_inputs)
            check_logit_sources(self.method, parts.networks, parts.net_cfgs)
        except DistillerError:
            raise
        except (ValueError, KeyError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            raise DistillerError(f"method {cfg.method.name!r} cannot be built for these networks: {msg}") from None
        self.steps_per_epoch = steps_per_epoch
        self.optim_config = cfg.optim
        self.optim_overrides = {n: dict(parts.net_cfgs[n].optim) for n in parts.learners if parts.net_cfgs[n].optim}

    @classmethod
    def from_networks(
        cls,
        networks: Mapping[str, nn.Module],
        *,
        learners: Sequence[str],
        frozen: Sequence[str],
        method: str,
        options: Mapping[str, Any],
        ctx: MethodContext,
        balance: str = "fixed",
        balance_options: Mapping[str, Any] | None = None,
        teacher_inputs: nn.Module | None = None,
        meter: bool = True,
    ) -> Distiller:
        """The engine's constructor: networks already built, placed and (teachers) frozen, and the
        method's context prepared. Errors of the method's own checks propagate unchanged
        (``ValueError``/``KeyError``); taps on unknown modules raise ``ConfigError``. ``meter=False``:
        the caller reduces the method's signals itself (the engine keeps skipped steps out)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(dict(networks), learners=list(learners), frozen=list(frozen), method=method, options=dict(options),
                    balance=balance, balance_options=dict(balance_options or {}), ctx=ctx, checkpoint_teachers=False,
                    teacher_inputs=teacher_inputs, meter=meter)
        self.steps_per_epoch = ctx.steps_per_epoch
        self.optim_config = None
        self.optim_overrides = {}
        return self

    def _setup(self, networks: dict[str, nn.Module], *, learners: list[str], frozen: list[str], method: str,
               options: dict[str, Any], balance: str, balance_options: dict[str, Any], ctx: MethodContext,
               checkpoint_teachers: bool, teacher_inputs: nn.Module | None = None, meter: bool = True) -> None:
        from adaptkd.config import ConfigError

        self.method_name = method
        self.learner_names = list(learners)
        self.frozen_names = list(frozen)
        self.learners = nn.ModuleDict({n: _unwrap(networks[n]) for n in learners})
        # Teachers are plain attributes, not submodules: out of state_dict (unless asked), never in
        # parameters(), never switched to train mode; moved with the Distiller by _apply.
        self._teachers: dict[str, nn.Module] = {n: _unwrap(networks[n]) for n in frozen}
        #: converts a batch into {teacher: its input} for teachers trained on another size/normalisation
        self.teacher_inputs = teacher_inputs.to(ctx.device) if teacher_inputs is not None else None
        self._backbones = {n for n in frozen if not getattr(_unwrap(networks[n]), "has_logits", True)}
        #: {name: module called in forward}: the given modules (compiled ones included), later DDP wrappers.
        self.forward_nets: dict[str, nn.Module] = {n: networks[n] for n in list(learners) + list(frozen)}
        self.method = build_method(method, options, ctx).to(ctx.device)
        self.balancer: Balancer = build_balancer(balance, balance_options).to(ctx.device)
        self.taps: dict[str, FeatureTaps] = attach_taps(self.method, networks, list(frozen), method_name=method)
        extra = self.method.param_groups()
        unknown = set(extra) - set(learners)
        if unknown:
            raise ConfigError(f"method parameters assigned to unknown learners {sorted(unknown)}")
        #: {learner: its network's trainable parameters}; {learner: the method parameters it trains}.
        self.params = {n: [p for p in self.learners[n].parameters() if p.requires_grad] for n in learners}
        self.extra_params = {n: list(extra.get(n, [])) for n in learners}
        self.checkpoint_teachers = checkpoint_teachers
        self.distributed = False
        self.world_size = ctx.world_size
        self.comm = ctx.comm
        self.global_step = 0
        self.epoch: int | None = None
        self._teacher_ids: set[int] = {id(p) for t in self._teachers.values() for p in t.parameters()}
        self._checked_optims: set[int] = set()
        #: the balancer takes its own gradients (``balance="gradient"``): :meth:`backward`, not ``out.loss.backward()``
        self.needs_own_backward = not isinstance(self.balancer, FixedBalance)
        self._epoch_scheduled = has_epoch_schedule(self.method.params.model_dump())
        #: the method's signals reduced over the epoch (None: the caller meters them, as the engine does)
        self.meter: SignalMeter | None = SignalMeter(self.method.spec) if meter else None

    # -- what trains ----------------------------------------------------------------------------
    @property
    def student(self) -> nn.Module:
        return self.learners[self.learner_names[0]]

    @property
    def teachers(self) -> dict[str, nn.Module]:
        """{name: frozen teacher} (online methods' teachers are learners)."""
        return dict(self._teachers)

    @property
    def kind(self) -> str:
        """``"offline"`` (frozen teachers) or ``"online"`` (every network learns)."""
        return type(self.method).kind

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """{learner: parameters its optimiser trains}: the network's trainable parameters plus the
        method's own (projectors, attention) assigned to it. Teachers never appear. Online methods
        need one optimiser per learner (:meth:`step` steps only the learners that step now)."""
        return {n: self.params[n] + self.extra_params[n] for n in self.learner_names}

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """Every trainable parameter (all learners and the method's modules), each once."""
        seen: set[int] = set()
        for plist in self.optimizer_groups().values():
            for p in plist:
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def build_optimizers(self, optim: Any = None) -> dict[str, torch.optim.Optimizer]:
        """{learner: optimiser} from an adaptkd optim config (``OptimConfig``, a dict of its fields,
        or None: the config's ``optim`` when built by :meth:`from_config`), with the per-network
        ``optim`` overrides of the config. Set the learning rate each step with
        :func:`adaptkd.engine.optim.set_lr` (or use :meth:`optim_configs` with your scheduler)."""
        from adaptkd.engine.optim import build_optimizer

        return {n: build_optimizer(self.optimizer_groups()[n], c) for n, c in self.optim_configs(optim).items()}

    def optim_configs(self, optim: Any = None, overrides: Mapping[str, Mapping[str, Any] | None] | None = None,
                      ) -> dict[str, Any]:
        """{learner: OptimConfig}: ``optim`` (or the config's) with each learner's overrides applied
        (``overrides`` {learner: fields}, default: the config's per-network ``optim``)."""
        from adaptkd.config import OptimConfig

        base = optim if optim is not None else self.optim_config
        if base is None:
            base = OptimConfig.model_validate({})
        if isinstance(base, dict):
            base = OptimConfig.model_validate(base)
        over_all = self.optim_overrides if overrides is None else overrides
        out = {}
        for n in self.learner_names:
            over = over_all.get(n)
            out[n] = type(base).model_validate({**base.model_dump(), **over}) if over else base
        return out

    # -- one step -------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The epoch (from 1) the following calls belong to, until changed (when neither ``epoch=``
        nor ``steps_per_epoch`` says it)."""
        self.epoch = int(epoch)

    def forward_all(self, x: Tensor, teacher_logits: Mapping[str, Tensor] | None = None,
                    ) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
        """Every network once: frozen teachers under ``no_grad`` (each fed its own input view when
        ``teacher_inputs`` converts the batch for it), learners with autograd, under the caller's
        autocast, if any. Returns float32 logits (none for a backbone without a classifier) and the
        tapped features. ``teacher_logits`` ({teacher: [B, C]}, e.g. replayed from a teacher
        cache) replaces the teachers' forward: then no teacher runs."""
        logits: dict[str, Tensor] = dict(teacher_logits or {})
        if self.frozen_names and teacher_logits is None:
            with torch.no_grad():
                xt = self.teacher_inputs(x) if self.teacher_inputs is not None else {}
                for name in self.frozen_names:
                    out = self.forward_nets[name](xt.get(name, x))
                    if name not in self._backbones:
                        logits[name] = out
        for name in self.learner_names:
            logits[name] = self.forward_nets[name](x)
        feats: dict[str, dict[str, Any]] = {}
        for name, tp in self.taps.items():
            feats[name] = {k: (v.float() if isinstance(v, Tensor) and v.is_floating_point() else v)
                           for k, v in tp.outputs.items()}
        return {k: v.float() for k, v in logits.items()}, feats

    def forward(self, x: Tensor, y: Tensor, *, epoch: int | None = None, step: int | None = None,
                teacher_logits: Mapping[str, Tensor] | None = None) -> DistillOutput:
        """One step's losses: inputs ``x`` [B, ...], int64 targets ``y`` [B].

        ``step`` (from 0) defaults to the Distiller's own counter, which each call in training
        mode advances (it is saved in ``state_dict``). ``epoch`` (from 1) defaults to
        ``step // steps_per_epoch + 1`` when ``steps_per_epoch`` was given, else to the last
        :meth:`set_epoch` / ``epoch=``. When none of these says it, a method with an epoch schedule
        (an option named ``*epochs*`` set above 0: DTKD's warm-up, FitNet's stages) raises an error
        that says what to pass; a method without one sees epoch 1.
        The networks run under the caller's autocast; the method always runs in float32.
        ``teacher_logits``: precomputed teacher outputs for this batch (no teacher runs; methods
        that tap teacher features need the live forward).
        """
        step = self.global_step if step is None else int(step)
        if epoch is not None:
            self.epoch = int(epoch)
        elif self.steps_per_epoch:
            self.epoch = step // self.steps_per_epoch + 1
        logits, feats = self.forward_all(x, teacher_logits)
        epoch_in = self.epoch if self.epoch is not None or self._epoch_scheduled else 1
        cls = StepIn if epoch_in is not None else StepInNoEpoch
        inp = cls(x=x, y=y, epoch=epoch_in, step=step, logits=logits, feats=feats)  # type: ignore[arg-type]
        if cls is StepInNoEpoch:
            inp.__dict__["method_name"] = self.method_name
        dev = x.device.type
        off = torch.autocast(dev, enabled=False) if torch.is_autocast_enabled(dev) else contextlib.nullcontext()
        with off:
            out = self.method(inp)
        if self.training:
            self.global_step = step + 1
            if self.meter is not None:
                self.meter.update(out.signals)
        stepping = [n for n in self.learner_names if out.stepping is None or n in out.stepping]
        guard = None
        if self.needs_own_backward:
            guard = (f"balance {self.balancer.name!r} sets the loss weights from gradient statistics, which "
                     "out.loss.backward() cannot do: call distiller.backward(out) (with your GradScaler as "
                     "scaler=, if any) instead of out.loss.backward(); no gradient was applied")
        return DistillOutput(terms=out.losses, weights=out.weights, signals=dict(out.signals), logits=logits,
                             stepping=stepping, epoch=self.epoch, step=step, step_out=out, _guard=guard)

    def backward(self, out: DistillOutput, scaler: torch.amp.GradScaler | None = None) -> dict[str, Tensor]:
        """Gradients of the stepping learners (and the method's modules) through the balancer.

        Equal to ``out.loss.backward()`` for the default balancer; required for balancers that take
        several gradients (``balance="gradient"``). With a ``GradScaler`` the losses are scaled by
        it. Under :func:`prepare_distributed` the method's own parameters' gradients are averaged
        over ranks here. Returns the balancer's signals (also added to ``out.signals``).
        """
        ctx = BackwardContext(params=self.params, extra_params=self.extra_params,
                              task_terms=self.method.task_terms, stepping=out.stepping, step=out.step,
                              networks=dict(self.learners.items()), comm=self.comm,
                              **({"scale": scaler.scale} if scaler is not None else {}))
        signals = self.balancer.backward(out.step_out, ctx)
        if self.distributed:
            from adaptkd.engine.distributed import average_grads

            average_grads([p for n in out.stepping for p in self.extra_params[n]])
        out.signals.update(signals)
        return signals

    def step(self, optimizers: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer], out: DistillOutput,
             scaler: torch.amp.GradScaler | None = None) -> None:
        """Step the optimisers of the learners that step now (``out.stepping``), then ``scaler.update()``.

        ``optimizers``: ``{learner: optimiser}`` (:meth:`optimizer_groups`, :meth:`build_optimizers`),
        or one optimiser when every learner steps every iteration (offline methods). An online
        method that pauses a learner (SwitOKD's expert mode) needs one optimiser per learner: a
        paused learner's optimiser is not called at all (no momentum, no weight decay).
        """
        if isinstance(optimizers, torch.optim.Optimizer):
            if len(out.stepping) != len(self.learner_names):
                raise DistillerError(
                    f"method {self.method_name!r} steps {out.stepping} of {self.learner_names} this iteration, "
                    "which one optimiser cannot do: pass {learner: optimiser} built from distiller.optimizer_groups()"
                )
            chosen = [optimizers]
        else:
            absent = [n for n in out.stepping if n not in optimizers]
            if absent:
                raise DistillerError(f"no optimiser for learner(s) {absent}; pass one per learner "
                                     f"{self.learner_names} (distiller.optimizer_groups())")
            chosen = [optimizers[n] for n in out.stepping]
        for opt in chosen:
            if id(opt) not in self._checked_optims:
                self._check_optimizer(opt)
            (scaler.step(opt) if scaler is not None else opt.step())
        if scaler is not None:
            scaler.update()

    def _check_optimizer(self, opt: torch.optim.Optimizer) -> None:
        if any(id(p) in self._teacher_ids for g in opt.param_groups for p in g["params"]):
            raise DistillerError(f"an optimiser holds parameters of the frozen teacher(s) {self.frozen_names}: "
                                 "a teacher is "
                                 "not a learner; build the optimiser from distiller.parameters() or "
                                 "distiller.optimizer_groups()")
        self._checked_optims.add(id(opt))

    def epoch_end(self, epoch: int | None = None) -> dict[str, float]:
        """The method's per-epoch summaries of its signals (Python floats, one host read); starts a new epoch.

        ``epoch`` is accepted for symmetry with :meth:`set_epoch`; the summary covers the training
        steps since the last call."""
        if self.meter is None:
            raise DistillerError("this Distiller was built with meter=False: its caller reduces the signals")
        return self.method.epoch_summary(self.meter.summary())

    # -- state ----------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"format": FORMAT, "method": self.method_name, "step": self.global_step,
                                 "epoch": self.epoch, "method_extra": self.method.extra_state(),
                                 "meter": self.meter.state_dict() if self.meter is not None else None}
        if self.checkpoint_teachers:
            state["teachers"] = {n: t.state_dict() for n, t in self._teachers.items()}
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise DistillerError("this state was not saved by an adaptkd Distiller")
        if state.get("method") != self.method_name:
            raise DistillerError(f"this state belongs to method {state.get('method')!r}, not {self.method_name!r}")
        self.global_step = int(state["step"])
        self.epoch = state["epoch"]
        self.method.load_extra_state(state.get("method_extra", {}))
        device = next(iter(self.params.values()))[0].device if any(self.params.values()) else "cpu"
        if self.meter is not None:
            self.meter.load_state_dict(state.get("meter"), device)  # an epoch's signal reductions continue
        for n, sd in state.get("teachers", {}).items():
            if n in self._teachers:
                self._teachers[n].load_state_dict(sd)

    def _apply(self, fn: Any, recurse: bool = True) -> Distiller:  # .to(), .cuda(), .double() reach the teachers
        super()._apply(fn, recurse)
        for t in self._teachers.values():
            t._apply(fn)
        return self

    def extra_repr(self) -> str:
        return (f"method={self.method_name!r}, learners={self.learner_names}, teachers={self.frozen_names}, "
                f"balance={self.balancer.name!r}")

