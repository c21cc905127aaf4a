"""CIFAR-10 / CIFAR-100 from the official python-pickle batches, loaded without executing
anything: a restricted unpickler admits only the numpy globals an array needs."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

import numpy as np
import torch

from ._core import DataBundle, DataError, Split, check_labels, resize_uint8, subsample

log = logging.getLogger(__name__)

DEFAULT_ROOT = "data"

# Official archives and their MD5 sums, as listed on https://www.cs.toronto.edu/~kriz/cifar.html
class CifarSpec(TypedDict):
    """Where a CIFAR variant's files are and what they hold."""

    title: str
    folder: str
    url: str
    md5: str
    train: list[str]
    test: list[str]
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        # per-channel mean/std of the 50,000 training images, [0, 1] units
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=["train"],
        test=["test"],
        meta="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


# ---------------------------------------------------------------------------------- unpickling


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes ``bytes`` into protocol-2 pickles as _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.ndarray((0,)).__reduce__()[0]  # numpy.core / numpy._core .multiarray._reconstruct
    scalar = np.int64(0).__reduce__()[0]  # ... .multiarray.scalar
    frombuffer = np.ndarray((0,)).__reduce_ex__(5)[0]  # ... .numeric._frombuffer (protocol 5)
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for data files: only numpy arrays, dtypes, scalars and plain Python
    containers/strings/numbers. Any other global (``os.system``, ``builtins.eval``, a class...)
    raises ``pickle.UnpicklingError`` before it is resolved."""

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a data file may only contain numpy arrays"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a data file")


def load_pickle(path: str | os.PathLike) -> Any:
    """Read one pickle with :class:`SafeUnpickler` (``encoding="bytes"`` as the original
    Python-2 CIFAR files need). Any failure becomes a :class:`DataError` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a valid data pickle: {e}") from e
    except Exception as e:  # truncated or garbage input surfaces as many exception types
        raise DataError(
            f"{path}: could not be unpickled ({type(e).__name__}: {e}); the file is truncated or "
            "not a CIFAR python batch — delete it and download/extract the archive again"
        ) from e


def _get(d: dict, key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    keys = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in d)
    raise DataError(f"{path}: missing key {key!r} (found keys: {keys})")


def read_batch(path: str | os.PathLike, label_key: str, num_classes: int) -> Split:
    """One CIFAR batch file -> :class:`Split` ``x uint8 [N, 3, 32, 32]``, ``y int64 [N]``,
    checking type, shape, dtype, label count and label range (errors name the file)."""
    path = Path(path)
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict with b'data' and b'{label_key}', got {type(d).__name__}")
    data = _get(d, "data", path)
    labels = _get(d, label_key, path)
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: 'data' must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' must have dtype uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must have shape [N, 3072] (3 x 32 x 32), got {list(data.shape)}")
    try:
        y = np.asarray(labels)
    except Exception as e:
        raise DataError(f"{path}: {label_key!r} is not a list of integers") from e
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise DataError(
            f"{path}: {label_key!r} must be a 1-D list of integers, got dtype {y.dtype} shape {list(y.shape)}"
        )
    if y.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {y.shape[0]} labels in {label_key!r}")
    if data.shape[0] == 0:
        raise DataError(f"{path}: the batch holds no images")
    y_t = torch.from_numpy(y.astype(np.int64))
    check_labels(y_t, num_classes, f"{path} ({label_key!r})")
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return Split(x, y_t)


