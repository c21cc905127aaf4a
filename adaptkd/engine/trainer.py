"""The training engine: one flat loop that every method runs through (docs/architecture.md).

Per step: augment on the batch's device → the :class:`~adaptkd.distiller.Distiller` (frozen
teachers under no_grad, learners, ``method(StepIn)``, ``balancer.backward``, one optimiser step
per stepping learner; the same module a hand-written loop uses) with the engine's finiteness checks
and learning-rate schedule around it. The only host synchronisation is at the logging interval
(and, for methods that pause a learner, the one boolean that decides it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from adaptkd.balance import Balancer
from adaptkd.comm import Communicator
from adaptkd.config import Config, NetConfig, load_config
from adaptkd.data import Augment, DataBundle, DataError, Pipeline
from adaptkd.data.ahead import ViewsAhead, ViewsInChunks, chunk_batches
from adaptkd.data.ahead import pays as ahead_pays
from adaptkd.engine.epoch import EpochTotals, epoch_record, step_record
from adaptkd.engine.evaluate import evaluate_batches
from adaptkd.engine.logger import MetricsLog
from adaptkd.engine.meter import SignalMeter
from adaptkd.engine.nonfinite import NonFiniteWatch, raise_if_state_nonfinite
from adaptkd.engine.optim import set_lr
from adaptkd.engine.resume import kept_line, run_state, save_run
from adaptkd.engine.runfolder import RUN_FILES, RunLock, prepare_run_dir
from adaptkd.engine.runtime import DistInfo, autocast, dist_info
from adaptkd.engine.setup import build_run, open_run
from adaptkd.engine.summary import run_summary
from adaptkd.engine.views import TeacherInputs
from adaptkd.errors import NonFiniteError, RunFolderError
from adaptkd.methods import Method, MethodContext, StepOut
from adaptkd.replay import Replay, ReplayedBatch
from adaptkd.taps import FeatureTaps

if TYPE_CHECKING:
    from adaptkd.distiller import Distiller

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

    # Set by adaptkd.engine.setup (build_run, open_run), in this order:
    device: torch.device
    precision: str  # "fp32", "bf16" or "fp16"
    out: Path  # the run folder
    comm: Communicator  # methods and balancers reduce across ranks through it
    pipe: Pipeline
    data: DataBundle | None  # the in-memory dataset (None when streamed)
    num_classes: int
    net_cfgs: dict[str, NetConfig]
    networks: dict[str, nn.Module]
    learners: list[str]
    frozen: list[str]
    teacher_inputs: TeacherInputs  # each frozen teacher's view of the batch
    train_aug: Augment
    eval_aug: Augment
    gen: torch.Generator  # the augmentation's random stream
    steps_per_epoch: int
    replay: Replay | None  # teacher outputs replayed from a teacher cache (None: a live forward each step)
    ctx: MethodContext
    distiller: Distiller  # the method, balancer and taps as one module (its step is the step's core)
    method: Method
    balancer: Balancer
    meter: SignalMeter  # the method's signals reduced over each epoch
    taps: dict[str, FeatureTaps]
    forward_nets: dict[str, nn.Module]  # the modules the step calls (DDP, compile)
    optim_cfgs: dict[str, Any]
    optims: dict[str, torch.optim.Optimizer]  # one per learner
    params: dict[str, list[nn.Parameter]]
    extra_params: dict[str, list[nn.Parameter]]
    scaler: torch.amp.GradScaler
    epoch: int  # last completed epoch
    global_step: int
    best_acc: float  # best validation top-1 so far (-1: none yet, or no validation split)
    best_epoch: int
    nonfinite_skipped: int
    nonfinite: NonFiniteWatch
    input_bounded: bool  # the training views cannot be non-finite (Augment.bounded): the watch skips them
    history: list[dict[str, Any]]  # the epoch records
    metrics: MetricsLog
    lock: RunLock  # held until fit() ends (one writer per run folder)

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
        self.dist: DistInfo = dist_info()
        self._log = log if log is not None else (print if self.dist.is_main else (lambda s: None))
        self._saved: tuple[int, int | None] | None = None  # (epoch, step inside it) of the last checkpoint written
        build_run(self, networks, data, self._log)
        self._in_epoch = open_run(self, self._log)  # where a checkpoint written inside an epoch left off

    # ------------------------------------------------------------------------------------------
    def eval_aug_probe(self) -> Tensor:
        """Two sample images ``[2, C, H, W]`` scaled to [0, 1] (not normalised): a probe of the networks' outputs."""
        return self.pipe.sample(2).to(self.device).float() / 255.0

    def autocast(self):
        return autocast(self.device, self.precision)

    # ------------------------------------------------------------------------------------------
    def forward_all(self, x: Tensor, teachers: dict[str, Tensor] | None = None
                    ) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
        """Every network once: frozen teachers under no_grad (or their replayed ``teachers``
        logits, then no teacher runs), learners with autograd."""
        with self.autocast():
            return self.distiller.forward_all(x, teachers)

    def train_view(self, xb: Tensor, gen: torch.Generator, params: Tensor | None = None) -> Tensor:
        """The training view of batch ``xb`` on the device: crop and flip drawn from ``gen`` (or the
        replayed ``params``: nothing drawn), normalised, channels-last when ``run.channels_last``."""
        xb = xb.to(self.device, non_blocking=True)
        x = self.train_aug(xb, gen) if params is None else self.train_aug.apply(xb, params)
        if self.cfg.run.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_step(self, xb: Tensor, yb: Tensor, epoch: int, frac: float,
                   replayed: ReplayedBatch | None = None, view: Tensor | None = None,
                   ) -> tuple[StepOut, dict[str, Tensor]]:
        """One optimisation step on batch ``xb``; ``replayed``: this batch's views and teacher
        logits from the teacher cache (then the views are not drawn and no teacher runs);
        ``view``: the batch's training view already made (:meth:`train_view`, by the epoch's
        :class:`~adaptkd.data.ahead.ViewsAhead`)."""
        if view is not None:
            x = view
        else:
            x = self.train_view(xb, self.gen, None if replayed is None else replayed.params)
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
        finite = self.nonfinite.check(None if self.input_bounded else x, logits, out, self.global_step)
        if skip_mode and not bool(self._all_ranks(finite)):
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
        # In memory on the CPU, the views are made ahead (data/ahead.py): on a background thread for large
        # batches, a chunk of batches at a time for small ones
        pixels = d.batch_size * self.pipe.in_channels * self.pipe.image_size ** 2
        source: Generator[tuple[Tensor, Tensor, None]] | ViewsAhead | ViewsInChunks
        if self.data is None or self.replay is not None or self.device.type != "cpu":
            source = ((xb, yb, None) for xb, yb in batches)
        elif ahead_pays(pixels, self.device):
            source = ViewsAhead(batches, self.train_view, self.gen)
        else:  # params is None only where nothing is random: then train_view draws nothing either
            source = ViewsInChunks(batches, lambda b, g: self.train_aug.draw(b, self.device, g),
                                   lambda x, p: self.train_view(x, self.gen, p), self.gen, chunk_batches(pixels))
        with contextlib.closing(source):
            for i, (xb, yb, view) in enumerate(source, start=start):
                if i >= steps:
                    break
                skipped = self.nonfinite_skipped
                replayed = None if self.replay is None else self.replay.batch(epoch, i, xb.shape[0])
                out, signals = self.train_step(xb, yb, epoch, i / steps, replayed, view)
                if self.nonfinite_skipped == skipped:  # a skipped step's non-finite values stay out of the means
                    self.meter.update(out.signals)
                    totals.add(out, signals, yb.to(self.device, non_blocking=True))
                totals.seen += xb.shape[0]
                self.global_step += 1
                if self.global_step % self.cfg.run.log_every == 0 or i == steps - 1:
                    self.raise_if_nonfinite()
                    now = time.perf_counter()
                    rec = step_record(self, epoch, out, signals)
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
        if self.dist.enabled:  # BatchNorm statistics drift per rank: evaluate rank 0's (the saved) model everywhere
            from adaptkd.engine.distributed import broadcast_state

            for name in self.learners:
                broadcast_state(self.networks[name], buffers_only=True)
        batches = self.pipe.val_batches if split == "val" else self.pipe.test_batches
        return {name: evaluate_batches(self.networks[name], batches(self.cfg.data.eval_batch_size), self.eval_aug,
                                       device=self.device, num_classes=self.num_classes, autocast_ctx=self.autocast)
                for name in self.learners}

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
                    rec, best = epoch_record(self, epoch, train)
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

