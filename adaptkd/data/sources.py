"""Random-access image sources for the streaming pipeline.

A source is a picklable list of samples: ``len(src)``, ``src.labels`` (int64 ``[N]``, known
without decoding), ``src.load(i)`` (encoded bytes or a Pillow image) and ``src.where(i)`` (the
file or record, for messages). Worker processes call ``load``; nothing is decoded up front.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._core import DataError
from .transforms import read_file

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)


class Source:
    """Base class: ``labels`` int64 ``[N]``; subclasses implement :meth:`load` and :meth:`where`."""

    labels: torch.Tensor
    description: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, i: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def where(self, i: int) -> str:
        return f"{self.description} sample {i}"

    def subset(self, index: torch.Tensor) -> Source:
        """The samples at ``index`` (a view: no data is read)."""
        return Subset(self, index)


class Subset(Source):
    def __init__(self, base: Source, index: torch.Tensor) -> None:
        self.base, self.index = base, index.to(torch.int64).tolist()
        self.labels = base.labels[index]
        self.description = base.description

    def load(self, i: int) -> Any:
        return self.base.load(self.index[i])

    def where(self, i: int) -> str:
        return self.base.where(self.index[i])


# ------------------------------------------------------------------------------------ folders


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _scan(class_dir: str) -> tuple[list[str], int]:
    """Image files under ``class_dir`` (recursive, sorted, hidden entries skipped) and the count
    of other files. Uses ``os.scandir`` only (no stat per file), so 100k files index in seconds."""
    images: list[str] = []
    other = 0
    stack = [class_dir]
    while stack:
        d = stack.pop()
        files: list[str] = []
        dirs: list[str] = []
        with os.scandir(d) as it:
            for e in it:
                if _hidden(e.name):
                    continue
                (dirs if e.is_dir() else files).append(e.name)
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(os.path.join(d, name))
            else:
                other += 1
        stack.extend(os.path.join(d, n) for n in sorted(dirs, reverse=True))
    return images, other


def class_folders(split_dir: Path) -> list[str]:
    """Sorted non-hidden sub-folders of ``split_dir``."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not _hidden(e.name))


class FileSource(Source):
    """Image files with labels: ``root/<class>/**/<image>``."""

    def __init__(self, paths: list[str], labels: list[int], description: str) -> None:
        self.paths = paths
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.description = description

    def load(self, i: int) -> bytes:
        return read_file(self.paths[i])

    def where(self, i: int) -> str:
        return self.paths[i]


