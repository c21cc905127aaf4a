"""``build_data``: one entry point for every dataset, by name (datasets live in one :class:`Registry`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from adaptkd._registry import Registry

from ._core import DataBundle, DataError
from .cifar import load_cifar
from .digits import load_digits_bundle
from .imagefolder import load_imagefolder
from .synthetic import make_synthetic

__all__ = ["build_data", "data_from_config", "list_datasets", "register_dataset"]

#: A dataset loader: ``fn(*, root, download, data_seed, image_size, num_classes, train_size, test_size)``.
Loader = Callable[..., DataBundle]
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering a dataset loader (keyword arguments as :func:`build_data`'s) as ``name``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_data`, sorted."""
    return DATASETS.names()


@register_dataset("digits")
def _digits(*, data_seed: int, root: str | None, download: bool, **sizes: int | None) -> DataBundle:
    return load_digits_bundle(data_seed=data_seed, **sizes)


@register_dataset("synthetic")
def _synthetic(*, data_seed: int, root: str | None, download: bool, **sizes: int | None) -> DataBundle:
    return make_synthetic(seed=data_seed, **{k: v for k, v in sizes.items() if v is not None})


@register_dataset("imagefolder")
def _imagefolder(*, data_seed: int, root: str | None, download: bool, **sizes: int | None) -> DataBundle:
    return load_imagefolder(root=root, data_seed=data_seed, **sizes)


@register_dataset("cifar10")
def _cifar10(*, data_seed: int, root: str | None, download: bool, **sizes: int | None) -> DataBundle:
    return load_cifar("cifar10", root=root, download=download, data_seed=data_seed, **sizes)


@register_dataset("cifar100")
def _cifar100(*, data_seed: int, root: str | None, download: bool, **sizes: int | None) -> DataBundle:
    return load_cifar("cifar100", root=root, download=download, data_seed=data_seed, **sizes)


def build_data(
    name: str,
    *,
    root: str | None = None,
    download: bool = False,
    image_size: int | None = None,
    num_classes: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    data_seed: int = 0,
) -> DataBundle:
    """Load or generate dataset ``name`` (see :func:`list_datasets`) into memory.

    ``root``: folder of the files (cifar10/cifar100: default ``./data``; imagefolder:
    required; ignored by digits and synthetic). ``download``: fetch CIFAR if missing (never
    otherwise). ``image_size``: resize (digits: 8, cifar: 32, imagefolder: 32) or generate at
    this size (synthetic: 16, 8..32). ``num_classes``: synthetic generates that many (default
    64); the others check it matches. ``train_size``/``test_size``: synthetic draws that many
    (default 10000/2000); digits sizes its split (default 1437/360); cifar and imagefolder take
    class-stratified subsets. ``data_seed`` fixes generation, the digits split and subsets.
    Bad arguments or files raise :class:`DataError`.
    """
    key = str(name).lower()
    if key not in DATASETS:
        close = DATASETS.closest(key, n=2)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise DataError(f"unknown dataset {name!r}{hint}; available: {', '.join(list_datasets())}")
    sizes = dict(image_size=image_size, num_classes=num_classes, train_size=train_size, test_size=test_size)
    for field_name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DataError(f"build_data: {field_name} must be an integer, got {value!r}")
    return DATASETS.get(key)(root=root, download=download, data_seed=data_seed, **sizes)


class _DataSection(Protocol):  # the fields of ``adaptkd.config.DataConfig`` read here
    name: str
    root: str | None
    download: bool
    image_size: int | None
    num_classes: int | None
    train_size: int | None
    test_size: int | None
    data_seed: int


def data_from_config(d: _DataSection, **over: Any) -> DataBundle:
    """The dataset a config's ``data:`` section describes (``over`` replaces fields, e.g. ``download=False``)."""
    kwargs = dict(root=d.root, download=d.download, image_size=d.image_size, num_classes=d.num_classes,
                  train_size=d.train_size, test_size=d.test_size, data_seed=d.data_seed)
    return build_data(d.name, **{**kwargs, **over})
