"""Datasets, the streaming pipeline and batched augmentation.

``build_data(name, ...)`` returns a :class:`DataBundle` with both splits in memory as uint8
tensors; :func:`iterate_batches` walks a split deterministically (and shards it across
data-parallel ranks); :func:`build_pipeline` turns the ``data:`` settings into a
:class:`Pipeline` (in memory, or streamed through DataLoader workers with per-sample
geometry); :class:`Augment` crops, flips and normalises a batch on its device.
See ``docs/data.md``.
"""

from ._core import DataBundle, DataError, Split
from .augment import Augment
from .build import build_pipeline, default_augment, describe, describe_source, test_pipeline
from .cifar import safe_extract
from .loader import iterate_batches, num_batches
from .registry import build_data, data_from_config, list_datasets, register_dataset
from .stream import MemoryPipeline, Pipeline, StreamPipeline
from .synthetic import coarse_of_class, make_synthetic
from .transforms import Geometry, center_crop_box, random_resized_crop_box

__all__ = [
    "Augment",
    "DataBundle",
    "DataError",
    "Geometry",
    "MemoryPipeline",
    "Pipeline",
    "Split",
    "StreamPipeline",
    "build_data",
    "build_pipeline",
    "center_crop_box",
    "coarse_of_class",
    "data_from_config",
    "default_augment",
    "describe",
    "describe_source",
    "iterate_batches",
    "list_datasets",
    "make_synthetic",
    "num_batches",
    "random_resized_crop_box",
    "register_dataset",
    "safe_extract",
    "test_pipeline",
]
