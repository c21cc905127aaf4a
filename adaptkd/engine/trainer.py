"""The training engine: one flat loop that every method runs through (docs/architecture.md).

Per step: augment on the batch's device → the :class:`~adaptkd.distiller.Distiller` (frozen
teachers under no_grad, learners, ``method(StepIn)``, ``balancer.backward``, one optimiser step
per stepping learner; the same module a hand-written loop uses) with the engine's finiteness checks
and learning-rate schedule around it. The only host synchronisation is at the logging interval
(and, for methods that pause a learner, the one boolean that decides it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adaptkd.config import Config, ConfigError, config_to_dict, load_config, roster_of
from adaptkd.data import Augment, DataBundle, DataError, build_pipeline, describe
from adaptkd.engine.checkpoint import (
    CheckpointError,
)
from adaptkd.engine.distributed import communicator
from adaptkd.engine.epoch import EpochTotals, epoch_end_values, step_values
from adaptkd.engine.evaluate import evaluate_batches
from adaptkd.engine.logger import MetricsLog
from adaptkd.engine.meter import SignalMeter
from adaptkd.engine.networks import check_logit_sources
from adaptkd.engine.nonfinite import NonFiniteWatch, raise_if_state_nonfinite
from adaptkd.engine.optim import set_lr
from adaptkd.engine.resume import kept_line, load_resume, run_state, save_run
from adaptkd.engine.roster import (
    build_networks,
    build_optimisers,
    check_class_counts,
    forward_networks,
)
from adaptkd.engine.rundir import write_config
from adaptkd.engine.runfolder import RUN_FILES, RunLock, prepare_run_dir
from adaptkd.engine.runtime import (
    autocast,
    configure_backends,
    dist_info,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from adaptkd.engine.summary import run_summary
from adaptkd.engine.views import TeacherInputs, data_spec, teacher_spec
from adaptkd.errors import NonFiniteError, RunFolderError
from adaptkd.methods import MethodContext, StepOut, check_method
from adaptkd.models.registry import needs_rgb
from adaptkd.replay import Replay, ReplayedBatch
from adaptkd.replay.identity import augment_generator, steps_per_epoch, train_augment
from adaptkd.taps import FeatureTaps

__all__ = ["Trainer", "NonFiniteError", "RunFolderError", "prepare_run_dir", "RUN_FILES"]


class Trainer:
    """Builds everything a config describes and runs it.

    Args:
        cfg: a validated :class:`Config` (or a path/dict, validated here).
        resume: continue from ``<run.out>/last.pt``.
        networks: optional ``{name: nn.Module}`` replacing the config's networks by name (bring
            your own model: ``{"student": my_net, "teacher0": my_teacher}``).
        data: data passed from Python instead of ``data.name``: a :class:`DataBundle`, or a
            ``(train, test)`` pair of map-style ``torch.utils.data.Dataset`` objects returning
            ``(image, label)``. The run records ``data.name: python`` so that ``eval``, ``report``
            and ``export`` refuse to guess another dataset.
        log: callable receiving human-readable progress lines (default: print on rank 0).
    """

    def __init__(
        self,
        cfg: Config | str | dict,
        *,
        resume: bool = False,
        networks: dict[str, nn.Module] | None = None,
        data: DataBundle | tuple | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg if isinstance(cfg, Config) else load_config(cfg, provided=set(networks or {}))
        self.resume = resume
        self.dist = dist_info()
        self._log = log if log is not None else (print if self.dist.is_main else (lambda s: None))
        rc = self.cfg.run
        if rc.threads:
            torch.set_num_threads(rc.threads)
        self.device = resolve_device(rc.device)
        if self.dist.enabled:
            from adaptkd.engine.distributed import setup_distributed

            self.device = setup_distributed(self.dist, self.device)
        self.precision = resolve_precision(rc.precision, self.device)
        if self.precision == "bf16" and self.device.type == "cpu":
            pass  # CPU bf16 autocast is supported by torch; slower than fp32 on most CPUs
        seed_everything(rc.seed + self.dist.rank, rc.deterministic)
        configure_backends(self.device, rc.deterministic)
        # Checked now, created only after every input below is validated (a refused config writes nothing).
        self.out = (prepare_run_dir(rc.out, resume=resume, overwrite=rc.overwrite, create=False)
                    if self.dist.is_main else Path(rc.out))

        self.comm = communicator()  # methods and balancers reduce across ranks through it
        # Data: in memory or streamed; the resolved settings (augment, cache, ...) go into the run's config
        need_rgb = any(needs_rgb(c.arch) for c in self.cfg.network_names().values())
        self.pipe, resolved = build_pipeline(self.cfg.data, dataset=data, pin_memory=self.device.type == "cuda",
                                             need_rgb=need_rgb)
        if data is not None:
            resolved.update(name="python", source=_describe_python_data(data, self.pipe))
        self.cfg = self.cfg.model_copy(update={"data": self.cfg.data.model_copy(update=resolved)})
        self._log(describe(self.pipe, resolved))
        d = self.cfg.data
        #: the in-memory dataset (None when streamed)
        self.data: DataBundle | None = getattr(self.pipe, "bundle", None)
        self.num_classes = self.pipe.num_classes

        # Networks
        self.net_cfgs = self.cfg.network_names()
        nets = build_networks(self.cfg, self.pipe, self.device, networks, self._log)
        self.networks: dict[str, nn.Module] = nets.networks
        self.learners: list[str] = nets.learners
        self.frozen: list[str] = nets.frozen
        self.teacher_inputs = TeacherInputs(
            {n: teacher_spec(self.net_cfgs[n], self.networks[n], self.pipe, field=nets.fields[n], name=n)
             for n in self.frozen}, data_spec(self.pipe)).to(self.device)
        for line in self.teacher_inputs.describe({n: c.arch for n, c in self.net_cfgs.items()}):
            if "as is" not in line:
                self._log(line)
        check_class_counts(self.networks, self.teacher_inputs.view, self.eval_aug_probe(), self.num_classes,
                           self.net_cfgs, self.pipe.name)

        if d.crop_padding is not None and d.crop_padding > self.pipe.image_size:
            raise ConfigError(f"field `data.crop_padding`: {d.crop_padding} exceeds the image side "
                              f"({self.pipe.image_size} pixels) of dataset {self.pipe.name!r}")
        # Augmentation (batched, on the device)
        self.train_aug = train_augment(self.pipe, self.cfg, self.device)
        self.eval_aug = Augment(self.pipe.mean, self.pipe.std, train=False).to(self.device)
        self.gen = augment_generator(rc.seed, self.dist.rank, self.device)
        self.steps_per_epoch = steps_per_epoch(self.cfg, self.pipe, self.dist.world_size)
        # Teacher outputs: a live forward each step, or replayed from a teacher cache (teachers_cache)
        self.replay: Replay | None = None
        if self.cfg.teachers_cache is not None:
            self.replay = Replay(self.cfg, self.pipe, {n: self.networks[n] for n in self.frozen},
                                 steps=self.steps_per_epoch, rank=self.dist.rank, world_size=self.dist.world_size,
                                 precision=self.precision, device=self.device, augment=self.train_aug.random)

        # Method and balancer
        sample = self.eval_aug(self.pipe.sample(4).to(self.device))
        self.ctx = MethodContext(
            networks=self.networks, learners=list(self.learners), frozen=list(self.frozen),
            arches={n: c.arch for n, c in self.net_cfgs.items()}, num_classes=self.num_classes,
            epochs=self.cfg.optim.epochs, steps_per_epoch=self.steps_per_epoch, sample_input=sample,
            inputs=self.teacher_inputs(sample), seed=rc.seed, rank=self.dist.rank, world_size=self.dist.world_size,
            device=self.device, comm=self.comm,
        )
        from adaptkd.distiller import Distiller  # (adaptkd.distiller imports adaptkd.engine)

        try:
            check_method(self.cfg.method.name, self.cfg.method.options(), roster_of(self.cfg),
                         epochs=self.cfg.optim.epochs, balancer=self.cfg.balance.name)
            # Method, balancer and taps: the Distiller, the module a hand-written loop uses too
            self.distiller = Distiller.from_networks(
                self.networks, learners=self.learners, frozen=self.frozen, method=self.cfg.method.name,
                options=self.cfg.method.options(), ctx=self.ctx, balance=self.cfg.balance.name,
                balance_options=self.cfg.balance.options(), teacher_inputs=self.teacher_inputs, meter=False)
        except (ConfigError, CheckpointError, DataError):
            raise
        except (ValueError, KeyError) as exc:  # a method refusing its options/networks: a config error
            msg = exc.args[0] if exc.args else str(exc)
            raise ConfigError(f"method {self.cfg.method.name!r} cannot be built from this config: {msg}") from None
        self.method = self.distiller.method
        check_logit_sources(self.method, self.networks, self.net_cfgs)
        self.balancer = self.distiller.balancer
        self.meter = SignalMeter(self.method.spec)  # the method's signals reduced over each epoch

        # The Distiller's persistent feature taps; the modules its step calls (DDP, compile); one optimiser per learner
        self.taps: dict[str, FeatureTaps] = self.distiller.taps
        self.forward_nets = self.distiller.forward_nets
        self.forward_nets.update(forward_networks(nets, self.method, self.device, distributed=self.dist.enabled,
                                                  compile=rc.compile))
        self.distiller.distributed = self.dist.enabled  # its backward averages the method's own gradients
        opt = build_optimisers(self.cfg, self.networks, self.learners, self.method.param_groups())
        self.optim_cfgs, self.optims = opt.cfgs, opt.optims
        self.params, self.extra_params = opt.params, opt.extra_params
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        self.epoch = 0  # last completed epoch
        self._in_epoch: dict[str, Any] | None = None  # where a checkpoint written inside an epoch left off
        self.global_step = 0
        self.best_acc = -1.0  # best validation top-1 so far (-1: none yet, or no validation split)
        self.best_epoch = 0
        self.nonfinite_skipped = 0
        self.nonfinite = NonFiniteWatch(self.device)  # first non-finite step per input/output/term/weight
        self.history: list[dict[str, Any]] = []
        self._saved: tuple[int, int | None] | None = None  # (epoch, step inside it) of the last checkpoint written
        self.metrics = MetricsLog(self.out / "metrics.jsonl", enabled=self.dist.is_main,
                                  tensorboard=rc.tensorboard)
        if resume:  # every piece of the saved state is read and checked before any file is touched
            self._in_epoch = load_resume(self, self._log)
        self.lock = RunLock(self.out)  # held until fit() ends (one writer per run folder)
        if self.dist.is_main:
            prepare_run_dir(self.out, resume=resume, overwrite=rc.overwrite, create=True, lock=self.lock)
        if resume:
            part = self._in_epoch
            self.metrics.truncate_after(self.epoch, step=self.global_step if part is not None else None)
            where = f", {part['step']} step(s) into epoch {part['epoch']}" if part is not None else ""
            self._log(f"resumed from {self.out / 'last.pt'} at epoch {self.epoch} (step {self.global_step}{where})")
        elif self.dist.is_main:
            write_config(self.out, config_to_dict(self.cfg))

    # ------------------------------------------------------------------------------------------
    def eval_aug_probe(self) -> Tensor:
        x = self.pipe.sample(2).to(self.device).float() / 255.0
        return x

    def autocast(self):
        return autocast(self.device, self.precision)

    # ------------------------------------------------------------------------------------------
    def forward_all(self, x: Tensor, teachers: dict[str, Tensor] | None = None
                    ) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
        """Every network once: frozen teachers under no_grad (or their replayed ``teachers``
        logits, then no teacher runs), learners with autograd."""
        with self.autocast():
            return self.distiller.forward_all(x, teachers)

    def train_step(self, xb: Tensor, yb: Tensor, epoch: int, frac: float,
                   replayed: ReplayedBatch | None = None) -> tuple[StepOut, dict[str, Tensor]]:
        """One optimisation step on batch ``xb``; ``replayed``: this batch's views and teacher
        logits from the teacher cache (then the views are not drawn and no teacher runs)."""
        xb = xb.to(self.device, non_blocking=True)
        x = self.train_aug(xb, self.gen) if replayed is None else self.train_aug.apply(xb, replayed.params)
        if self.cfg.run.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = yb.to(self.device, non_blocking=True)
        skip_mode = self.cfg.run.nonfinite == "skip"
        if skip_mode:  # a skipped step leaves no trace: the forward's buffer updates are undone
            saved = [(b, b.detach().clone()) for b in self._step_buffers()]
        with self.autocast():  # the networks under autocast; the method runs in float32 (as the Distiller does)
            step = self.distiller(x, y, epoch=epoch, step=self.global_step,
                                  teacher_logits=None if replayed is None else replayed.logits)
        out, stepping, logits = step.step_out, step.stepping, step.logits
        for opt in self.optims.values():
            opt.zero_grad(set_to_none=True)
        if self.dist.enabled and out.stepping is not None:
            from adaptkd.engine.distributed import check_same_stepping

            check_same_stepping(self.learners, stepping, self.device, self.cfg.method.name)
        finite = self.nonfinite.check(x, logits, out, self.global_step)
        if self.cfg.run.nonfinite == "skip" and not bool(self._all_ranks(finite)):
            self.nonfinite_skipped += 1
            with torch.no_grad():
                for b, v in saved:
                    b.copy_(v)
            return out, {}
        signals = self.distiller.backward(step, scaler=self.scaler)  # balancer; method grads averaged under DDP
        for name in stepping:
            set_lr(self.optims[name], self.optim_cfgs[name], epoch, frac)
        self.distiller.step(self.optims, step, scaler=self.scaler)
        return out, signals

    def _all_ranks(self, flag: Tensor) -> Tensor:
        if not self.dist.enabled:
            return flag
        from adaptkd.engine.distributed import all_ranks_true

        return all_ranks_true(flag)

    def _step_buffers(self) -> list[Tensor]:
        """Buffers a training forward may update (learners' BN statistics and counters, the
        method's running state); restored when ``run.nonfinite: skip`` skips a step."""
        if not hasattr(self, "_skip_bufs"):
            mods = [self.networks[n] for n in self.learners] + [self.method]
            self._skip_bufs = [b for m in mods for b in m.buffers()]
        return self._skip_bufs

    def raise_if_nonfinite(self) -> None:
        """Stop the run (NonFiniteError naming the earliest offender) if anything went non-finite; one host read."""
        if self.cfg.run.nonfinite == "skip":
            return
        earliest: Callable[[torch.Tensor], torch.Tensor] | None = None
        if self.dist.enabled:  # every rank stops at once (no rank left waiting in a collective)
            from adaptkd.engine.distributed import earliest_across_ranks as earliest
        self.nonfinite.raise_if_any(epoch=self.epoch, out=self.out, earliest=earliest)

    def _raise_if_state_nonfinite(self, epoch: int) -> None:
        """Stop (whatever ``run.nonfinite`` says) when a learner's or the method's state is NaN/Inf."""
        modules = {**{n: self.networks[n] for n in self.learners}, "method": self.method}
        skipped = self.nonfinite_skipped if self.cfg.run.nonfinite == "skip" else 0
        raise_if_state_nonfinite(modules, all_ranks=self.dist.enabled, epoch=epoch, step=self.global_step,
                                 last=self.out / "last.pt", saved_epoch=self.epoch, skipped=skipped)

    # ------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        for name in self.learners:
            self.networks[name].train()
        for name in self.frozen:
            self.networks[name].eval()
        d = self.cfg.data
        totals = EpochTotals(self.device)
        start, done_s = 0, 0.0
        part = self._in_epoch if self._in_epoch is not None and self._in_epoch["epoch"] == epoch else None
        self._in_epoch = None
        if part is not None:  # resumed inside this epoch: the batches still to come, and the sums so far
            start, done_s = part["step"], part["elapsed"]
            totals.load_state_dict(part)
            self.meter.load_state_dict(part.get("meter"), self.device)
        t0 = time.perf_counter() - done_s
        last_log_t, last_log_seen = t0, totals.seen
        steps = self.steps_per_epoch
        every = self.cfg.run.checkpoint_every_steps
        batches = self.pipe.train_batches(epoch, batch_size=d.batch_size, seed=self.cfg.run.seed,
                                          drop_last=d.drop_last, rank=self.dist.rank,
                                          world_size=self.dist.world_size, start=start, stop=steps)
        if self.replay is not None:
            self.replay.start_epoch(epoch)
        for i, (xb, yb) in enumerate(batches, start=start):
            if i >= steps:
                break
            skipped = self.nonfinite_skipped
            replayed = None if self.replay is None else self.replay.batch(epoch, i, xb.shape[0])
            out, signals = self.train_step(xb, yb, epoch, i / steps, replayed)
            if self.nonfinite_skipped == skipped:  # a skipped step's non-finite values stay out of the means
                self.meter.update(out.signals)
                totals.add(out, signals, yb.to(self.device, non_blocking=True))
            totals.seen += xb.shape[0]
            self.global_step += 1
            if self.global_step % self.cfg.run.log_every == 0 or i == steps - 1:
                self.raise_if_nonfinite()
                now = time.perf_counter()
                rec: dict[str, Any] = {"kind": "step", "epoch": epoch, "step": self.global_step}
                rec.update(step_values(out, signals, self.method.spec.is_hidden, self.dist.enabled))
                for learner, w in out.weights.items():
                    for term, val in w.items():
                        rec[f"weight/{learner}/{term}"] = float(val)
                for name in self.learners:
                    rec[f"lr/{name}"] = self.optims[name].param_groups[0]["lr"]
                rec["images_per_s"] = ((totals.seen - last_log_seen) * self.dist.world_size
                                       / max(now - last_log_t, 1e-9))
                last_log_t, last_log_seen = now, totals.seen
                self.metrics.write(rec)
                if progress is not None:
                    progress({"i": i + 1, "steps": steps, "rec": rec, "elapsed": now - t0})
            if every and self.global_step % every == 0 and i + 1 < steps:
                self.raise_if_nonfinite()  # never checkpoint a state that already went non-finite
                self._raise_if_state_nonfinite(epoch)
                self.save(False, in_epoch={"epoch": epoch, "step": i + 1, "elapsed": time.perf_counter() - t0,
                                           **totals.state_dict(), "meter": self.meter.state_dict()})
        elapsed = time.perf_counter() - t0
        summary: dict[str, Any]
        summary, total_seen = totals.summary(self.dist.world_size, self.dist.enabled)
        summary["time/epoch_s"] = elapsed
        summary["images_per_s"] = total_seen / max(elapsed, 1e-9)
        if self.cfg.run.nonfinite == "skip":
            summary["nonfinite_skipped"] = self.nonfinite_skipped
        return summary

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Top-1/top-5/loss of every learner on ``split`` ("test" or "val")."""
        res: dict[str, Any] = {}
        d = self.cfg.data
        if self.dist.enabled:  # BatchNorm statistics drift per rank: evaluate rank 0's (the saved) model everywhere
            from adaptkd.engine.distributed import broadcast_state

            for name in self.learners:
                broadcast_state(self.networks[name], buffers_only=True)
        for name in self.learners:
            batches = self.pipe.val_batches(d.eval_batch_size) if split == "val" else self.pipe.test_batches(
                d.eval_batch_size)
            m = evaluate_batches(self.networks[name], batches, self.eval_aug,
                                 device=self.device, num_classes=self.num_classes, autocast_ctx=self.autocast)
            res[name] = m
        return res

    def finish(self) -> dict[str, Any]:
        """Final evaluation and ``summary.json`` (see :func:`adaptkd.engine.summary.run_summary`)."""
        return run_summary(self)

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The state ``last.pt`` holds (see :func:`adaptkd.engine.resume.run_state`)."""
        return run_state(self)

    def save(self, best: bool, in_epoch: dict[str, Any] | None = None) -> None:
        """Write ``last.pt`` (and ``best.pt`` when ``best``); ``in_epoch``: where inside an epoch (see
        :func:`adaptkd.engine.resume.save_run`)."""
        if save_run(self, best, in_epoch):
            self._saved = (self.epoch, self.global_step if in_epoch is not None else None)

    # ------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``optim.epochs``; returns the summary (also written to ``summary.json``)."""
        from adaptkd.engine.progress import Progress

        epochs = self.cfg.optim.epochs
        prog = Progress(enabled=self.cfg.run.progress and self.dist.is_main, total_epochs=epochs, log=self._log)
        try:
            with prog:
                while self.epoch < epochs:
                    epoch = self.epoch + 1
                    if self.dist.enabled:
                        from adaptkd.engine.distributed import barrier

                        barrier()
                    prog.start_epoch(epoch, self.steps_per_epoch)
                    try:
                        train = self.train_epoch(epoch, progress=prog.update)
                    except DataError as exc:  # a bad image mid-epoch: say where, and what is kept
                        last = self.out / "last.pt"
                        kept = (f"the last good checkpoint {str(last)!r} is kept (fix or remove the file, then "
                                "--resume)" if last.is_file() else "no checkpoint had been written yet")
                        raise DataError(f"{exc}; training stopped in epoch {epoch} at step {self.global_step}; "
                                        f"{kept}") from None
                    self.raise_if_nonfinite()
                    self._raise_if_state_nonfinite(epoch)  # before evaluating, recording or saving it
                    rec: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": self.global_step, **train}
                    ends = self.method.epoch_summary(self.meter.summary())
                    rec.update(epoch_end_values(ends, self.cfg.method.name, self.dist.enabled, self.device))
                    # With a validation split, it is scored each epoch and chooses best.pt; the test split is
                    # scored once, in finish(). Without one, the test split is scored each epoch for the
                    # curves only and best.pt is simply the latest epoch: nothing is selected on test.
                    split = "val" if self.pipe.n_val else "test"
                    if epoch % self.cfg.run.eval_every == 0 or epoch == epochs:
                        for name, m in self.evaluate(split).items():
                            rec[f"{split}/acc/{name}"] = m["top1"]
                            rec[f"{split}/top5/{name}"] = m["top5"]
                            rec[f"{split}/loss/{name}"] = m["loss"]
                    for name in self.learners:
                        rec[f"lr/{name}"] = self.optims[name].param_groups[0]["lr"]
                    if split == "val":
                        acc = rec.get("val/acc/student", -1.0)
                        best = acc > self.best_acc
                        if best:
                            self.best_acc, self.best_epoch = acc, epoch
                        rec["best/val_acc/student"] = self.best_acc
                    else:
                        best, self.best_epoch = True, epoch
                    self.epoch = epoch
                    self.history.append(rec)
                    self.metrics.write(rec, sync=True)  # metrics first, then the checkpoint (see resume)
                    self.save(best)
                    prog.end_epoch(rec)
            return self.finish()
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: one line saying what is kept
            raise type(exc)(kept_line(self.out, self._saved)) from None
        finally:
            self.metrics.close()
            self.lock.release()


def _describe_python_data(data: Any, pipe: Any) -> str:
    """What data passed from Python was, for the run's config (``data.source``)."""
    kind = f"DataBundle {data.name!r}" if isinstance(data, DataBundle) else \
        " / ".join(type(part).__name__ for part in data)
    return f"{kind}: {pipe.n_train} train / {pipe.n_test} test images, {pipe.num_classes} classes"
