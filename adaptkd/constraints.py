"""The constrained value types of every config section, in one place.

Every number a config can hold is one of these types, so a new option gets its bounds by
choosing a type rather than by writing a validator. Each type refuses:

* booleans where a number is expected (YAML's ``true`` is not the number 1),
* NaN and ±inf (``.nan``, ``.inf``, ``"inf"``),
* values outside the range the code and the machine can handle (stated in the bounds below).

Bounds that depend on the machine (threads, image memory) are stated next to their type.
:func:`short_repr` shows a user value in a message without building the repr of a huge value.
"""

from __future__ import annotations

import os
import reprlib
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = [
    "real", "integer", "short_repr",
    "Real", "NonNegative", "Positive", "Probability", "Fraction", "Weight", "Temperature", "Epochs",
    "LearningRate", "Seed", "Count", "PositiveInt", "NonNegativeInt", "SizeInt", "Threads", "BatchSize", "ImageSize",
    "CropPadding", "ClassCount", "Ratio", "AspectRatio", "PositiveEpochs", "EpochIndex", "Width", "Multiplier",
    "InitStd", "Scale", "Angle", "Milestone", "EpochCount", "WeightDecay", "Eps", "Gamma",
    "MAX_WEIGHT", "MAX_TEMPERATURE", "MIN_TEMPERATURE", "MAX_EPOCHS", "MAX_LR", "MAX_SEED", "MAX_COUNT",
    "MAX_IMAGE_SIZE", "MAX_CROP_PADDING", "MAX_BATCH_BYTES", "MAX_THREADS",
]

# -- the bounds (one place; docs/errors.md and the property test read them from here)
MAX_WEIGHT = 1e6  #: a loss weight: beyond it a float32 loss overflows at the first step
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e3  #: logits / T stays finite in float32, T² too
MAX_EPOCHS = 100_000  #: epochs, warm-ups, milestones
MAX_LR = 1e3  #: learning rates (a larger one overflows a float32 weight in one step)
MAX_SEED = 2**32 - 1  #: torch, numpy and Python generators all accept [0, 2**32)
MAX_COUNT = 1_000_000_000  #: steps, sample counts, intervals
MAX_IMAGE_SIZE = 1024  #: input side in pixels
MAX_CROP_PADDING = 256  #: random-crop padding in pixels (also at most the image side)
MAX_BATCH_BYTES = 4 * 2**30  #: float32 bytes of one padded input batch (batch x 3 x (size + 2 pad)²)
MAX_THREADS = max(4 * (os.cpu_count() or 1), 16)  #: intra-op threads: more only oversubscribes the CPU


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value}")
    return value


def real(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None) -> Any:
    """A finite float (no bool, no NaN/±inf) within the given bounds."""
    return Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False), Field(ge=ge, gt=gt, le=le, lt=lt)]


def integer(*, ge: int | None = None, le: int | None = None) -> Any:
    """An integer (no bool; a float only when it is whole) within the given bounds."""
    return Annotated[int, BeforeValidator(_no_bool), Field(ge=ge, le=le)]


def _max_threads(value: int) -> int:
    if value > MAX_THREADS:
        raise ValueError(f"at most {MAX_THREADS} threads on this machine ({os.cpu_count()} CPUs)")
    return value


Real = real(ge=-1e30, le=1e30)
NonNegative = real(ge=0, le=1e30)
Positive = real(gt=0, le=1e30)
Probability = real(ge=0, le=1)  #: in [0, 1]
Fraction = real(ge=0, lt=1)  #: in [0, 1): momenta, Adam betas, label smoothing, EMA rates
Weight = real(ge=0, le=MAX_WEIGHT)  #: a loss-term weight
Temperature = real(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)
Epochs = real(ge=0, le=MAX_EPOCHS)  #: a (fractional) number of epochs: warm-ups
LearningRate = real(gt=0, le=MAX_LR)
Seed = integer(ge=0, le=MAX_SEED)
Count = integer(ge=1, le=MAX_COUNT)
PositiveInt = Count
NonNegativeInt = integer(ge=0, le=MAX_COUNT)
SizeInt = integer(ge=1, le=65_536)  #: widths, dimensions, k of top-k
PositiveEpochs = real(gt=0, le=MAX_EPOCHS)  #: a warm-up that is divided by
EpochIndex = integer(ge=0, le=MAX_EPOCHS)  #: a number of whole epochs, 0 allowed
Width = integer(ge=1, le=4096)  #: a projection width, a top-k or a top-m (kept far below memory limits)
Multiplier = real(gt=0, le=16)  #: a width multiplier (hidden layer width / input width)
InitStd = real(gt=0, le=1)  #: the std of a weight initialisation
Scale = real(gt=0, le=1e3)  #: a positive factor of a controller (rho, kappa, ...)
Angle = real(gt=0, le=90)  #: an angle in degrees
Ratio = real(gt=0, le=1)  #: a fraction that must not be 0: a crop ratio, a scale
AspectRatio = real(gt=0, le=100)  #: width / height
BatchSize = integer(ge=1, le=65_536)
ImageSize = integer(ge=4, le=MAX_IMAGE_SIZE)
CropPadding = integer(ge=0, le=MAX_CROP_PADDING)
ClassCount = integer(ge=2, le=100_000)
Milestone = integer(ge=-MAX_EPOCHS, le=MAX_EPOCHS)  # (order and >= 1 checked with the list)
EpochCount = integer(ge=1, le=MAX_EPOCHS)
WeightDecay = real(ge=0, le=10)
Eps = real(gt=0, le=1)  #: Adam's epsilon
Gamma = real(gt=0, le=1)  #: a decay factor
Threads = Annotated[int, BeforeValidator(_no_bool), Field(ge=1), AfterValidator(_max_threads)]
CacheBudgetMB = integer(ge=0, le=16 * 2**20)  #: a memory budget in MiB (at most 16 TiB)
Workers = integer(ge=0, le=MAX_THREADS)  #: DataLoader worker processes
Prefetch = integer(ge=1, le=1024)  #: batches prefetched per worker
ChannelMean = real(ge=-1e3, le=1e3)  #: a per-channel normalisation mean
ChannelStd = real(gt=0, le=1e3)  #: a per-channel normalisation std
TopK = integer(ge=1, le=100_000)  #: classes kept per cached teacher output
Threshold = real(ge=0, le=1e3)  #: a non-negative threshold or multiplier


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 6, 6, 6
_REPR.maxset, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 6, 60, 60, 40


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters without ever building the full repr
    (a YAML alias bomb is a small file whose full repr is gigabytes)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
