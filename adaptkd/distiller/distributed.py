"""One Distiller run across the ranks of a process group (``torch.distributed``)."""

from __future__ import annotations

import torch

from adaptkd.distiller.module import Distiller
from adaptkd.distiller.output import DistillerError
from adaptkd.engine.distributed import communicator

__all__ = ["prepare_distributed"]


def prepare_distributed(distiller: Distiller, device: torch.device | str | None = None) -> Distiller:
    """Make ``distiller`` one run across the ranks of the initialised process group.

    Wraps only what trains (every learner) in ``DistributedDataParallel``; copies rank 0's method
    modules and frozen teachers to every rank; from then on :meth:`Distiller.backward` averages the
    gradients of the method's own parameters across ranks. Build the Distiller after
    ``torch.distributed.init_process_group`` (methods that decide per step, like SwitOKD, reduce
    their statistics across ranks). A no-op in a single process.
    """
    from adaptkd.engine.distributed import active, broadcast_state, wrap_learners

    if not active():
        return distiller
    if distiller.world_size != communicator().world_size:
        raise DistillerError(f"the Distiller was built for {distiller.world_size} process(es) but the process group "
                             f"has {communicator().world_size}: build it after torch.distributed.init_process_group")
    if distiller.distributed:
        return distiller
    dev = torch.device(device) if device is not None else next(distiller.student.parameters()).device
    broadcast_state(distiller.method)
    for t in distiller.teachers.values():
        broadcast_state(t)
    distiller.forward_nets.update(wrap_learners({n: distiller.forward_nets[n] for n in distiller.learner_names}, dev))
    distiller.distributed = True
    return distiller
