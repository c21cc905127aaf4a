"""PyTorch DDP through torchrun: process group, device, wrapping of trainable learners only, and
the few collectives the engine needs.

``torchrun --nproc_per_node=N -m adaptkd train CONFIG`` starts N processes; each builds the same
:class:`~adaptkd.engine.trainer.Trainer` and this module makes them one run:

- :func:`setup_distributed` joins the process group (NCCL on CUDA, gloo on CPU) and picks this
  rank's GPU (``LOCAL_RANK``).
- :func:`wrap_learners` wraps every trainable network in ``DistributedDataParallel`` (gradients
  averaged across ranks during backward); frozen teachers are never wrapped.
- :func:`broadcast_state` copies rank 0's parameters and buffers into modules DDP does not own
  (the method's own modules: projectors, attention; frozen teachers), so every rank starts equal.
- :func:`average_grads` averages the gradients of those method-owned parameters after backward
  (DDP only averages the gradients of the modules it wraps).
- :func:`mean_across_ranks`, :func:`all_ranks_true`, :func:`gather_objects` reduce metrics, flags
  and per-rank RNG states.

Every function here is a no-op (or the identity) when no process group is initialised, so the
single-process path never pays for them.
"""

from __future__ import annotations

import atexit
import inspect
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from adaptkd.comm import LOCAL, Communicator
from adaptkd.engine.runtime import DistInfo
from adaptkd.errors import ConfigError

__all__ = [
    "ProcessGroupComm",
    "communicator",
    "setup_distributed",
    "wrap_learners",
    "broadcast_state",
    "average_grads",
    "mean_across_ranks",
    "all_ranks_true",
    "gather_objects",
    "earliest_across_ranks",
    "barrier",
    "active",
    "check_same_stepping",
]


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def setup_distributed(info: DistInfo, device: torch.device) -> torch.device:
    """Initialise the default process group (NCCL on CUDA, gloo on CPU); return this rank's device.

    Rank, world size and the rendezvous come from the torchrun environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). A process group the caller
    initialised already is reused.
    """
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={info.local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                              "start at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        # a group left alive at interpreter exit can abort the process in the backend's teardown
        # ("terminate called without an active exception"): the group adaptkd made, adaptkd ends
        atexit.register(_end_process_group)
    return device


def _end_process_group() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def _ddp_kwargs() -> dict[str, Any]:
    # Rank 0's BatchNorm buffers are copied to every rank at each forward (the torchvision
    # reference default). torch >= 2.13 renamed the option; use whichever this torch has.
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": True} if "forward_sync_buffers" in params else {"broadcast_buffers": True}


def wrap_learners(learners: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """DDP wrappers for the trainable networks (frozen teachers are never wrapped).

    Feature taps stay valid: they are hooks on the inner module's submodules, which the wrapper
    calls. ``find_unused_parameters`` is off (every parameter of a network that is stepped gets a
    gradient); a learner whose loss is not backpropagated in a step (SwitOKD's paused teacher)
    is fine as long as every rank makes the same decision.
    """
    out: dict[str, nn.Module] = {}
    for name, net in learners.items():
        kw: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
        out[name] = nn.parallel.DistributedDataParallel(net, find_unused_parameters=False, **_ddp_kwargs(), **kw)
    return out


def broadcast_state(module: nn.Module, src: int = 0, *, buffers_only: bool = False) -> None:
    """Copy rank ``src``'s parameters and buffers (or only its buffers) into ``module`` on every
    rank, in place."""
    if not active():
        return
    tensors = ([] if buffers_only else list(module.parameters())) + list(module.buffers())
    with torch.no_grad():
        for t in tensors:
            tdist.broadcast(t.data, src)


def average_grads(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks for parameters DDP does not own, in one all-reduce, without
    a host synchronisation.

    Every rank runs the same method code, so a parameter has a gradient on all ranks or on none;
    a parameter without one (``grad=None``) contributes zeros to the buffer and keeps ``None``,
    so the optimiser skips it exactly as in a single process.
    """
    if not active():
        return
    plist = [p for p in params if p.requires_grad]
    if not plist:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in plist])
    tdist.all_reduce(flat)
    flat /= tdist.get_world_size()
    offset = 0
    for p in plist:
        k = p.numel()
        if p.grad is not None:
            p.grad = flat[offset : offset + k].view_as(p).to(p.dtype)
        offset += k


def mean_across_ranks(values: Tensor) -> Tensor:
    """Element-wise mean over ranks of a float tensor (identity in a single process)."""
    if not active():
        return values
    buf = values.detach().float().clone()
    tdist.all_reduce(buf)
    return buf / tdist.get_world_size()


def all_ranks_true(flag: Tensor) -> Tensor:
    """A bool tensor that is True where ``flag`` is True on every rank (identity in one process)."""
    if not active():
        return flag
    buf = flag.detach().to(torch.int32).clone()
    tdist.all_reduce(buf, op=tdist.ReduceOp.MIN)
    return buf.bool()


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def earliest_across_ranks(steps: Tensor) -> Tensor:
    """Element-wise earliest step over ranks, where ``-1`` means "never" (identity in one process)."""
    if not active():
        return steps
    never = torch.iinfo(torch.long).max
    buf = torch.where(steps < 0, torch.full_like(steps, never), steps).long()
    tdist.all_reduce(buf, op=tdist.ReduceOp.MIN)
    return torch.where(buf == never, torch.full_like(buf, -1), buf)


class ProcessGroupComm(Communicator):
    """A :class:`~adaptkd.comm.Communicator` over the default process group (SUM all-reduce)."""

    @property
    def world_size(self) -> int:
        return tdist.get_world_size()

    @property
    def rank(self) -> int:
        return tdist.get_rank()

    def sum(self, t: Tensor) -> Tensor:
        tdist.all_reduce(t)
        return t


def communicator() -> Communicator:
    """The communicator of this process: the process group's when one of several ranks is active, else LOCAL."""
    return ProcessGroupComm() if active() else LOCAL


def check_same_stepping(learners: list[str], stepping: list[str], device: torch.device, method: str) -> None:
    """Under DDP every rank must step the same learners (else the gradient all-reduce of a
    learner stepped on one rank only would wait forever): a clear error instead of a hang."""
    mask = torch.tensor([float(n in stepping) for n in learners], device=device)
    agreed = mean_across_ranks(mask).tolist()
    if any(0.0 < v < 1.0 for v in agreed):
        split = [n for n, v in zip(learners, agreed) if 0.0 < v < 1.0]
        raise RuntimeError(
            f"method {method!r} chose to step {split} on some ranks but not on others; under DDP "
            "the decision must be identical on every rank (reduce its statistics across ranks before deciding)"
        )
