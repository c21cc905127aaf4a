"""Device, precision, seeding, threads and the distributed context."""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from dataclasses import dataclass

import torch

from adaptkd.errors import ConfigError

__all__ = ["resolve_device", "resolve_precision", "autocast", "seed_everything", "configure_backends", "maybe_compile",
           "DistInfo", "dist_info"]


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"field `run.device`: {spec!r} is not a device "
                          "(expected auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"field `run.device`: {spec!r} requested but CUDA is not available here "
                          f"(use device=cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"field `run.device`: {spec!r} requested but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"field `run.device`: {spec!r} requested but MPS is not available here "
                          f"(use device=cpu or auto)")
    return dev


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(spec: str, device: torch.device) -> str:
    """``auto`` → bf16 on CUDA (fp16 where the GPU has no bf16), fp32 elsewhere; ``bf16``/``fp16``
    are checked against what this torch build's autocast supports on ``device`` (a clear
    ConfigError instead of a silently disabled autocast)."""
    if spec == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if spec == "fp32":
        return spec
    if spec not in _DTYPES:
        raise ConfigError(f"field `run.precision`: {spec!r} is not one of fp32, bf16, fp16, auto")
    if device.type == "cuda" and spec == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("field `run.precision`: bf16 is not supported by this GPU; use fp16 "
                          "(with loss scaling) or fp32")
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        raise ConfigError(f"field `run.precision`: {spec} needs autocast, which torch "
                          f"{torch.__version__} does not offer "
                          f"on device {device.type!r}; use precision=fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ctx = torch.autocast(device_type=device.type, dtype=_DTYPES[spec])
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"field `run.precision`: {spec} autocast is not supported on {device.type!r} "
                              f"by torch {torch.__version__} ({exc}); use precision=fp32") from None
    if not getattr(ctx, "_enabled", True) or any("autocast" in str(w.message).lower() for w in caught):
        msg = "; ".join(str(w.message) for w in caught) or "autocast disabled"
        raise ConfigError(f"field `run.precision`: {spec} autocast is not supported on {device.type!r} "
                          f"by torch {torch.__version__} ({msg}); use precision=fp32")
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
        torch.backends.cudnn.deterministic = True


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Speed settings that do not change results beyond kernel choice: cuDNN autotuning for the
    fixed input sizes of a training run on CUDA, unless ``run.deterministic`` asked for
    deterministic kernels."""
    if device.type == "cuda" and not deterministic:
        torch.backends.cudnn.benchmark = True


class _CompileFallback(torch.nn.Module):
    """Calls the ``torch.compile``-d module; if compiling fails at its first call (no C++
    compiler, unsupported Python or platform, a backend error), warns once and runs the eager
    module from then on. The two share parameters; only the forward differs."""

    _compiled: torch.nn.Module
    _eager: torch.nn.Module

    def __init__(self, compiled: torch.nn.Module, eager: torch.nn.Module, name: str) -> None:
        super().__init__()
        # Plain attributes, not submodules: the engine owns (saves, moves, switches train/eval on)
        # the eager module; this wrapper only routes the forward call.
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_eager", eager)
        self._name = name
        self._ok: bool | None = None

    @property
    def compiled(self) -> bool | None:
        """True once a compiled forward ran, False after falling back, None before the first call."""
        return self._ok

    def forward(self, *args, **kwargs):
        if self._ok is None:
            try:
                out = self._compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly
                self._ok = False
                warnings.warn(f"run.compile: compiling network {self._name!r} failed at its first call "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                              "running it uncompiled", RuntimeWarning, stacklevel=2)
            else:
                self._ok = True
                return out
        return (self._compiled if self._ok else self._eager)(*args, **kwargs)


def maybe_compile(module: torch.nn.Module, name: str) -> torch.nn.Module:
    """``torch.compile(module)`` guarded by a fallback: when torch has no ``compile``, when
    wrapping raises, or when the first compiled call fails, a ``RuntimeWarning`` names the network
    and the eager module is used. Compilation itself is lazy (first training step)."""
    fn = getattr(torch, "compile", None)
    if fn is None:
        warnings.warn(f"run.compile: torch {torch.__version__} has no torch.compile; network {name!r} runs uncompiled",
                      RuntimeWarning, stacklevel=2)
        return module
    try:
        compiled = fn(module)
    except Exception as exc:  # noqa: BLE001 - e.g. RuntimeError on an unsupported Python/platform
        warnings.warn(f"run.compile: torch.compile is unavailable for network {name!r} "
                      f"({type(exc).__name__}: {exc}); running it uncompiled", RuntimeWarning, stacklevel=2)
        return module
    return _CompileFallback(compiled, module, name)


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
