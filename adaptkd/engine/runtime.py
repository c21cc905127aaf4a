"""Device, precision, seeding, threads and the distributed context."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import torch

__all__ = ["resolve_device", "resolve_precision", "autocast", "seed_everything", "DistInfo", "dist_info"]


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from adaptkd.config import ConfigError

    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"field `run.device`: {spec!r} is not a device (expected auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"field `run.device`: {spec!r} requested but CUDA is not available here (use device=cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"field `run.device`: {spec!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"field `run.device`: {spec!r} requested but MPS is not available here (use device=cpu or auto)")
    return dev


def resolve_precision(spec: str, device: torch.device) -> str:
    if spec == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return spec


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank information from the torchrun environment (single process when absent)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
