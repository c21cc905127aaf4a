"""``build_data``: one entry point for every dataset, by name."""

from __future__ import annotations

import difflib

from ._core import DataBundle, DataError
from .cifar import load_cifar
from .digits import load_digits_bundle
from .imagefolder import load_imagefolder
from .synthetic import make_synthetic

_DATASETS = ("cifar10", "cifar100", "digits", "imagefolder", "synthetic")


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_data`, sorted."""
    return list(_DATASETS)


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
    if key not in _DATASETS:
        close = difflib.get_close_matches(key, _DATASETS, n=2)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise DataError(f"unknown dataset {name!r}{hint}; available: {', '.join(_DATASETS)}")
    sizes = dict(image_size=image_size, num_classes=num_classes, train_size=train_size, test_size=test_size)
    for field_name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DataError(f"build_data: {field_name} must be an integer, got {value!r}")
    if key == "digits":
        return load_digits_bundle(data_seed=data_seed, **sizes)
    if key == "synthetic":
        kwargs = {k: v for k, v in sizes.items() if v is not None}
        return make_synthetic(seed=data_seed, **kwargs)
    if key == "imagefolder":
        return load_imagefolder(root=root, data_seed=data_seed, **sizes)
    return load_cifar(key, root=root, download=download, data_seed=data_seed, **sizes)
