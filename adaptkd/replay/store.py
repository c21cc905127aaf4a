"""The teacher-cache file: a JSON header, then fixed-size arrays that are memory-mapped on read.

Layout (little-endian)::

    8 bytes   magic  b"ADKDTC01"
    8 bytes   header length H (uint64)
    H bytes   header: UTF-8 JSON (identity of the run that made it, storage, array table)
    padding   to a multiple of 64
    arrays    in the order of ``header["arrays"]``, each at its recorded byte offset

Rows are views: row ``(epoch - 1) * views_per_epoch + position``, where ``position`` counts the
views of one epoch in batch order. Every row holds the sample index, the augmentation
parameters (row offset, column offset, flip) and the teachers' logits, either full
(``logits [rows, teachers, classes]``) or as top-k (``values``/``indices [rows, teachers, k]``
plus ``rest [rows, teachers]``, the log-sum-exp of the logits outside the top k).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adaptkd.errors import CheckpointError

__all__ = ["MAGIC", "CacheFile", "CacheWriter", "array_specs", "cache_file", "decode_topk", "encode_topk"]

MAGIC = b"ADKDTC01"
_ALIGN = 64
_NP = {"fp16": np.float16, "fp32": np.float32}


def cache_file(folder: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The file of one rank (one shard of each epoch's views) in a cache folder."""
    return Path(os.path.expanduser(str(folder))) / f"teachers-rank{rank}-of-{world_size}.kdc"


def array_specs(rows: int, teachers: int, classes: int, dtype: str,
                topk: int | None) -> list[tuple[str, str, list[int]]]:
    """``[(name, numpy dtype string, shape)]`` of the arrays of a cache, in file order."""
    specs = [("index", "<i4", [rows]), ("params", "<i2", [rows, 3])]
    val = np.dtype(_NP[dtype]).str
    if topk is None:
        specs.append(("logits", val, [rows, teachers, classes]))
    else:
        specs += [("values", val, [rows, teachers, topk]),
                  ("indices", "u1" if classes <= 256 else "<i4", [rows, teachers, topk]),
                  ("rest", "<f4", [rows, teachers])]
    return specs


def _place(header: dict[str, Any]) -> tuple[bytes, int]:
    """Assign byte offsets to ``header["arrays"]``; returns (encoded header block, total file size)."""
    arrays = header["arrays"]
    for a in arrays:
        a["offset"] = 0
    # offsets depend on the header's length, which depends on the offsets' digits: iterate to a fixed point
    for _ in range(4):
        blob = json.dumps(header, sort_keys=True).encode()
        pos = -(-(16 + len(blob)) // _ALIGN) * _ALIGN
        changed = False
        for a in arrays:
            if a["offset"] != pos:
                a["offset"], changed = pos, True
            nbytes = int(np.dtype(a["dtype"]).itemsize * math.prod(a["shape"]))
            pos = -(-(pos + nbytes) // _ALIGN) * _ALIGN
        if not changed:
            break
    blob = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<Q", len(blob)) + blob, pos


class CacheWriter:
    """Writes a cache into ``path + ".tmp"`` and moves it to ``path`` on :meth:`close` (a cache
    under its final name is always complete)."""

    def __init__(self, path: Path, header: dict[str, Any], specs: list[tuple[str, str, list[int]]]) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        header = dict(header, arrays=[{"name": n, "dtype": d, "shape": s} for n, d, s in specs])
        block, size = _place(header)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.tmp, "wb") as f:
            f.write(block)
            f.truncate(size)
        self.header = header
        self.arrays = {a["name"]: np.memmap(self.tmp, dtype=a["dtype"], mode="r+", offset=a["offset"],
                                            shape=tuple(a["shape"])) for a in header["arrays"]}

    def write(self, start: int, **values: Tensor) -> None:
        """Rows ``start : start + len`` of each named array (tensors on any device)."""
        for name, v in values.items():
            arr = self.arrays[name]
            arr[start : start + v.shape[0]] = v.detach().cpu().numpy().astype(arr.dtype, copy=False)

    def close(self) -> Path:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays = {}
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path


class CacheFile:
    """A cache opened for reading: ``header`` and read-only (copy-on-write) memory maps.

    Raises :class:`CheckpointError` naming the file when it is missing, not a cache, of an
    unknown version or shorter/longer than its header says (truncated copy).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise CheckpointError(f"teacher cache {str(path)!r} does not exist; build it with "
                                  "`adaptkd cache-teacher CONFIG`")
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                raise CheckpointError(f"teacher cache {str(path)!r} is not an adaptkd teacher cache (bad magic bytes)")
            (n,) = struct.unpack("<Q", head[8:])
            if 16 + n > size:
                raise CheckpointError(f"teacher cache {str(path)!r} is truncated: its header runs past the end of "
                                      "the file")
            try:
                self.header: dict[str, Any] = json.loads(f.read(n).decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise CheckpointError(f"teacher cache {str(path)!r} has a corrupt header") from None
        _, expected = _place(json.loads(json.dumps(self.header)))
        if size != expected:
            raise CheckpointError(f"teacher cache {str(path)!r} is truncated or damaged: {size} bytes, its header "
                                  f"says {expected}; build it again with `adaptkd cache-teacher CONFIG`")
        self.arrays = {a["name"]: np.memmap(path, dtype=a["dtype"], mode="c", offset=a["offset"],
                                            shape=tuple(a["shape"])) for a in self.header["arrays"]}

    def rows(self, name: str, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of array ``name`` as a CPU tensor (read from the mapped file)."""
        return torch.from_numpy(np.ascontiguousarray(self.arrays[name][start:stop]))


def encode_topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``logits [..., K]`` → (top-k values ``[..., k]``, their class indices, ``rest [...]``: the
    log-sum-exp of the other ``K - k`` logits)."""
    values, indices = logits.topk(k, dim=-1)
    rest = logits.float().scatter(-1, indices, float("-inf")).logsumexp(-1)
    return values, indices, rest


def decode_topk(values: Tensor, indices: Tensor, rest: Tensor, classes: int) -> Tensor:
    """float32 ``[..., classes]`` logits from :func:`encode_topk`'s output: the top-k logits in
    place and every other class at ``rest - log(classes - k)``.

    The approximation: the log-partition and the probability of each top-k class are exact at
    temperature 1, the remaining mass is spread evenly over the other classes; at another
    temperature the tail's shape (not only its spread) differs from the teacher's.
    """
    k = values.shape[-1]
    fill = rest.float() - math.log(classes - k)
    out = fill[..., None].expand(*rest.shape, classes).clone()
    return out.scatter_(-1, indices.long(), values.float())
