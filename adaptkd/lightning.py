"""PyTorch Lightning support: :class:`DistillationModule`, a ``LightningModule`` around a :class:`~adaptkd.Distiller`.

    from adaptkd import Distiller
    from adaptkd.lightning import DistillationModule

    module = DistillationModule(Distiller(student, [teacher], "dtkd", steps_per_epoch=len(loader)),
                                optim={"name": "sgd", "lr": 0.05, "epochs": 30, "schedule": "cosine"})
    lightning.Trainer(max_epochs=30).fit(module, loader, val_loader)

- Every loss term (``train/loss/{learner}/{term}``), weight and method signal of each step, and the
  method's per-epoch summaries, go through ``self.log`` to whichever logger the Trainer has.
- Optimisers: one per learner from an adaptkd optim config (``OptimConfig``, a dict of its fields,
  or None for the Distiller's config / the defaults), with its learning-rate schedule applied per
  iteration (a ``LambdaLR`` over :func:`adaptkd.engine.optim.lr_factor`); or your own: pass
  ``optim=callable(distiller)`` returning anything ``configure_optimizers`` may return.
- Optimisation is automatic (the Trainer back-propagates ``out.loss``) for one learner with the
  default balancer, and manual where the method needs it: online methods (one optimiser per
  learner, a paused learner's optimiser not called) and balancers that take several gradients
  (``balance="gradient"``, through :meth:`Distiller.backward`).
- A batch ``(x, y, teacher_logits)`` whose third item maps each frozen teacher's name to its logits
  (a teacher cache's views, from :meth:`adaptkd.replay.ReplayedViews.loader`) is distilled from
  those logits: no teacher runs. Any other third item is ignored, as before.
- Validation logs the student's ``val/acc`` and ``val/loss``; ``forward`` is the student's.
- Checkpoints hold the learners, the method's state, the balancer's and the Distiller's step
  counter: ``Trainer.fit(..., ckpt_path=...)`` resumes exactly.

Needs the optional extra: ``pip install 'adaptkd[lightning]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptkd.distiller import Distiller, DistillerError, DistillOutput
from adaptkd.errors import MissingExtraError

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        raise MissingExtraError("adaptkd.lightning needs PyTorch Lightning: pip install 'adaptkd[lightning]'") from None

__all__ = ["DistillationModule"]


class DistillationModule(pl.LightningModule):
    """A LightningModule training ``distiller`` (see the module docstring).

    Args:
        distiller: the :class:`~adaptkd.Distiller` to train.
        optim: None (the Distiller's optim config, else adaptkd's defaults), an ``OptimConfig`` or a
            dict of its fields, or ``callable(distiller)`` returning ``configure_optimizers``'s
            result (your optimisers; with manual optimisation, one optimiser per learner in
            ``distiller.learner_names`` order).
        log_signals: log every method/balancer signal each step (scalars only; vector signals are
            left to the per-epoch summaries).
    """

    def __init__(self, distiller: Distiller, optim: Any = None, *, log_signals: bool = True) -> None:
        super().__init__()
        self.distiller = distiller
        self.optim = optim
        self.log_signals = log_signals
        self.automatic_optimization = (len(distiller.learner_names) == 1 and distiller.kind == "offline"
                                       and not distiller.needs_own_backward)

    def forward(self, x: Tensor) -> Tensor:
        return self.distiller.student(x)

    # -- training -------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        precision = str(getattr(self.trainer, "precision", "32"))
        if self.distiller.needs_own_backward and precision.startswith("16"):
            raise DistillerError(f"balance {self.distiller.balancer.name!r} takes its own gradients, outside "
                                 f"Lightning's loss scaling for precision={precision!r}: use precision='bf16-mixed' "
                                 "or '32', or the default balancer")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        third = batch[2] if len(batch) > 2 else None  # a teacher cache's logits (ReplayedViews) by teacher name
        cached = third if isinstance(third, Mapping) and set(third) == set(self.distiller.frozen_names) else None
        out = self.distiller(x, y, epoch=self.current_epoch + 1, teacher_logits=cached)
        if self.automatic_optimization:
            self._log_step(out, x.shape[0])
            return out.loss
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        if len(opts) != len(self.distiller.learner_names):
            raise DistillerError(f"manual optimisation needs one optimiser per learner {self.distiller.learner_names}, "
                                 f"configure_optimizers gave {len(opts)}")
        by_name = dict(zip(self.distiller.learner_names, opts))
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        if self.distiller.needs_own_backward:
            self.distiller.backward(out)
        else:
            self.manual_backward(out.loss)
        for name in out.stepping:
            by_name[name].step()
        scheds = self.lr_schedulers()
        for sched in (scheds if isinstance(scheds, list) else [scheds] if scheds is not None else []):
            sched.step()  # type: ignore[call-arg]  # LambdaLR (or the user's per-step scheduler)
        self._log_step(out, x.shape[0])
        return out.loss.detach()

    def _log_step(self, out: DistillOutput, batch_size: int) -> None:
        values: dict[str, Any] = {}
        for learner, terms in out.terms.items():
            for term, v in terms.items():
                values[f"train/loss/{learner}/{term}"] = v.detach()
            for term, w in out.weights.get(learner, {}).items():
                values[f"train/weight/{learner}/{term}"] = w.detach() if isinstance(w, Tensor) else float(w)
        if self.log_signals:
            values.update({f"train/{k}": v.detach() for k, v in out.signals.items() if v.numel() == 1})
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("train/loss", out.loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)

    def on_train_epoch_end(self) -> None:
        summary = self.distiller.epoch_end(self.current_epoch + 1)
        numbers = {f"epoch/{k}": float(v) for k, v in summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self.log_dict(numbers, on_step=False, on_epoch=True)

    # -- validation -----------------------------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self.distiller.student(x).float()
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=x.shape[0])
        self.log("val/acc", (logits.argmax(1) == y).float().mean() * 100, on_epoch=True, prog_bar=True,
                 batch_size=x.shape[0])

    # -- optimisers -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if callable(self.optim):
            return self.optim(self.distiller)
        from adaptkd.engine.optim import lr_factor

        cfgs = self.distiller.optim_configs(self.optim)
        opts = self.distiller.build_optimizers(self.optim)
        spe = self.distiller.steps_per_epoch or self._steps_per_epoch()
        scheds = []
        for name in self.distiller.learner_names:
            cfg = cfgs[name]
            sched = torch.optim.lr_scheduler.LambdaLR(opts[name], _schedule(cfg, spe, lr_factor))
            scheds.append({"scheduler": sched, "interval": "step", "name": f"lr/{name}"})
        if len(opts) == 1:
            return {"optimizer": next(iter(opts.values())), "lr_scheduler": scheds[0]}
        return list(opts.values()), scheds

    def _steps_per_epoch(self) -> int:
        total = self.trainer.estimated_stepping_batches
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        if not total or total == float("inf"):
            raise DistillerError("cannot tell the steps per epoch for the learning-rate schedule: give the Distiller "
                                 "steps_per_epoch=, or set max_epochs and a sized train dataloader")
        return max(int(total) // epochs, 1)


def _schedule(cfg: Any, steps_per_epoch: int, lr_factor: Callable[[Any, int, float], float]) -> Callable[[int], float]:
    """LambdaLR multiplier at scheduler step k: adaptkd's per-iteration schedule at epoch k // spe + 1."""

    def factor(k: int) -> float:
        return lr_factor(cfg, k // steps_per_epoch + 1, (k % steps_per_epoch) / steps_per_epoch)

    return factor
