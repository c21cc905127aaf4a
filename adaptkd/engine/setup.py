"""Building a run: every part a :class:`~adaptkd.engine.trainer.Trainer` holds, from its config.

:func:`build_run` sets the trainer's parts in the order its numbers depend on (the random streams
are seeded before anything draws from them): the runtime (threads, device, precision, seeds), the
data pipeline, the networks and the teachers' input views, the batched augmentations and the
teacher cache, the method and balancer (through a :class:`~adaptkd.distiller.Distiller`) and one
optimiser per learner. :func:`open_run` then sets the run's counters and metrics log, restores a
resumed run and prepares the run folder: a config refused on the way writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptkd.config import ConfigError, config_to_dict, roster_of
from adaptkd.data import Augment, DataBundle, DataError, build_pipeline, describe, describe_source
from adaptkd.engine.checkpoint import CheckpointError
from adaptkd.engine.distributed import communicator
from adaptkd.engine.logger import MetricsLog
from adaptkd.engine.meter import SignalMeter
from adaptkd.engine.networks import check_logit_sources
from adaptkd.engine.nonfinite import NonFiniteWatch
from adaptkd.engine.resume import load_resume
from adaptkd.engine.roster import NetworkSet, build_networks, build_optimisers, check_class_counts, forward_networks
from adaptkd.engine.rundir import write_config
from adaptkd.engine.runfolder import RunLock, prepare_run_dir
from adaptkd.engine.runtime import configure_backends, resolve_device, resolve_precision, seed_everything
from adaptkd.engine.views import TeacherInputs, data_spec, teacher_spec
from adaptkd.methods import MethodContext, check_method
from adaptkd.models.registry import needs_rgb
from adaptkd.replay import Replay
from adaptkd.replay.identity import augment_generator, steps_per_epoch, train_augment

if TYPE_CHECKING:
    from adaptkd.engine.trainer import Trainer

__all__ = ["build_run", "open_run"]

Log = Callable[[str], None]


def build_run(tr: Trainer, networks: dict[str, nn.Module] | None, data: DataBundle | tuple | None, log: Log) -> None:
    """Set every part of ``tr`` its config ``tr.cfg`` describes (``networks``, ``data``: as the
    :class:`~adaptkd.engine.trainer.Trainer` takes them); nothing is written to the run folder."""
    _runtime(tr)
    _data(tr, data, log)
    nets = _networks(tr, networks, log)
    _inputs(tr)
    _method(tr, nets)


def _runtime(tr: Trainer) -> None:
    """Threads, device (a DDP process's own), precision, seeds and backends; the run folder checked."""
    rc = tr.cfg.run
    if rc.threads:
        torch.set_num_threads(rc.threads)
    tr.device = resolve_device(rc.device)
    if tr.dist.enabled:
        from adaptkd.engine.distributed import setup_distributed

        tr.device = setup_distributed(tr.dist, tr.device)
    tr.precision = resolve_precision(rc.precision, tr.device)  # (CPU bf16 autocast works; slower than fp32)
    seed_everything(rc.seed + tr.dist.rank, rc.deterministic)
    configure_backends(tr.device, rc.deterministic)
    # Checked now, created only after every input is validated (a refused config writes nothing).
    tr.out = (prepare_run_dir(rc.out, resume=tr.resume, overwrite=rc.overwrite, create=False)
              if tr.dist.is_main else Path(rc.out))
    tr.comm = communicator()  # methods and balancers reduce across ranks through it


def _data(tr: Trainer, data: DataBundle | tuple | None, log: Log) -> None:
    """The pipeline (in memory or streamed); the settings it resolved (augment, cache, ...) go into ``tr.cfg``."""
    need_rgb = any(needs_rgb(c.arch) for c in tr.cfg.network_names().values())
    tr.pipe, resolved = build_pipeline(tr.cfg.data, dataset=data, pin_memory=tr.device.type == "cuda",
                                       need_rgb=need_rgb)
    if data is not None:
        resolved.update(name="python", source=describe_source(data, tr.pipe))
    tr.cfg = tr.cfg.model_copy(update={"data": tr.cfg.data.model_copy(update=resolved)})
    log(describe(tr.pipe, resolved))
    tr.data = getattr(tr.pipe, "bundle", None)
    tr.num_classes = tr.pipe.num_classes


def _networks(tr: Trainer, given: dict[str, nn.Module] | None, log: Log) -> NetworkSet:
    """The networks (built, or ``given`` by name) and each frozen teacher's input view; class counts checked."""
    tr.net_cfgs = tr.cfg.network_names()
    nets = build_networks(tr.cfg, tr.pipe, tr.device, given, log)
    tr.networks, tr.learners, tr.frozen = nets.networks, nets.learners, nets.frozen
    tr.teacher_inputs = TeacherInputs(
        {n: teacher_spec(tr.net_cfgs[n], tr.networks[n], tr.pipe, field=nets.fields[n], name=n)
         for n in tr.frozen}, data_spec(tr.pipe)).to(tr.device)
    for line in tr.teacher_inputs.describe({n: c.arch for n, c in tr.net_cfgs.items()}):
        if "as is" not in line:
            log(line)
    check_class_counts(tr.networks, tr.teacher_inputs.view, tr.eval_aug_probe(), tr.num_classes,
                       tr.net_cfgs, tr.pipe.name)
    return nets


def _inputs(tr: Trainer) -> None:
    """The batched augmentations (on the device) and their generator, the steps per epoch, and the teacher
    outputs' source: a live forward each step, or replayed from a teacher cache (``teachers_cache``)."""
    d, rc = tr.cfg.data, tr.cfg.run
    if d.crop_padding is not None and d.crop_padding > tr.pipe.image_size:
        raise ConfigError(f"field `data.crop_padding`: {d.crop_padding} exceeds the image side "
                          f"({tr.pipe.image_size} pixels) of dataset {tr.pipe.name!r}")
    tr.train_aug = train_augment(tr.pipe, tr.cfg, tr.device)
    tr.input_bounded = tr.train_aug.bounded  # then the watch skips the input (one host read, here)
    tr.eval_aug = Augment(tr.pipe.mean, tr.pipe.std, train=False).to(tr.device)
    tr.gen = augment_generator(rc.seed, tr.dist.rank, tr.device)
    tr.steps_per_epoch = steps_per_epoch(tr.cfg, tr.pipe, tr.dist.world_size)
    tr.replay = None
    if tr.cfg.teachers_cache is not None:
        tr.replay = Replay(tr.cfg, tr.pipe, {n: tr.networks[n] for n in tr.frozen},
                           steps=tr.steps_per_epoch, rank=tr.dist.rank, world_size=tr.dist.world_size,
                           precision=tr.precision, device=tr.device, augment=tr.train_aug.random)


def _method(tr: Trainer, nets: NetworkSet) -> None:
    """The method, balancer and feature taps (the Distiller, the module a hand-written loop uses too), the
    modules its step calls (DDP, compile), one optimiser per learner and the gradient scaler."""
    rc, m = tr.cfg.run, tr.cfg.method
    sample = tr.eval_aug(tr.pipe.sample(4).to(tr.device))
    tr.ctx = MethodContext(
        networks=tr.networks, learners=list(tr.learners), frozen=list(tr.frozen),
        arches={n: c.arch for n, c in tr.net_cfgs.items()}, num_classes=tr.num_classes,
        epochs=tr.cfg.optim.epochs, steps_per_epoch=tr.steps_per_epoch, sample_input=sample,
        inputs=tr.teacher_inputs(sample), seed=rc.seed, rank=tr.dist.rank, world_size=tr.dist.world_size,
        device=tr.device, comm=tr.comm,
    )
    from adaptkd.distiller import Distiller  # (adaptkd.distiller imports adaptkd.engine)

    try:
        check_method(m.name, m.options(), roster_of(tr.cfg), epochs=tr.cfg.optim.epochs, balancer=tr.cfg.balance.name)
        tr.distiller = Distiller.from_networks(
            tr.networks, learners=tr.learners, frozen=tr.frozen, method=m.name, options=m.options(), ctx=tr.ctx,
            balance=tr.cfg.balance.name, balance_options=tr.cfg.balance.options(), teacher_inputs=tr.teacher_inputs,
            meter=False)
    except (ConfigError, CheckpointError, DataError):
        raise
    except (ValueError, KeyError) as exc:  # a method refusing its options/networks: a config error
        msg = exc.args[0] if exc.args else str(exc)
        raise ConfigError(f"method {m.name!r} cannot be built from this config: {msg}") from None
    tr.method = tr.distiller.method
    check_logit_sources(tr.method, tr.networks, tr.net_cfgs)
    tr.balancer = tr.distiller.balancer
    tr.meter = SignalMeter(tr.method.spec)  # the method's signals reduced over each epoch
    tr.taps = tr.distiller.taps
    tr.forward_nets = tr.distiller.forward_nets
    tr.forward_nets.update(forward_networks(nets, tr.method, tr.device, distributed=tr.dist.enabled,
                                            compile=rc.compile))
    tr.distiller.distributed = tr.dist.enabled  # its backward averages the method's own gradients
    opt = build_optimisers(tr.cfg, tr.networks, tr.learners, tr.method.param_groups())
    tr.optim_cfgs, tr.optims = opt.cfgs, opt.optims
    tr.params, tr.extra_params = opt.params, opt.extra_params
    tr.scaler = torch.amp.GradScaler(tr.device.type, enabled=tr.precision == "fp16")


def open_run(tr: Trainer, log: Log) -> dict[str, Any] | None:
    """The run's counters and metrics log; with ``tr.resume`` every piece of ``last.pt`` read and checked, then
    restored, before any file is touched; the run folder locked and prepared (its config written for a new
    run). Returns where a checkpoint written inside an epoch left off (None: at an epoch's end, or a new run)."""
    rc = tr.cfg.run
    tr.epoch = 0  # last completed epoch
    tr.global_step = 0
    tr.best_acc = -1.0  # best validation top-1 so far (-1: none yet, or no validation split)
    tr.best_epoch = 0
    tr.nonfinite_skipped = 0
    tr.nonfinite = NonFiniteWatch(tr.device)  # first non-finite step per input/output/term/weight
    tr.history = []
    tr.metrics = MetricsLog(tr.out / "metrics.jsonl", enabled=tr.dist.is_main, tensorboard=rc.tensorboard)
    part = load_resume(tr, log) if tr.resume else None
    tr.lock = RunLock(tr.out)  # held until fit() ends (one writer per run folder)
    if tr.dist.is_main:
        prepare_run_dir(tr.out, resume=tr.resume, overwrite=rc.overwrite, create=True, lock=tr.lock)
    if tr.resume:
        tr.metrics.truncate_after(tr.epoch, step=tr.global_step if part is not None else None)
        where = f", {part['step']} step(s) into epoch {part['epoch']}" if part is not None else ""
        log(f"resumed from {tr.out / 'last.pt'} at epoch {tr.epoch} (step {tr.global_step}{where})")
    elif tr.dist.is_main:
        write_config(tr.out, config_to_dict(tr.cfg))
    return part
