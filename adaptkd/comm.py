"""How methods and balancers reduce across the ranks of a run, without knowing about processes.

The engine hands every method (``MethodContext.comm``) and balancer (``BackwardContext.comm``) a
:class:`Communicator`. On one process it is :data:`LOCAL`, the identity; under DDP the engine
hands them one backed by the process group (:func:`adaptkd.engine.distributed.communicator`).
Only ``adaptkd/engine/`` talks to ``torch.distributed``.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["Communicator", "LOCAL"]


class Communicator:
    """Reductions across ranks; this base class is the single-process identity."""

    @property
    def world_size(self) -> int:
        return 1

    @property
    def rank(self) -> int:
        return 0

    def sum(self, t: Tensor) -> Tensor:
        """Sum ``t`` over the ranks, in place (every rank gets the result); returns ``t``."""
        return t

    def mean(self, t: Tensor) -> Tensor:
        """The mean of ``t`` over the ranks (``sum`` then ``/ world_size``; ``t`` itself on one process)."""
        return self.sum(t) / self.world_size if self.world_size > 1 else t


#: the communicator of a single-process run
LOCAL = Communicator()
