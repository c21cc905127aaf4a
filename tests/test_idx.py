"""MNIST / Fashion-MNIST IDX loading: good files (gzipped or not), every bad input, downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct

import numpy as np
import pytest
import torch

from adaptkd.data import DataError, build_data
from adaptkd.data.idx import FILES, read_idx


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    head = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.astype(np.uint8).tobytes()


def write_set(folder, n_train=40, n_test=20, gz=True, labels=None, images=None):
    """Four IDX files of 28x28 images (pixel = label * 20 + noise) with labels 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 10
        x = (y[:, None, None] * 20 + rng.integers(0, 10, (n, 28, 28))).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    arrays.update(images or {})
    arrays.update(labels or {})
    for key, arr in arrays.items():
        data = arr if isinstance(arr, bytes) else idx_bytes(arr)
        name = FILES[key] + (".gz" if gz else "")
        (folder / name).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_loads_gzipped_and_plain_files_from_root(tmp_path, gz, name):
    arrays = write_set(tmp_path / "d", gz=gz)
    b = build_data(name, root=str(tmp_path / "d"))
    assert b.train.x.shape == (40, 1, 28, 28) and b.test.x.shape == (20, 1, 28, 28)
    assert b.train.x.dtype == torch.uint8 and b.num_classes == 10 and b.in_channels == 1 and b.image_size == 28
    assert torch.equal(b.train.x[:, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(b.test.y, torch.from_numpy(arrays["test_labels"].astype(np.int64)))
    assert len(b.class_names) == 10


def test_default_folder_is_data_slash_name(tmp_path, monkeypatch):
    write_set(tmp_path / "data" / "fashion_mnist")
    monkeypatch.chdir(tmp_path)
    assert len(build_data("fashion_mnist").train) == 40


def test_sizes_and_resize(tmp_path):
    write_set(tmp_path / "d")
    b = build_data("mnist", root=str(tmp_path / "d"), train_size=20, test_size=10, image_size=14)
    assert len(b.train) == 20 and len(b.test) == 10 and b.train.x.shape[-1] == 14
    assert torch.bincount(b.train.y).tolist() == [2] * 10  # class-stratified


def _expect(tmp_path, fragment, **kw):
    write_set(tmp_path / "d", **kw)
    with pytest.raises(DataError) as e:
        build_data("mnist", root=str(tmp_path / "d"))
    assert fragment in str(e.value)
    return str(e.value)


def test_wrong_magic_names_the_file(tmp_path):
    bad = b"\x01\x02\x08\x03" + idx_bytes(np.zeros((40, 28, 28), np.uint8))[4:]
    msg = _expect(tmp_path, "magic", images={"train_images": bad})
    assert "train-images-idx3-ubyte" in msg


def test_wrong_dimension_count_or_type(tmp_path):
    msg = _expect(tmp_path, "dimension", labels={"train_labels": np.zeros((40, 2), np.uint8)})
    assert "train-labels-idx1-ubyte" in msg
    as_int = idx_bytes(np.zeros(40, np.uint8), type_code=0x0C)
    assert "unsigned bytes" in _expect(tmp_path / "b", "0x0c", labels={"train_labels": as_int})


def test_truncated_file_names_the_file(tmp_path):
    data = idx_bytes(np.zeros((20, 28, 28), np.uint8))[:-100]
    msg = _expect(tmp_path, "truncated", images={"test_images": data})
    assert "t10k-images-idx3-ubyte" in msg


def test_truncated_gzip_stream(tmp_path):
    write_set(tmp_path / "d")
    f = tmp_path / "d" / (FILES["train_images"] + ".gz")
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        build_data("mnist", root=str(tmp_path / "d"))


def test_count_mismatch_names_both_files(tmp_path):
    msg = _expect(tmp_path, "labels", labels={"train_labels": np.arange(39) % 10})
    assert "40 images" in msg and "39 labels" in msg and "train-labels-idx1-ubyte" in msg


def test_label_outside_0_to_9(tmp_path):
    y = np.arange(20) % 10
    y[3] = 12
    msg = _expect(tmp_path, "label 12", labels={"test_labels": y})
    assert "t10k-labels-idx1-ubyte" in msg


def test_missing_files_refuse_without_download(tmp_path):
    with pytest.raises(DataError) as e:
        build_data("fashion_mnist", root=str(tmp_path / "empty"))
    assert "download=True" in str(e.value) and "train-images-idx3-ubyte" in str(e.value)


def test_read_idx_rejects_trailing_bytes(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx(p, 1)


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_download_fetches_and_verifies_every_file(tmp_path, monkeypatch):
    """download=True asks for the four official .gz files and keeps them only when their MD5
    matches; a wrong MD5 leaves nothing behind."""
    from adaptkd.data import cifar, idx

    src = tmp_path / "src"
    write_set(src)
    served = {FILES[k] + ".gz": (src / (FILES[k] + ".gz")).read_bytes() for k in FILES}
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        return _Response(served[url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(cifar.urllib.request, "urlopen", urlopen)
    good = {k: hashlib.md5(served[FILES[k] + ".gz"]).hexdigest() for k in FILES}
    monkeypatch.setitem(idx.IDX_DATASETS["mnist"], "md5", good)
    b = build_data("mnist", root=str(tmp_path / "dl"), download=True)
    assert len(b.train) == 40 and len(asked) == 4 and all(u.startswith("https://") for u in asked)
    bad = dict(good, test_labels="0" * 32)
    monkeypatch.setitem(idx.IDX_DATASETS["mnist"], "md5", bad)
    with pytest.raises(DataError, match="MD5"):
        build_data("mnist", root=str(tmp_path / "dl2"), download=True)
    assert not (tmp_path / "dl2" / (FILES["test_labels"] + ".gz")).exists()
    assert not list((tmp_path / "dl2").glob("*.part"))
