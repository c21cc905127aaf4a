"""PyTorch DDP through torchrun: process group, device, wrapping of trainable learners only."""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import nn

from adaptkd.engine.runtime import DistInfo

__all__ = ["setup_distributed", "wrap_learners", "barrier"]


def setup_distributed(info: DistInfo, device: torch.device) -> torch.device:
    """Initialise the default process group (NCCL on CUDA, gloo on CPU); return this rank's device."""
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def wrap_learners(learners: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """DDP wrappers for the trainable networks (frozen teachers are never wrapped)."""
    out = {}
    for name, net in learners.items():
        kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        out[name] = nn.parallel.DistributedDataParallel(net, broadcast_buffers=True, find_unused_parameters=False, **kw)
    return out


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()
