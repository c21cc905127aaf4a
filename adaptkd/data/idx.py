"""MNIST and Fashion-MNIST from the four standard IDX files (gzipped or not).

An IDX file is a 4-byte magic number (two zero bytes, a type code — 0x08 for unsigned bytes —
and the number of dimensions), one big-endian uint32 per dimension, then the values. Images are
``[N, 28, 28]`` (3 dimensions), labels ``[N]`` (1 dimension).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from ._core import DataBundle, DataError, Split, check_labels, resize_uint8, subsample
from .cifar import fetch_verified

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

class IdxSpec(TypedDict):
    """Where an IDX dataset is found and downloaded, and what it holds."""

    title: str
    url: str
    md5: dict[str, str]  #: {file key: MD5 of the official ``.gz``}
    system_folder: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]


# Official download locations and the MD5 of each official ``.gz`` file.
IDX_DATASETS: dict[str, IdxSpec] = {
    "mnist": {
        "title": "MNIST",
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "system_folder": "/usr/share/datasets/mnist",
        # per-channel statistics of the 60,000 training images, [0, 1] units
        "mean": (0.1307,),
        "std": (0.3081,),
        "classes": [str(i) for i in range(10)],
    },
    "fashion_mnist": {
        "title": "Fashion-MNIST",
        "url": "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "md5": {
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # where Debian's dataset-fashion-mnist package installs the files
        "system_folder": "/usr/share/datasets/fashion-mnist",
        "mean": (0.2860,),
        "std": (0.3530,),
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"],
    },
}

_UBYTE = 0x08


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """The uint8 array stored in IDX file ``path`` (gzip detected from its first bytes), which
    must have ``ndim`` dimensions. A wrong magic number, a value type other than unsigned byte,
    a truncated or over-long body or an unreadable gzip stream raise :class:`DataError` naming
    the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}); the file is damaged or truncated") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (wrong magic number {data[:4].hex() or 'empty'})")
    if data[2] != _UBYTE or data[3] != ndim:
        raise DataError(
            f"{path}: IDX magic number {data[:4].hex()} says type 0x{data[2]:02x} with {data[3]} dimensions; "
            f"expected unsigned bytes (0x08) with {ndim} dimension{'s' if ndim != 1 else ''}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, expected at least {header})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{path}: {what}: {len(data)} bytes for dimensions {dims}, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _locate(name: str, root: str | os.PathLike | None) -> list[Path]:
    """Folders searched for the files: ``root`` when given, else ``./data/<name>`` then the
    system folder of the packaged dataset."""
    if root is not None:
        return [Path(os.path.expanduser(str(root)))]
    return [Path("data") / name, Path(str(IDX_DATASETS[name]["system_folder"]))]


def _file_in(folder: Path, key: str) -> Path | None:
    for candidate in (folder / FILES[key], folder / (FILES[key] + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _find_files(name: str, root: str | os.PathLike | None) -> tuple[dict[str, Path] | None, list[Path]]:
    folders = _locate(name, root)
    for folder in folders:
        found = {key: _file_in(folder, key) for key in FILES}
        if all(found.values()):
            return {k: v for k, v in found.items() if v is not None}, folders
    return None, folders


def _download(name: str, root: str | os.PathLike | None) -> Path:
    spec = IDX_DATASETS[name]
    folder = _locate(name, root)[0]
    for key, md5 in spec["md5"].items():
        filename = FILES[key] + ".gz"
        fetch_verified(spec["url"] + filename, folder / filename, md5)
    return folder


def read_idx_split(images_path: Path, labels_path: Path) -> Split:
    """One split from its image file ``[N, H, W]`` and label file ``[N]``: the counts must
    match and every label must be in 0..9 (errors name the file)."""
    x = read_idx(images_path, 3)
    y = read_idx(labels_path, 1)
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{images_path} holds {x.shape[0]} images but {labels_path} holds {y.shape[0]} labels; "
            "expected one label per image"
        )
    if x.shape[0] == 0:
        raise DataError(f"{images_path}: holds no images")
    if x.shape[1] != x.shape[2]:
        raise DataError(f"{images_path}: images are {x.shape[1]}x{x.shape[2]}, expected square images")
    y_t = torch.from_numpy(y.astype(np.int64))
    check_labels(y_t, 10, str(labels_path))
    return Split(torch.from_numpy(x.copy()).unsqueeze(1), y_t)


def load_idx_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | None = None,
    num_classes: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    data_seed: int = 0,
) -> DataBundle:
    """``mnist`` or ``fashion_mnist`` as uint8 ``[N, 1, 28, 28]``: the four IDX files (``.gz``
    or not) from ``root``, or by default from ``./data/<name>`` then the system folder where a
    distribution package puts them. ``download=True`` fetches the official ``.gz`` files into
    ``root`` (default ``./data/<name>``) when they are not found, checking each MD5; nothing is
    downloaded otherwise. ``train_size``/``test_size`` take class-stratified subsets (by
    ``data_seed``); ``image_size`` resizes."""
    spec = IDX_DATASETS[name]
    if num_classes is not None and num_classes != 10:
        raise DataError(f"dataset {name!r} has 10 classes, got num_classes={num_classes}")
    files, folders = _find_files(name, root)
    if files is None and download:
        folder = _download(name, root)
        files, _ = _find_files(name, folder)
    if files is None:
        names = ", ".join(FILES.values())
        raise DataError(
            f"{spec['title']} files not found: looked in {', '.join(str(f) for f in folders)} for {names} "
            f"(each optionally .gz). Pass download=True (config: data.download: true) to fetch them from "
            f"{spec['url']}, or set data.root to the folder holding them."
        )
    train = read_idx_split(files["train_images"], files["train_labels"])
    test = read_idx_split(files["test_images"], files["test_labels"])
    train = subsample(train, train_size, data_seed, f"{name} train_size")
    test = subsample(test, test_size, data_seed, f"{name} test_size")
    size = int(train.x.shape[-1])
    if image_size is not None and image_size != size:
        size = image_size
        train, test = Split(resize_uint8(train.x, size), train.y), Split(resize_uint8(test.x, size), test.y)
    return DataBundle(
        name=name,
        train=train,
        test=test,
        num_classes=10,
        in_channels=1,
        image_size=size,
        mean=spec["mean"],
        std=spec["std"],
        class_names=list(spec["classes"]),
    )
