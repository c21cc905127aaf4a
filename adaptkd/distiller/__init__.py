"""``adaptkd.Distiller``: every adaptkd method as one ``nn.Module`` for any training loop.

The Distiller owns the networks of a distillation run and everything a method keeps between
steps: the learners (the student, and for online methods every network that trains), the frozen
teachers (eval mode, no grad, ``requires_grad=False``), the method (its modules and running
state), the balancer and the feature taps. One call per step runs every network once (teachers
under ``no_grad``) and the method, and returns a :class:`DistillOutput`::

    distiller = Distiller(student, teachers=[teacher], method="dtkd", temperature=4, steps_per_epoch=len(loader))
    opt = torch.optim.SGD(distiller.parameters(), lr=0.05, momentum=0.9)
    for x, y in loader:
        out = distiller(x, y)            # out.loss, out.terms, out.weights, out.signals, out.logits
        opt.zero_grad()
        out.loss.backward()              # or distiller.backward(out): needed by balance="gradient"
        opt.step()                       # or distiller.step(optimizers, out): needed by online methods

adaptkd's own :class:`~adaptkd.engine.trainer.Trainer` runs on this class: its ``train_step`` is
``distiller(x, y)`` → ``distiller.backward(out)`` → ``distiller.step(optimizers, out)`` plus the
engine's duties (augmentation, finiteness checks, learning-rate schedule, logging, checkpoints).
See ``docs/distiller.md``.

Units: :mod:`~adaptkd.distiller.module` (the Distiller: its parts, step and state),
:mod:`~adaptkd.distiller.build` (a config from the constructor's arguments or a file; the networks and
the method's context from a config), :mod:`~adaptkd.distiller.output` (what a call returns, the error
class), :mod:`~adaptkd.distiller.context` (fields that say what to pass when a method reads them
unset), :mod:`~adaptkd.distiller.distributed` (:func:`prepare_distributed`).
"""

from __future__ import annotations

from adaptkd.distiller.distributed import prepare_distributed
from adaptkd.distiller.module import Distiller
from adaptkd.distiller.output import DistillerError, DistillOutput

__all__ = ["DistillOutput", "Distiller", "DistillerError", "prepare_distributed"]