def index_folder(split_dir: Path, classes: list[str], what: str) -> FileSource:
    """Index ``split_dir/<class>/**`` against the train ``classes`` (label = position). Raises
    :class:`DataError` for: no class folders, a class absent from train, a class folder without
    images, an unreadable file."""
    index = {c: i for i, c in enumerate(classes)}
    present = class_folders(split_dir)
    if not present:
        raise DataError(f"{split_dir}: no class folders; expected {split_dir}/<class name>/<images>")
    unknown = [c for c in present if c not in index]
    if unknown:
        raise DataError(
            f"{split_dir}: class folder(s) {unknown} do not exist in the train split; "
            f"{what} classes must be a subset of the train classes"
        )
    paths: list[str] = []
    labels: list[int] = []
    ignored = sum(1 for e in os.scandir(split_dir) if not e.is_dir() and not _hidden(e.name))
    for c in present:
        images, other = _scan(str(split_dir / c))
        ignored += other
        if not images:
            raise DataError(
                f"{split_dir / c}: class folder holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        paths += images
        labels += [index[c]] * len(images)
    unreadable = [p for p in paths if not os.access(p, os.R_OK)]
    if unreadable:
        raise DataError(f"{unreadable[0]}: file is not readable (permission denied)"
                        + (f"; {len(unreadable) - 1} more unreadable file(s)" if len(unreadable) > 1 else ""))
    if ignored:
        log.warning("%s: ignored %d file(s) without an image extension", split_dir, ignored)
    return FileSource(paths, labels, str(split_dir))


# ------------------------------------------------------------------------------------ tensors


class TensorSource(Source):
    """In-memory uint8 images ``[N, C, H, W]`` (or a user's ``torch.utils.data.Dataset``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, description: str) -> None:
        self.x, self.labels, self.description = x, y.to(torch.int64), description

    def load(self, i: int) -> Any:
        return array_to_image(self.x[i], self.where(i))


class DatasetSource(Source):
    """A map-style ``torch.utils.data.Dataset`` returning ``(image, label)``: image a Pillow image,
    a uint8 ``[C, H, W]`` tensor / ``[H, W, C]`` array, or a float one in [0, 1]."""

    def __init__(self, dataset: Any, description: str) -> None:
        self.dataset, self.description = dataset, description
        targets = getattr(dataset, "targets", None)
        if targets is None:  # one pass over the labels only when the dataset does not expose them
            targets = [int(dataset[i][1]) for i in range(len(dataset))]
        self.labels = torch.as_tensor(np.asarray(targets), dtype=torch.int64).reshape(-1)
        if self.labels.shape[0] != len(dataset):
            raise DataError(f"{description}: {self.labels.shape[0]} targets for {len(dataset)} samples")

    def load(self, i: int) -> Any:
        item = self.dataset[i]
        return array_to_image(item[0], self.where(i))


def array_to_image(img: Any, where: str) -> Any:
    """A Pillow image from a Pillow image, a uint8/float tensor ``[C, H, W]`` or array ``[H, W(, C)]``."""
    from PIL import Image

    if isinstance(img, Image.Image):
        return img
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if isinstance(img, torch.Tensor) and arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)  # [C, H, W] -> [H, W, C]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(f"{where}: expected an image [C, H, W] tensor or [H, W, C] array with 1, 3 or 4 "
                        f"channels, got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"{where}: image dtype {arr.dtype}; expected uint8, or float in [0, 1]")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr))


# ------------------------------------------------------------------------------------ Hugging Face


class HFSource(Source):
    """Rows of a map-style Hugging Face ``datasets.Dataset``; images read undecoded (bytes) so that
    the pipeline decodes them itself (reduced-scale JPEG, EXIF, mode conversion)."""

    def __init__(self, ds: Any, image_key: str, labels: torch.Tensor, description: str) -> None:
        self.ds, self.image_key, self.labels, self.description = ds, image_key, labels, description

    def load(self, i: int) -> Any:
        value = self.ds[i][self.image_key]
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return bytes(value["bytes"])
            if value.get("path"):
                return read_file(value["path"])
            raise DataError(f"{self.where(i)}: image record holds neither bytes nor a path")
        return array_to_image(value, self.where(i))

    def where(self, i: int) -> str:
        return f"{self.description} row {i}"


# ------------------------------------------------------------------------------------ tar shards

_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(pattern: str) -> list[str]:
    """``"train-{000..009}.tar"`` -> ten names (zero padding kept); several patterns may be joined
    by ``::`` or spaces. Brace ranges nest left to right."""
    out: list[str] = []
    for part in re.split(r"::|\s+", pattern.strip()):
        if not part:
            continue
        m = _BRACE.search(part)
        if not m:
            out.append(os.path.expanduser(part))
            continue
        lo, hi = m.group(1), m.group(2)
        width = len(lo) if lo.startswith("0") and len(lo) == len(hi) else 0
        for k in range(int(lo), int(hi) + 1):
            out += expand_shards(part[: m.start()] + str(k).zfill(width) + part[m.end():])
    return out


TAR_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")


def tar_sample_key(member: str) -> tuple[str, str]:
    """(sample key, extension) of a tar member: its folder and base name up to the first dot
    (``a/b/x.y.jpg`` → ``("a/b/x", "y.jpg")``), as WebDataset groups the members of one sample."""
    base = os.path.basename(member)
    key, _, ext = base.partition(".")
    return os.path.join(os.path.dirname(member), key), ext


class TarSource(Source):
    """Samples of WebDataset-style ``.tar`` shards: members ``<key>.<jpg|png|...>`` and
    ``<key>.cls`` (the class index as text). Indexed once (member offsets); a sample is then
    read by seeking into its shard."""

    def __init__(self, shards: list[str], description: str) -> None:
        self.description = description
        self.shards = shards
        entries: list[tuple[int, int, int]] = []
        labels: list[int] = []
        for s, shard in enumerate(shards):
            if not os.path.isfile(shard):
                raise DataError(f"{shard}: shard does not exist (from {description!r})")
            try:
                with tarfile.open(shard, "r:") as tf:
                    members: dict[str, dict[str, tarfile.TarInfo]] = {}
                    order: list[str] = []
                    for m in tf:
                        if not m.isfile():
                            continue
                        key, ext = tar_sample_key(m.name)
                        if key not in members:
                            members[key] = {}
                            order.append(key)
                        members[key][ext.lower()] = m
                    for key in order:
                        mem = members[key]
                        img = next((mem[k] for k in TAR_IMAGE_KEYS if k in mem), None)
                        if img is None or "cls" not in mem:
                            raise DataError(f"{shard}: sample {key!r} needs an image member "
                                            f"({'/'.join(TAR_IMAGE_KEYS)}) and a .cls member; has {sorted(mem)}")
                        raw = tf.extractfile(mem["cls"]).read()  # type: ignore[union-attr]
                        try:
                            labels.append(int(raw.decode().strip()))
                        except ValueError:
                            raise DataError(f"{shard}: {key}.cls holds {raw[:20]!r}; expected an integer "
                                            "class index") from None
                        entries.append((s, img.offset_data, img.size))
            except (tarfile.TarError, OSError) as e:
                raise DataError(f"{shard}: not a readable tar shard ({e})") from None
        if not entries:
            raise DataError(f"{description}: the shards hold no samples")
        self.entries = entries
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._files: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}  # open handles stay in their process

    def load(self, i: int) -> bytes:
        s, offset, size = self.entries[i]
        f = self._files.get(s)
        if f is None:
            f = self._files[s] = open(self.shards[s], "rb")  # noqa: SIM115 - kept open per worker
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise DataError(f"{self.where(i)}: truncated shard")
        return data

    def where(self, i: int) -> str:
        s, offset, _ = self.entries[i]
        return f"{self.shards[s]} (member at byte {offset})"

