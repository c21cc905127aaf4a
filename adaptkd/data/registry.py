"""``build_data``: one entry point for every dataset, by name (datasets live in one :class:`Registry`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from adaptkd._registry import Registry

from ._core import DataBundle, DataError, split_off_val
from .cifar import load_cifar
from .digits import load_digits_bundle
from .idx import load_idx_dataset
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
def _digits(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return load_digits_bundle(data_seed=data_seed, **sizes)


@register_dataset("synthetic")
def _synthetic(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return make_synthetic(seed=data_seed, **{k: v for k, v in sizes.items() if v is not None})


@register_dataset("imagefolder")
def _imagefolder(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return load_files_in_memory("imagefolder", root=root, data_seed=data_seed, **sizes)


@register_dataset("hf")
def _hf(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return load_files_in_memory("hf", root=root, data_seed=data_seed, **sizes)


@register_dataset("webdataset")
def _webdataset(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return load_files_in_memory("webdataset", root=root, data_seed=data_seed, **sizes)


@register_dataset("mnist")
def _mnist(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return load_idx_dataset("mnist", root=root, download=download, data_seed=data_seed, **sizes)


@register_dataset("fashion_mnist")
def _fashion_mnist(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return load_idx_dataset("fashion_mnist", root=root, download=download, data_seed=data_seed, **sizes)


@register_dataset("cifar10")
def _cifar10(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
    return load_cifar("cifar10", root=root, download=download, data_seed=data_seed, **sizes)


@register_dataset("cifar100")
def _cifar100(*, data_seed: int, root: str | None, download: bool, **sizes: Any) -> DataBundle:
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
    val_size: int = 0,
) -> DataBundle:
    """Load or generate dataset ``name`` (see :func:`list_datasets`) into memory.

    ``root``: folder of the files (cifar10/cifar100: default ``./data``; mnist/fashion_mnist:
    default ``./data/<name>``, then the folder a distribution package installs them in;
    imagefolder: required; ignored by digits and synthetic). ``download``: fetch CIFAR or the
    MNIST-style IDX files if missing (never otherwise). ``image_size``: resize (digits: 8, cifar: 32,
    imagefolder: 32) or generate at this size (synthetic: 16, 8..32). ``num_classes``: synthetic
    generates that many (default 64); the others check it matches. ``train_size``/``test_size``: synthetic
    draws that many (default 10000/2000); digits sizes its split (default 1437/360); cifar and
    imagefolder take class-stratified subsets. ``data_seed`` fixes generation, the digits split and subsets.
    ``val_size``: hold that many training images out as a class-stratified validation split
    (``bundle.val``, drawn by ``data_seed`` after ``train_size`` is applied; 0: none).
    Bad arguments or files raise :class:`DataError`.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, int):
        raise DataError(f"build_data: val_size must be an integer, got {val_size!r}")
    key = str(name).lower()
    if key == "python":
        raise DataError("this run was trained on data passed from Python (data.name: python), which adaptkd cannot "
                        "rebuild from the config; pass the same data again (e.g. Trainer(cfg, data=...))")
    if key not in DATASETS:
        close = DATASETS.closest(key, n=2)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise DataError(f"unknown dataset {name!r}{hint}; available: {', '.join(list_datasets())}")
    sizes = dict(image_size=image_size, num_classes=num_classes, train_size=train_size, test_size=test_size)
    for field_name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DataError(f"build_data: {field_name} must be an integer, got {value!r}")
    bundle = DATASETS.get(key)(root=root, download=download, data_seed=data_seed, **sizes)
    return split_off_val(bundle, val_size, data_seed)


class _DataSection(Protocol):  # the fields of ``adaptkd.config.DataConfig`` read here
    name: str
    root: str | None
    download: bool
    image_size: int | None
    num_classes: int | None
    train_size: int | None
    test_size: int | None
    data_seed: int
    val_size: int


def data_from_config(d: _DataSection, **over: Any) -> DataBundle:
    """The dataset a config's ``data:`` section describes (``over`` replaces fields, e.g. ``download=False``)."""
    kwargs = dict(root=d.root, download=d.download, image_size=d.image_size, num_classes=d.num_classes,
                  train_size=d.train_size, test_size=d.test_size, data_seed=d.data_seed,
                  val_size=getattr(d, "val_size", 0))
    return build_data(d.name, **{**kwargs, **over})


def load_files_in_memory(name: str, *, root: str | None, data_seed: int = 0, test_root: str | None = None,
                         **sizes: Any) -> DataBundle:
    """An image folder, HF dataset or shard set decoded whole into memory at ``image_size``
    (default 32) as the eval view (shorter side resized, centred square): the in-memory form
    :func:`build_data` returns (``root`` of ``webdataset``: ``"train-{0..9}.tar::val-{0..1}.tar"``
    or pass ``test_root``). Large sets are better streamed (:func:`adaptkd.data.build_pipeline`)."""
    from types import SimpleNamespace

    from .build import build_pipeline

    if name == "webdataset" and test_root is None and root and "::" in root:
        root, test_root = root.split("::", 1)
    image_size = sizes.get("image_size") or 32
    d = SimpleNamespace(name=name, root=root, download=False, image_size=image_size, data_seed=data_seed,
                        num_classes=sizes.get("num_classes"), train_size=sizes.get("train_size"),
                        test_size=sizes.get("test_size"), augment="cifar", crop_padding=None, flip=None,
                        crop_ratio=1.0, rrc_scale=(0.08, 1.0), rrc_ratio=(0.75, 4 / 3), cache="memory",
                        cache_budget_mb=0, workers=0, prefetch=2, channels=None, mean=None, std=None,
                        stats_samples=1, on_bad_image="stop", test_root=test_root, split="train", test_split=None,
                        image_key="image", label_key="label", streaming=False)
    pipe, _ = build_pipeline(d)
    return pipe.bundle  # type: ignore[attr-defined]
