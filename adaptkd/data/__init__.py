"""Datasets and batched augmentation.

``build_data(name, ...)`` returns a :class:`DataBundle` with both splits in memory as uint8
tensors; :func:`iterate_batches` walks a split deterministically (and shards it across
data-parallel ranks); :class:`Augment` crops, flips and normalises a batch on its device.
See ``docs/data.md``.
"""

from ._core import DataBundle, DataError, Split
from .augment import Augment
from .cifar import safe_extract
from .loader import iterate_batches, num_batches
from .registry import build_data, data_from_config, list_datasets, register_dataset
from .synthetic import coarse_of_class, make_synthetic

__all__ = [
    "Augment",
    "DataBundle",
    "DataError",
    "data_from_config",
    "register_dataset",
    "Split",
    "build_data",
    "coarse_of_class",
    "iterate_batches",
    "list_datasets",
    "make_synthetic",
    "num_batches",
    "safe_extract",
]
