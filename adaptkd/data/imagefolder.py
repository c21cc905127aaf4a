"""``imagefolder``: ``root/train/<class>/<images>`` and ``root/val/<class>/...`` (or ``test/``),
decoded with Pillow into uint8 memory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ._core import DataBundle, DataError, Split, channel_stats, subsample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
DEFAULT_IMAGE_SIZE = 32


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _class_dirs(split_dir: Path) -> tuple[list[str], int]:
    """Sorted non-hidden sub-folders of ``split_dir``, and how many non-hidden plain files lie
    beside them (ignored)."""
    classes, stray = [], 0
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if _hidden(entry.name):
            continue
        if entry.is_dir():
            classes.append(entry.name)
        else:
            stray += 1
    return classes, stray


def _class_files(class_dir: Path) -> tuple[list[Path], int]:
    """Image files under ``class_dir`` (recursively, sorted, hidden files and folders skipped)
    and the number of other files ignored."""
    images, other = [], 0
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(filenames):
            if _hidden(name):
                continue
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                images.append(Path(dirpath) / name)
            else:
                other += 1
    return images, other


def decode_image(path: Path, size: int) -> np.ndarray:
    """uint8 ``[size, size, 3]``: Pillow decode, convert to RGB, resize the shorter side to
    ``size`` (bilinear, antialiased) and centre-crop. A file that does not decode raises
    :class:`DataError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at reduced scale when much larger
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # Pillow reports bad files with many exception types
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


def _load_split(split_dir: Path, classes: list[str], size: int, what: str) -> tuple[Split, int]:
    index = {c: i for i, c in enumerate(classes)}
    present, stray = _class_dirs(split_dir)
    if not present:
        raise DataError(f"{split_dir}: no class folders; expected {split_dir}/<class name>/<images>")
    unknown = [c for c in present if c not in index]
    if unknown:
        raise DataError(
            f"{split_dir}: class folder(s) {unknown} do not exist in the train split; "
            f"{what} classes must be a subset of the train classes"
        )
    files: list[Path] = []
    labels: list[int] = []
    ignored = stray
    for c in present:
        images, other = _class_files(split_dir / c)
        ignored += other
        if not images:
            raise DataError(
                f"{split_dir / c}: class folder holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        files += images
        labels += [index[c]] * len(images)
    if ignored:
        log.warning("%s: ignored %d file(s) without an image extension", split_dir, ignored)
    x = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        x[i] = decode_image(f, size)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    return Split(xt, torch.tensor(labels, dtype=torch.int64)), ignored


def load_imagefolder(
    *,
    root: str | os.PathLike | None,
    image_size: int | None = None,
    num_classes: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    data_seed: int = 0,
) -> DataBundle:
    """Read ``root/train/<class>/*`` and ``root/val/<class>/*`` (``root/test/`` if there is no
    ``val/``). Classes are the train sub-folders in sorted order; images are decoded to RGB
    uint8 ``image_size`` x ``image_size`` (default 32); mean/std come from the train split."""
    if root is None:
        raise DataError("dataset 'imagefolder' needs root: a folder holding train/<class>/ and val/<class>/")
    root_path = Path(os.path.expanduser(str(root)))
    if not root_path.is_dir():
        raise DataError(f"imagefolder root {root_path} does not exist or is not a folder")
    train_dir = root_path / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root_path}: no train/ folder; expected {root_path}/train/<class name>/<images>")
    test_dir = next((root_path / n for n in ("val", "test") if (root_path / n).is_dir()), None)
    if test_dir is None:
        raise DataError(f"{root_path}: no val/ (or test/) folder; expected {root_path}/val/<class name>/<images>")
    if test_dir.name == "val" and (root_path / "test").is_dir():
        log.warning("%s: both val/ and test/ exist; using val/", root_path)
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if size < 1:
        raise DataError(f"dataset 'imagefolder': image_size must be >= 1, got {size}")

    classes, _ = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"{train_dir}: no class folders; expected {train_dir}/<class name>/<images>")
    if num_classes is not None and num_classes != len(classes):
        raise DataError(f"{train_dir} has {len(classes)} class folders, but num_classes={num_classes}")
    train, _ = _load_split(train_dir, classes, size, "train")
    test, _ = _load_split(test_dir, classes, size, test_dir.name)
    train = subsample(train, train_size, data_seed, "imagefolder train_size")
    test = subsample(test, test_size, data_seed, "imagefolder test_size")
    mean, std = channel_stats(train.x)
    return DataBundle(
        name="imagefolder",
        train=train,
        test=test,
        num_classes=len(classes),
        in_channels=3,
        image_size=size,
        mean=mean,
        std=std,
        class_names=classes,
    )
