"""Tests of adaptkd.data: file formats written for real in tmp_path, errors, determinism,
augmentation and batching. Small and CPU-only."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from adaptkd.data import (
    Augment,
    DataBundle,
    DataError,
    Split,
    build_data,
    coarse_of_class,
    iterate_batches,
    list_datasets,
    make_synthetic,
    num_batches,
    safe_extract,
)
from adaptkd.data.cifar import load_pickle

# ----------------------------------------------------------------------------- CIFAR fixtures


def _dump(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # like the original (Python 2) files


def _batch(rng, n, num_classes, label_key=b"labels"):
    return {
        b"batch_label": b"test batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, num_classes, size=n)],
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def cifar10_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _batch(rng, 6, 10)
        _dump(folder / name, batches[name])
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 6, b"num_vis": 3072})
    return folder, batches


@pytest.fixture
def cifar100_dir(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    batches = {}
    for name, n in (("train", 12), ("test", 5)):
        b = _batch(rng, n, 100, label_key=b"fine_labels")
        b[b"coarse_labels"] = [v // 5 for v in b[b"fine_labels"]]
        batches[name] = b
        _dump(folder / name, b)
    _dump(
        folder / "meta",
        {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": [b"c"] * 20},
    )
    return folder, batches


def test_cifar10_round_trip(cifar10_dir):
    folder, batches = cifar10_dir
    for root in (folder, folder.parent):  # the folder itself or its parent
        b = build_data("cifar10", root=str(root))
        assert (b.num_classes, b.in_channels, b.image_size) == (10, 3, 32)
        assert b.train.x.dtype == torch.uint8 and b.train.x.shape == (30, 3, 32, 32)
        assert b.test.x.shape == (6, 3, 32, 32) and b.train.y.dtype == torch.int64
        want = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
        assert np.array_equal(b.train.x.numpy(), want)
        assert b.train.y.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
        assert b.test.y.tolist() == batches["test_batch"][b"labels"]
        # the first 1024 values of a row are the red plane
        assert np.array_equal(b.test.x[0, 0].numpy().ravel(), batches["test_batch"][b"data"][0, :1024])
        assert b.class_names[0] == "airplane" and b.class_names[9] == "truck"
        assert b.mean == pytest.approx((0.4914, 0.4822, 0.4465))


def test_cifar100_round_trip_and_options(cifar100_dir):
    folder, batches = cifar100_dir
    b = build_data("cifar100", root=str(folder.parent))
    assert b.num_classes == 100 and len(b.class_names) == 100 and b.class_names[7] == "fine7"
    assert np.array_equal(b.train.x.numpy().reshape(12, 3072), batches["train"][b"data"])
    assert b.train.y.tolist() == batches["train"][b"fine_labels"]
    small = build_data("cifar100", root=str(folder), train_size=4, test_size=2, image_size=16)
    assert small.train.x.shape == (4, 3, 16, 16) and small.test.x.shape == (2, 3, 16, 16)
    again = build_data("cifar100", root=str(folder), train_size=4, test_size=2, image_size=16)
    assert torch.equal(small.train.x, again.train.x)
    with pytest.raises(DataError, match="num_classes=10"):
        build_data("cifar100", root=str(folder), num_classes=10)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.__setitem__(b"data", d[b"data"][:, :3000]), r"shape \[N, 3072\]"),
        (lambda d: d.__setitem__(b"data", d[b"data"].astype(np.float32)), "dtype uint8"),
        (lambda d: d.__setitem__(b"data", d[b"data"].astype(np.int16)), "dtype uint8"),
        (lambda d: d[b"labels"].__setitem__(2, 10), r"label 10 is outside \[0, 10\)"),
        (lambda d: d[b"labels"].__setitem__(0, -1), "label -1"),
        (lambda d: d[b"labels"].pop(), "6 images but 5 labels"),
        (lambda d: d.pop(b"labels"), "missing key 'labels'"),
    ],
)
def test_cifar_bad_batch_names_file(cifar10_dir, corrupt, message):
    folder, batches = cifar10_dir
    d = batches["data_batch_3"]
    corrupt(d)
    _dump(folder / "data_batch_3", d)
    with pytest.raises(DataError, match=message) as e:
        build_data("cifar10", root=str(folder))
    assert "data_batch_3" in str(e.value)


def test_cifar_truncated_and_missing(cifar10_dir, tmp_path):
    folder, _ = cifar10_dir
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="test_batch") as e:
        build_data("cifar10", root=str(folder))
    assert "truncated" in str(e.value)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="data_batch_2") as e:
        build_data("cifar10", root=str(folder.parent))
    assert "download=True" in str(e.value) and "cifar-10-python.tar.gz" in str(e.value)
    with pytest.raises(DataError, match="not found"):
        build_data("cifar100", root=str(tmp_path / "nothing-here"))


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def test_malicious_pickle_is_refused(cifar10_dir, tmp_path):
    folder, _ = cifar10_dir
    marker = tmp_path / "pwned"
    _dump(folder / "data_batch_1", {b"data": _Exploit(marker), b"labels": [0]})
    with pytest.raises(DataError, match=r"refusing to load global (posix|nt|os)\.system") as e:
        build_data("cifar10", root=str(folder))
    assert "data_batch_1" in str(e.value)
    assert not marker.exists()
    # other code-running globals are refused too, whatever the protocol
    bad = tmp_path / "eval.pkl"
    bad.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DataError, match="builtins.eval"):
        load_pickle(bad)
    bad.write_bytes(pickle.dumps({"x": Counter()}, protocol=4))
    with pytest.raises(DataError, match="collections.Counter"):
        load_pickle(bad)
    # plain data with numpy arrays/scalars still loads, at any protocol
    for protocol in (2, 4, 5):
        bad.write_bytes(pickle.dumps({b"a": np.arange(3, dtype=np.uint8), b"s": np.int64(7)}, protocol=protocol))
        d = load_pickle(bad)
        assert d[b"a"].tolist() == [0, 1, 2] and d[b"s"] == 7


def _tar(path, entries):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"hello"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_safe_extract(tmp_path):
    good = tmp_path / "good.tar.gz"
    _tar(good, [_file("cifar-10-batches-py/readme.html"), _file("cifar-10-batches-py/data_batch_1", b"x" * 10)])
    dest = tmp_path / "out"
    names = safe_extract(good, dest)
    assert sorted(names) == ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/readme.html"]
    assert (dest / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"x" * 10

    link = tarfile.TarInfo("cifar-10-batches-py/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    for i, (entries, message) in enumerate(
        [
            ([_file("ok.txt"), _file("../evil.txt")], "'..'"),
            ([_file("/tmp/abs-evil.txt")], "absolute"),
            ([(link, None)], "link"),
        ]
    ):
        bad = tmp_path / f"bad{i}.tar.gz"
        _tar(bad, entries)
        out = tmp_path / f"bad{i}"
        with pytest.raises(DataError, match=message) as e:
            safe_extract(bad, out)
        assert bad.name in str(e.value)
        assert not out.exists()  # nothing extracted, not even the good member
    assert not (tmp_path / "evil.txt").exists()


# ---------------------------------------------------------------------------- image folders


def _png(path, colour, size=(20, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "imgs"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _png(root / split / "b_red" / f"{i}.png", (255, 0, 0))
            _png(root / split / "a_blue" / f"{i}.png", (0, 0, 255), size=(40, 40))
    _png(root / "train" / "a_blue" / "gray.png", 128, mode="L")  # grayscale -> RGB
    _png(root / "train" / "a_blue" / "sub" / "nested.jpg", (0, 0, 255))
    (root / "train" / "a_blue" / "README.txt").write_text("not an image")
    (root / "train" / "notes.md").write_text("stray")
    (root / "train" / "b_red" / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_imagefolder_loads(image_root, caplog):
    with caplog.at_level(logging.WARNING):
        b = build_data("imagefolder", root=str(image_root), image_size=8)
    assert b.class_names == ["a_blue", "b_red"] and b.num_classes == 2
    assert b.train.x.shape == (8, 3, 8, 8) and b.test.x.shape == (4, 3, 8, 8)
    assert b.train.y.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    red = b.train.x[b.train.y == 1]
    assert (red[:, 0] == 255).all() and (red[:, 1:] == 0).all()
    assert (b.train.x[3] == 128).all()  # the grayscale image
    assert "ignored 2 file(s)" in caplog.text  # README.txt and notes.md; .DS_Store is hidden
    assert len(b.mean) == 3 and b.std[1] > 0


def test_imagefolder_errors(image_root, tmp_path):
    bad = image_root / "train" / "b_red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        build_data("imagefolder", root=str(image_root))
    bad.unlink()

    (image_root / "val" / "zebra").mkdir()
    _png(image_root / "val" / "zebra" / "z.png", (1, 2, 3))
    with pytest.raises(DataError, match="zebra.*subset"):
        build_data("imagefolder", root=str(image_root))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no train/"):
        build_data("imagefolder", root=str(empty))
    (empty / "train").mkdir()
    (empty / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        build_data("imagefolder", root=str(empty))
    (empty / "train" / "cls").mkdir()
    (empty / "train" / "cls" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="cls: class folder holds no images"):
        build_data("imagefolder", root=str(empty))
    _png(empty / "train" / "cls" / "a.png", (9, 9, 9))
    _png(empty / "test" / "cls" / "b.png", (9, 9, 9))  # test/ instead of val/
    assert len(build_data("imagefolder", root=str(empty)).test) == 1
    with pytest.raises(DataError, match="needs root"):
        build_data("imagefolder")


# ---------------------------------------------------------------------------------- digits


def test_digits_split():
    from sklearn.datasets import load_digits

    b = build_data("digits")
    assert (len(b.train), len(b.test), b.num_classes, b.in_channels, b.image_size) == (1437, 360, 10, 1, 8)
    assert b.train.x.dtype == torch.uint8 and int(b.train.x.max()) == 255
    counts = torch.bincount(b.test.y, minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 38  # stratified
    # train + test is exactly the bundled data set
    raw = load_digits()
    want = Counter((bytes(np.rint(img * 255 / 16).astype(np.uint8)), int(t)) for img, t in zip(raw.images, raw.target))
    got = Counter(
        (bytes(x.numpy().ravel()), int(y)) for s in (b.train, b.test) for x, y in zip(s.x, s.y)
    )
    assert got == want
    again, other = build_data("digits"), build_data("digits", data_seed=1)
    assert torch.equal(again.test.x, b.test.x) and torch.equal(again.train.y, b.train.y)
    assert not torch.equal(other.test.x, b.test.x)
    assert b.mean[0] == pytest.approx(float(b.train.x.double().mean() / 255), abs=1e-5)
    big = build_data("digits", image_size=16, train_size=100, test_size=50)
    assert big.train.x.shape == (100, 1, 16, 16) and big.test.x.shape == (50, 1, 16, 16)
    with pytest.raises(DataError, match="num_classes"):
        build_data("digits", num_classes=5)


# ------------------------------------------------------------------------------- synthetic

SMALL = dict(num_classes=16, coarse=4, image_size=12, train_size=1100, test_size=160)


def test_synthetic_determinism_and_balance():
    a = make_synthetic(**SMALL, seed=3)
    b = make_synthetic(**SMALL, seed=3)
    c = make_synthetic(**SMALL, seed=4)
    assert a.train.x.shape == (1100, 3, 12, 12) and a.train.x.dtype == torch.uint8
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert torch.equal(a.train.y, b.train.y) and a.mean == b.mean
    assert not torch.equal(a.train.x, c.train.x)
    counts = torch.bincount(a.train.y, minlength=16)
    assert int(counts.max() - counts.min()) <= 1
    assert torch.equal(torch.bincount(a.test.y, minlength=16), torch.full((16,), 10))
    assert a.class_names[5] == "coarse1_fine1"
    # the test set does not depend on train_size; a smaller train set is a prefix
    d = make_synthetic(**{**SMALL, "train_size": 300}, seed=3)
    assert torch.equal(d.test.x, a.test.x) and torch.equal(d.train.x, a.train.x[:300])
    # pixel statistics are not degenerate
    assert 0.2 < min(a.mean) and max(a.mean) < 0.8 and min(a.std) > 0.05


def test_synthetic_coarse_structure():
    b = make_synthetic(**SMALL, seed=0, noise=0.0, occlusion=0.0, clutter=0.0)
    means = torch.stack([b.train.x[b.train.y == k].double().mean(0).flatten() for k in range(16)])
    dist = torch.cdist(means, means)
    group = coarse_of_class(16, 4)
    assert group.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    same = group[:, None] == group[None, :]
    off_diag = ~torch.eye(16, dtype=torch.bool)
    within, between = dist[same & off_diag].mean(), dist[~same].mean()
    assert within < 0.8 * between
    # fine classes of one coarse class are still distinct
    assert float(dist[same & off_diag].min()) > 1.0


def test_synthetic_defaults_and_validation():
    b = build_data("synthetic", train_size=64, test_size=64)
    assert (b.num_classes, b.in_channels, b.image_size) == (64, 3, 16)
    assert b.train.x.shape == (64, 3, 16, 16)
    assert build_data("synthetic", image_size=8, num_classes=10, train_size=20, test_size=10).train.x.shape[-1] == 8
    for bad in (dict(image_size=40), dict(num_classes=1), dict(coarse=0), dict(noise=-1.0), dict(occlusion=2.0)):
        with pytest.raises(DataError, match=next(iter(bad))):
            make_synthetic(train_size=10, test_size=10, **bad)


# ------------------------------------------------------------------------------- augment


def test_augment_shapes_determinism_and_eval():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = torch.randint(0, 256, (16, 3, 10, 10), dtype=torch.uint8)
    aug = Augment(mean, std)
    out = aug(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, aug(x, torch.Generator().manual_seed(2)))
    ref = (x.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for ev in (Augment(mean, std, train=False), Augment(mean, std).eval()):
        assert torch.allclose(ev(x, torch.Generator().manual_seed(1)).double(), ref, atol=1e-5)
    assert aug.state_dict() == {}
    with pytest.raises(DataError, match="uint8"):
        aug(x.float())
    with pytest.raises(DataError, match="one value per channel"):
        Augment((0.5,), (0.2, 0.3))


def test_augment_crop_shifts_and_flips():
    p, n, h, w = 3, 400, 9, 11
    x = torch.zeros((n, 1, h, w), dtype=torch.uint8)
    x[:, 0, 4, 5] = 200  # one bright pixel
    aug = Augment((0.0,), (1.0,), crop_padding=p, flip=False)
    out = aug(x, torch.Generator().manual_seed(0)) * 255
    flat = out[:, 0].flatten(1).argmax(1)  # where the bright pixel went
    shifts = {(int(k) // w - 4, int(k) % w - 5) for k in flat}
    assert all(abs(dy) <= p and abs(dx) <= p for dy, dx in shifts)
    assert len(shifts) == (2 * p + 1) ** 2  # every offset occurs in 400 draws
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.full((n,), 200.0))  # content moved, not altered
    # a shift brings in zero padding (black)
    full = torch.full((n, 1, h, w), 255, dtype=torch.uint8)
    padded = aug(full, torch.Generator().manual_seed(0))
    assert (padded == 0).any() and (padded == 1).any()

    img = torch.arange(h * w, dtype=torch.uint8).view(1, 1, h, w).repeat(64, 1, 1, 1)
    flipper = Augment((0.0,), (1.0 / 255,), crop_padding=0, flip=True)
    res = flipper(img, torch.Generator().manual_seed(0)).round().to(torch.uint8)
    same = (res == img).flatten(1).all(1)
    mirrored = (res == img.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54


# ------------------------------------------------------------------------------- batching


def _ids(n):
    return Split(torch.zeros((n, 1, 2, 2), dtype=torch.uint8), torch.arange(n))


def test_iterate_batches_epoch_coverage_and_determinism():
    split = _ids(23)
    batches = list(iterate_batches(split, 5, shuffle=True, seed=7, epoch=0))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3] == [5] * 4 + [3]
    assert len(batches) == num_batches(23, 5, drop_last=False)
    order = torch.cat([y for _, y in batches])
    assert sorted(order.tolist()) == list(range(23))
    assert batches[0][0].shape == (5, 1, 2, 2) and batches[0][0].dtype == torch.uint8
    again = torch.cat([y for _, y in iterate_batches(split, 5, shuffle=True, seed=7, epoch=0)])
    next_epoch = torch.cat([y for _, y in iterate_batches(split, 5, shuffle=True, seed=7, epoch=1)])
    other_seed = torch.cat([y for _, y in iterate_batches(split, 5, shuffle=True, seed=8, epoch=0)])
    assert torch.equal(order, again) and not torch.equal(order, next_epoch) and not torch.equal(order, other_seed)
    plain = torch.cat([y for _, y in iterate_batches(split, 5, shuffle=False, seed=7, epoch=3)])
    assert plain.tolist() == list(range(23))
    dropped = list(iterate_batches(split, 5, shuffle=True, seed=7, epoch=0, drop_last=True))
    assert [len(y) for _, y in dropped] == [5] * 4 == [5] * num_batches(23, 5, drop_last=True)
    with pytest.raises(DataError, match="batch_size"):
        iterate_batches(split, 0, shuffle=True, seed=0, epoch=0)
    with pytest.raises(DataError, match="no full batch"):
        iterate_batches(split, 30, shuffle=True, seed=0, epoch=0, drop_last=True)


@pytest.mark.parametrize(
    "n, world, bs, drop_last", [(24, 3, 4, False), (23, 4, 3, False), (23, 4, 3, True), (5, 8, 2, False)]
)
def test_iterate_batches_shards(n, world, bs, drop_last):
    split = _ids(n)
    shards = []
    for rank in range(world):
        batches = list(
            iterate_batches(split, bs, shuffle=True, seed=1, epoch=2, drop_last=drop_last, rank=rank, world_size=world)
        )
        assert len(batches) == num_batches(n, bs, drop_last=drop_last, world_size=world)
        shards.append(torch.cat([y for _, y in batches]).tolist() if batches else [])
    per_rank = n // world if drop_last else -(-n // world)
    assert all(len(s) == (per_rank if not drop_last else per_rank // bs * bs) for s in shards)
    seen = Counter(i for s in shards for i in s)
    if drop_last:
        assert all(c == 1 for c in seen.values())  # disjoint
    else:
        assert set(seen) == set(range(n))  # together they cover the split...
        assert sum(seen.values()) - n == per_rank * world - n  # ...repeating only the padding
    with pytest.raises(DataError, match="rank"):
        iterate_batches(split, bs, shuffle=True, seed=1, epoch=0, rank=world, world_size=world)


# ------------------------------------------------------------------------ bundle and registry


def test_bundle_validation_and_registry():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion_mnist", "hf", "imagefolder", "mnist",
                               "synthetic",
                               "webdataset"]
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        build_data("cifar-10")
    good = Split(torch.zeros((3, 1, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 2]))
    bad = Split(torch.zeros((2, 1, 4, 4), dtype=torch.uint8), torch.tensor([0, 12]))
    with pytest.raises(DataError, match=r"test split: label 12 is outside \[0, 3\)"):
        DataBundle("toy", good, bad, 3, 1, 4, (0.5,), (0.2,), ["a", "b", "c"])
    with pytest.raises(DataError, match="empty"):
        Split(torch.zeros((0, 1, 4, 4), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(DataError, match="uint8"):
        Split(torch.zeros((3, 1, 4, 4)), torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match="channels"):
        DataBundle("toy", good, good, 3, 3, 4, (0.5,) * 3, (0.2,) * 3, [])


# ------------------------------------------------------------------------------ validation split


def test_val_split_is_stratified_seeded_and_disjoint():
    full = build_data("digits", train_size=1000)
    b = build_data("digits", train_size=1000, val_size=200)
    assert len(b.val) == 200 and len(b.train) == 800
    expected = torch.bincount(full.train.y, minlength=10).double() * 200 / 1000
    assert (torch.bincount(b.val.y, minlength=10) - expected).abs().max() <= 1  # every class in proportion
    # disjoint, and together the original training split
    def rows(s):
        return {bytes(x.numpy().tobytes()) + bytes([int(y)]) for x, y in zip(s.x, s.y)}

    assert not rows(b.val) & rows(b.train)
    assert len(b.val) + len(b.train) == len(full.train)
    assert torch.equal(torch.sort(torch.cat([b.val.y, b.train.y])).values, torch.sort(full.train.y).values)
    # seeded: same seed same split, another seed another; the test split never changes
    again = build_data("digits", train_size=1000, val_size=200)
    other = build_data("digits", train_size=1000, val_size=200, data_seed=1)
    assert torch.equal(again.val.x, b.val.x) and torch.equal(again.train.x, b.train.x)
    assert not torch.equal(other.val.x, b.val.x)
    assert torch.equal(b.test.x, full.test.x)
    assert build_data("digits", val_size=0).val is None


@pytest.mark.parametrize("bad", [-1, 1437, True])
def test_val_size_out_of_range_names_the_field(bad):
    with pytest.raises(DataError, match="val_size"):
        build_data("digits", val_size=bad)


def test_best_checkpoint_is_chosen_on_validation_and_test_scored_at_the_end(tmp_path):
    from adaptkd.engine.trainer import Trainer
    from tests.helpers import tiny_config

    cfg = tiny_config(tmp_path / "r", "ce", optim__epochs=3)
    cfg["data"]["val_size"] = 300
    s = Trainer(cfg).fit()
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert all("val/acc/student" in r and "test/acc/student" not in r for r in epochs)
    val = [r["val/acc/student"] for r in epochs]
    assert s["selection"] == "validation" and s["best_val_acc"] == max(val)
    assert s["best_epoch"] == val.index(max(val)) + 1
    from adaptkd.data import Augment
    from adaptkd.engine.evaluate import evaluate_model, load_run_model

    model, _ = load_run_model(str(tmp_path / "r"), which="best")
    data = build_data("digits")
    top1 = evaluate_model(model, data.test.x, data.test.y, Augment(data.mean, data.std, train=False))["top1"]
    assert s["best_acc"] == pytest.approx(top1, abs=1e-6)


def test_without_validation_split_best_is_the_last_epoch(tmp_path):
    from adaptkd.engine.trainer import Trainer
    from tests.helpers import tiny_config

    s = Trainer(tiny_config(tmp_path / "r", "ce", optim__epochs=2)).fit()
    assert s["selection"].startswith("last epoch") and s["best_epoch"] == 2 and s["best_acc"] == s["final_acc"]
    import torch as _t

    best = _t.load(tmp_path / "r" / "best.pt", weights_only=False)["models"]["student"]
    last = _t.load(tmp_path / "r" / "last.pt", weights_only=False)["models"]["student"]
    assert all(_t.equal(best[k], last[k]) for k in best)


def test_describe_source_names_data_passed_from_python():
    """What a run's config records as ``data.source`` for a DataBundle or a (train, test) pair of datasets."""
    from types import SimpleNamespace

    from adaptkd.data import describe_source

    pipe = SimpleNamespace(n_train=12, n_test=6, num_classes=3)
    bundle = make_synthetic(num_classes=4, coarse=2, image_size=8, train_size=8, test_size=4)
    assert describe_source(bundle, pipe) == f"DataBundle {bundle.name!r}: 12 train / 6 test images, 3 classes"
    pair = (torch.utils.data.TensorDataset(torch.zeros(2)), torch.utils.data.TensorDataset(torch.zeros(1)))
    assert describe_source(pair, pipe) == "TensorDataset / TensorDataset: 12 train / 6 test images, 3 classes"