def _read_names(path: Path, key: str, num_classes: int) -> list[str] | None:
    if not path.exists():
        log.warning("%s not found: class names will be numbers", path)
        return None
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict holding {key!r}, got {type(d).__name__}")
    names = _get(d, key, path)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        raise DataError(f"{path}: {key!r} must list {num_classes} class names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


# ------------------------------------------------------------------------------ locating files


def _find_folder(root: Path, spec: CifarSpec) -> tuple[Path | None, list[str]]:
    """The folder (``root`` or ``root/<archive folder>``) holding every batch file, else
    (None, files missing from the better candidate)."""
    needed = spec["train"] + spec["test"]
    best: list[str] | None = None
    for folder in (root, root / spec["folder"]):
        missing = [f for f in needed if not (folder / f).is_file()]
        if not missing:
            return folder, []
        if best is None or len(missing) < len(best):
            best = missing
    return None, best or needed


def load_cifar(
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
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) from
    ``root``: the folder holding the batch files or its parent. ``download=True`` fetches and
    verifies the official archive first when the files are missing. ``train_size``/
    ``test_size`` take class-stratified subsets (by ``data_seed``); ``image_size`` resizes."""
    spec = CIFAR[name]
    if num_classes is not None and num_classes != spec["num_classes"]:
        raise DataError(f"dataset {name!r} has {spec['num_classes']} classes, got num_classes={num_classes}")
    root_path = Path(os.path.expanduser(str(root if root is not None else DEFAULT_ROOT)))
    folder, missing = _find_folder(root_path, spec)
    if folder is None and download:
        download_and_extract(spec["url"], root_path, spec["md5"])
        folder, missing = _find_folder(root_path, spec)
        if folder is None:
            raise DataError(
                f"{spec['title']}: the archive from {spec['url']} did not contain {', '.join(missing)}"
            )
    if folder is None:
        raise DataError(
            f"{spec['title']} files not found: looked in {root_path} and {root_path / spec['folder']}, "
            f"missing {', '.join(missing)}. Pass download=True (config: data.download: true) to fetch "
            f"{spec['url']} into {root_path}, or download that archive yourself and extract it there."
        )

    def read_all(files: list[str]) -> Split:
        parts = [read_batch(folder / f, spec["label_key"], spec["num_classes"]) for f in files]
        if len(parts) == 1:
            return parts[0]
        return Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))

    train = subsample(read_all(spec["train"]), train_size, data_seed, f"{name} train_size")
    test = subsample(read_all(spec["test"]), test_size, data_seed, f"{name} test_size")
    size = 32
    if image_size is not None and image_size != 32:
        if image_size < 1:
            raise DataError(f"dataset {name!r}: image_size must be >= 1, got {image_size}")
        size = image_size
        train, test = Split(resize_uint8(train.x, size), train.y), Split(resize_uint8(test.x, size), test.y)
    names = _read_names(folder / spec["meta"], spec["names_key"], spec["num_classes"])
    return DataBundle(
        name=name,
        train=train,
        test=test,
        num_classes=spec["num_classes"],
        in_channels=3,
        image_size=size,
        mean=spec["mean"],
        std=spec["std"],
        class_names=names or [str(i) for i in range(spec["num_classes"])],
    )


# ------------------------------------------------------------------------ download and extract


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch_verified(url: str, path: str | os.PathLike, md5: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``path`` unless a file with MD5 ``md5`` is already there; the bytes
    land in ``path.part`` first and replace ``path`` only when their MD5 matches (a wrong sum or
    a failed transfer raises :class:`DataError` and leaves nothing behind)."""
    path = Path(path)
    if path.is_file() and md5sum(path) == md5:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    log.warning("downloading %s to %s", url, path)
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            while block := response.read(1 << 20):
                h.update(block)
                out.write(block)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {e}. Download it yourself into {path.parent}") from e
    if h.hexdigest() != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} has MD5 {h.hexdigest()}, expected {md5}: corrupted or changed, not used")
    os.replace(part, path)
    return path


def download_and_extract(url: str, root: str | os.PathLike, md5: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``root`` (kept as ``root/<archive name>``; an existing archive with
    the right MD5 is reused), check its MD5 and extract it with :func:`safe_extract`."""
    root = Path(root)
    archive = fetch_verified(url, root / url.rsplit("/", 1)[-1], md5, timeout=timeout)
    safe_extract(archive, root)
    return root


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Extract a tar archive into ``dest`` after checking every member: regular files and
    directories only (no links, devices or FIFOs), relative paths without ``..`` that stay
    inside ``dest``. A bad member raises :class:`DataError` naming it and nothing is
    extracted. Returns the member names."""
    archive, dest = Path(archive), Path(dest)
    dest_real = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                where = f"{archive}: member {m.name!r}"
                pure = PurePosixPath(m.name.replace("\\", "/"))
                if pure.is_absolute() or m.name.startswith(("/", "\\")) or (len(m.name) > 1 and m.name[1] == ":"):
                    raise DataError(f"{where} has an absolute path; refusing to extract")
                if ".." in pure.parts:
                    raise DataError(f"{where} contains '..'; refusing to extract")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{where} is a link or special file; refusing to extract")
                target = (dest_real / pure).resolve()
                if target != dest_real and dest_real not in target.parents:
                    raise DataError(f"{where} would be written outside {dest}; refusing to extract")
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(dest, members=members)
            return [m.name for m in members]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive}: cannot extract ({type(e).__name__}: {e})") from e
