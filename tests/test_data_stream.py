"""The streaming pipeline, natural-image transforms and sources, on files the tests write."""

from __future__ import annotations

import io
import math
import os
import random
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from adaptkd.config import DataConfig
from adaptkd.data import (
    DataError,
    Geometry,
    build_pipeline,
    center_crop_box,
    random_resized_crop_box,
)
from adaptkd.data.sources import expand_shards
from adaptkd.data.transforms import to_mode
from tests.helpers import crash_at_step, image_folder, make_image


def _cfg(**kw) -> DataConfig:
    base = {"name": "imagefolder", "workers": 0, "image_size": 16}
    return DataConfig.model_validate({**base, **kw})


# ------------------------------------------------------------------------------- transforms


def test_random_resized_crop_box_within_ranges():
    rng = random.Random(0)
    for w, h in ((500, 375), (64, 64), (37, 300)):
        for _ in range(300):
            left, top, cw, ch = random_resized_crop_box(w, h, rng)
            assert 0 <= left and left + cw <= w and 0 <= top and top + ch <= h
            frac, aspect = cw * ch / (w * h), cw / ch
            inside = 0.08 * 0.9 <= frac <= 1.0 and 3 / 4 * 0.9 <= aspect <= 4 / 3 * 1.1
            fallback = (cw, ch) in ((w, h), (w, round(w / 0.75)), (round(h * 4 / 3), h))
            assert inside or fallback, (w, h, cw, ch)


def test_random_resized_crop_box_fallback_clamps_aspect():
    class Never(random.Random):  # every try asks for more area than the image has
        def uniform(self, a, b):
            return b * 50

    left, top, cw, ch = random_resized_crop_box(400, 100, Never())
    assert (cw, ch) == (133, 100) and (left, top) == ((400 - 133) // 2, 0)


def test_center_crop_box_exact_geometry():
    # 500x375 -> shorter side 256 (224 / 0.875) -> 341x256 -> centre 224: offsets (58, 16) in resized pixels
    left, top, w, h = center_crop_box(500, 375, 224, 0.875)
    s = 375 / 256
    assert (w, h) == pytest.approx((224 * 500 / 341, 224 * s))
    assert (left, top) == pytest.approx((58 * 500 / 341, 16 * s))
    assert center_crop_box(40, 40, 40, 1.0) == (0, 0, 40, 40)


def test_geometry_deterministic_and_exact():
    data = io.BytesIO()
    make_image(50, 30, 1).save(data, "PNG")
    raw = data.getvalue()
    g = Geometry("random_resized_crop", 16, 3, seed=3)
    a, b = g(raw, "x", 1, 7), g(raw, "x", 1, 7)
    assert a.shape == (3, 16, 16) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, g(raw, "x", 2, 7))  # another epoch, another crop
    # centre view at ratio 1 of a square image of the output size is the image itself
    sq = io.BytesIO()
    make_image(16, 16, 2).save(sq, "PNG")
    c = Geometry("center", 16, 3)(sq.getvalue(), "x", 0, 0)
    assert torch.equal(c, torch.from_numpy(np.array(make_image(16, 16, 2))).permute(2, 0, 1))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "1"])
def test_modes_convert(mode):
    img = make_image(8, 6, 0, "RGB")
    img = img.convert("I") if mode == "I" else (img.convert("L").convert("I;16") if mode == "I;16" else
                                                 img.convert(mode))
    rgb, gray = to_mode(img, 3), to_mode(img, 1)
    assert rgb.mode == "RGB" and gray.mode == "L" and rgb.size == (8, 6)


def test_sixteen_bit_scaled_not_clipped():
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    assert np.asarray(to_mode(img, 1)).max() == 255
    img2 = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert np.asarray(to_mode(img2, 1)).max() == 128


def test_exif_orientation_honoured():
    img = make_image(30, 10, 0)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: displayed 10 x 30
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    from adaptkd.data.transforms import image_size, open_image

    assert image_size(buf.getvalue(), "x")[:2] == (10, 30)
    assert open_image(buf.getvalue(), "x").size == (10, 30)


def test_decompression_bomb_refused(monkeypatch):
    buf = io.BytesIO()
    make_image(40, 40, 0).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="decompression-bomb limit"):
        Geometry("center", 8, 3)(buf.getvalue(), "big.png", 0, 0)


# ------------------------------------------------------------------------------- image folders


def test_imagefolder_streams_deterministically_across_workers(tmp_path):
    root = image_folder(tmp_path / "img")
    batches = {}
    for w in (0, 1):
        pipe, res = build_pipeline(_cfg(root=str(root), workers=w, cache="none", augment="imagenet"))
        assert pipe.mode == "stream" and res["augment"] == "imagenet" and res["cache"] == "none"
        batches[w] = [(x.clone(), y.clone()) for x, y in pipe.train_batches(2, batch_size=3, seed=5, drop_last=False)]
        assert pipe.class_names == ["cat", "dog"] and pipe.in_channels == 3
        pipe.close()
    assert len(batches[0]) == 3
    for (x0, y0), (x1, y1) in zip(batches[0], batches[1]):
        assert x0.shape[1:] == (3, 16, 16) and torch.equal(x0, x1) and torch.equal(y0, y1)


def test_stream_sharding_resume_and_eval(tmp_path):
    root = image_folder(tmp_path / "img", per_class=(6, 5))
    pipe, _ = build_pipeline(_cfg(root=str(root), cache="none", augment="imagenet"))
    full = list(pipe.train_batches(1, batch_size=2, seed=0, drop_last=False))
    tail = list(pipe.train_batches(1, batch_size=2, seed=0, drop_last=False, start=2))
    assert len(tail) == len(full) - 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[2:], tail))  # same samples, same crops
    ranks = [list(pipe.train_batches(1, batch_size=2, seed=0, drop_last=True, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == pipe.steps_per_epoch(2, drop_last=True, world_size=2)
    ys = [torch.cat([b[1] for b in r]) for r in ranks]
    assert sum(len(y) for y in ys) == 8  # 11 images: 5 per rank, 2 full batches of 2 each
    ev = list(pipe.test_batches(3))
    assert sum(len(b[1]) for b in ev) == 4 and torch.equal(torch.cat([b[1] for b in ev]), pipe.test_labels)


def test_cache_auto_memory_within_budget_else_stream(tmp_path):
    root = image_folder(tmp_path / "img")
    mem, res = build_pipeline(_cfg(root=str(root), image_size=8))
    assert mem.mode == "memory" and res["cache"] == "memory" and res["augment"] == "cifar"
    streamed, res2 = build_pipeline(_cfg(root=str(root), image_size=8, cache_budget_mb=0))
    assert streamed.mode == "stream" and res2["cache"] == "none"
    # the same eval view whether cached or streamed
    a = torch.cat([x for x, _ in mem.test_batches(8)])
    b = torch.cat([x for x, _ in streamed.test_batches(8)])
    assert torch.equal(a, b)
    # streamed statistics (float64 accumulators, all 8 images) equal the in-memory ones
    assert streamed.mean == pytest.approx(mem.mean, abs=1e-6) and streamed.std == pytest.approx(mem.std, abs=1e-6)
    with pytest.raises(DataError, match="data.cache"):
        build_pipeline(_cfg(root=str(root), cache="memory", augment="imagenet"))


def test_grayscale_folder_stays_one_channel(tmp_path):
    root = image_folder(tmp_path / "img", fmt="PNG", mode="L")
    pipe, res = build_pipeline(_cfg(root=str(root), image_size=8))
    assert pipe.in_channels == 1 and res["channels"] == 1 and len(pipe.mean) == 1
    rgb, _ = build_pipeline(_cfg(root=str(root), image_size=8), need_rgb=True)
    assert rgb.in_channels == 3


def test_bad_image_mid_epoch_stops_or_skips(tmp_path):
    root = image_folder(tmp_path / "img")
    bad = root / "train" / "dog" / "2.jpg"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    pipe, _ = build_pipeline(_cfg(root=str(root), cache="none", augment="imagenet", mean=[0.5] * 3, std=[0.2] * 3))
    with pytest.raises(DataError, match=r"2\.jpg.*not a readable image"):
        list(pipe.train_batches(1, batch_size=4, seed=0, drop_last=False))
    skip, _ = build_pipeline(_cfg(root=str(root), cache="none", augment="imagenet", mean=[0.5] * 3, std=[0.2] * 3,
                                  on_bad_image="skip", workers=1))
    n = sum(len(y) for _, y in skip.train_batches(1, batch_size=4, seed=0, drop_last=False))
    assert n == 7 and skip.skipped == 1
    skip.close()


def test_folder_errors_before_training(tmp_path):
    root = image_folder(tmp_path / "img")
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        build_pipeline(_cfg(root=str(root)))
    (root / "train" / "empty").rmdir()
    (root / "val" / "bird").mkdir()
    (root / "val" / "bird" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"\['bird'\] do not exist in the train split"):
        build_pipeline(_cfg(root=str(root)))
    notimg = image_folder(tmp_path / "n")
    for p in (notimg / "train").rglob("0.jpg"):
        p.write_text("not an image")
    with pytest.raises(DataError, match="0.jpg: not a readable image"):
        build_pipeline(_cfg(root=str(notimg), cache="none", augment="imagenet"))


def test_indexing_does_not_decode(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "img", per_class=(40, 40))
    import adaptkd.data.transforms as T

    calls = []
    real = T.open_image
    monkeypatch.setattr(T, "open_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    pipe, _ = build_pipeline(_cfg(root=str(root), cache="none", augment="imagenet", mean=[0.5] * 3, std=[0.2] * 3))
    assert pipe.n_train == 80 and len(calls) == 0  # headers of the channel probe only


# ------------------------------------------------------------------------------- HF and shards


def _hf_dataset(path: Path) -> Path:
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee", "cow"])})
    splits = {}
    for split, n in (("train", 9), ("validation", 3)):
        splits[split] = datasets.Dataset.from_dict(
            {"image": [make_image(12 + i, 10, i) for i in range(n)], "label": [i % 3 for i in range(n)]},
            features=feats)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def test_hf_dataset_from_disk(tmp_path):
    path = _hf_dataset(tmp_path / "hf")
    pipe, res = build_pipeline(_cfg(name="hf", root=str(path), image_size=8, cache="none"))
    assert pipe.class_names == ["ant", "bee", "cow"] and pipe.n_train == 9 and pipe.n_test == 3
    xs = list(pipe.train_batches(1, batch_size=4, seed=0, drop_last=False))
    assert xs[0][0].shape == (4, 3, 8, 8)
    with pytest.raises(DataError, match="data.image_key"):
        build_pipeline(_cfg(name="hf", root=str(path), image_key="img"))
    with pytest.raises(DataError, match="no split 'nope'"):
        build_pipeline(_cfg(name="hf", root=str(path), split="nope"))


def test_hf_parquet_and_imagefolder_builder(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = datasets.load_from_disk(str(_hf_dataset(tmp_path / "hf")))
    pq = tmp_path / "pq"
    pq.mkdir()
    for split in ("train", "validation"):
        saved[split].to_parquet(str(pq / f"{split}-00000-of-00001.parquet"))
    pipe, _ = build_pipeline(_cfg(name="hf", root=str(pq), image_size=8, cache="none"))
    assert pipe.class_names == ["ant", "bee", "cow"] and (pipe.n_train, pipe.n_test) == (9, 3)
    folder = image_folder(tmp_path / "img")  # the datasets imagefolder builder reads train/ and val/ class folders
    pipe2, _ = build_pipeline(_cfg(name="hf", root=str(folder), image_size=8, cache="none"))
    assert pipe2.class_names == ["cat", "dog"] and (pipe2.n_train, pipe2.n_test) == (8, 4)


def _shards(root: Path, prefix: str, n_shards: int, per: int) -> str:
    root.mkdir(exist_ok=True)
    for s in range(n_shards):
        with tarfile.open(root / f"{prefix}-{s:03d}.tar", "w") as tf:
            for i in range(per):
                buf = io.BytesIO()
                make_image(14, 12, s * 100 + i).save(buf, "JPEG")
                for name, data in ((f"s{s}_{i}.jpg", buf.getvalue()), (f"s{s}_{i}.cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return str(root / f"{prefix}-{{000..{n_shards - 1:03d}}}.tar")


def test_brace_expansion():
    assert expand_shards("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    assert expand_shards("x{1..2}y{0..1}") == ["x1y0", "x1y1", "x2y0", "x2y1"]


def test_webdataset_shards(tmp_path):
    train = _shards(tmp_path / "sh", "train", 3, 4)
    val = _shards(tmp_path / "sh", "val", 1, 3)
    pipe, res = build_pipeline(_cfg(name="webdataset", root=train, test_root=val, image_size=8, workers=1))
    assert pipe.n_train == 12 and pipe.n_test == 3 and pipe.num_classes == 2 and res["cache"] == "none"
    got = list(pipe.train_batches(1, batch_size=5, seed=0, drop_last=False))
    assert [len(y) for _, y in got] == [5, 5]  # floor(12 / 5) on every rank
    assert sum(len(y) for _, y in pipe.test_batches(2)) == 3
    mem, _ = build_pipeline(_cfg(name="webdataset", root=train, test_root=val, image_size=8, cache="memory"))
    assert mem.mode == "memory" and mem.n_train == 12  # indexed once, read by seeking
    with pytest.raises(DataError, match="does not exist"):
        build_pipeline(_cfg(name="webdataset", root=str(tmp_path / "none-{0..1}.tar"), test_root=val))


def test_shard_streams_split_by_rank_and_worker_and_resume(tmp_path):
    train = _shards(tmp_path / "sh", "train", 6, 5)
    val = _shards(tmp_path / "sh", "val", 1, 2)
    cfg = _cfg(name="webdataset", root=train, test_root=val, image_size=8, workers=2, augment="imagenet",
               mean=[0.5] * 3, std=[0.2] * 3)
    pipe, _ = build_pipeline(cfg)
    full = [(x.clone(), y.clone()) for x, y in pipe.train_batches(3, batch_size=3, seed=1, drop_last=True)]
    again = list(pipe.train_batches(3, batch_size=3, seed=1, drop_last=True))
    assert len(full) == 10 and all(torch.equal(a[0], b[0]) for a, b in zip(full, again))
    for start in (1, 3):  # resume: the batches still to come, the same crops, with 2 workers
        tail = list(pipe.train_batches(3, batch_size=3, seed=1, drop_last=True, start=start))
        assert len(tail) == 10 - start and all(torch.equal(a[0], b[0]) for a, b in zip(full[start:], tail))
    other = list(pipe.train_batches(4, batch_size=3, seed=1, drop_last=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(full, other))  # another epoch, another order
    # two ranks: disjoint shards, the same number of steps
    seen = []
    for rank in (0, 1):
        batches = list(pipe.train_batches(3, batch_size=3, seed=1, drop_last=True, rank=rank, world_size=2))
        assert len(batches) == pipe.steps_per_epoch(3, drop_last=True, world_size=2) == 5
        seen.append(set(pipe._train.plan["shards"]))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 6


def test_hf_streaming(tmp_path):
    path = _hf_dataset(tmp_path / "hf")
    pipe, res = build_pipeline(_cfg(name="hf", root=str(path), image_size=8, streaming=True, workers=1))
    assert pipe.class_names == ["ant", "bee", "cow"] and (pipe.n_train, pipe.n_test) == (9, 3)
    assert [len(y) for _, y in pipe.train_batches(1, batch_size=4, seed=0, drop_last=True)] == [4, 4]
    assert sum(len(y) for _, y in pipe.test_batches(2)) == 3 and len(res["mean"]) == 3
    with pytest.raises(DataError, match="cannot give each of 10 rank"):
        list(pipe.train_batches(1, batch_size=1, seed=0, drop_last=True, rank=0, world_size=10))


# ------------------------------------------------------------------------------- defaults


def test_per_dataset_augment_defaults():
    from adaptkd.data import default_augment

    assert default_augment("digits", 8) == {"augment": "cifar", "crop_padding": 1, "flip": False}
    assert default_augment("cifar100", 32) == {"augment": "cifar", "crop_padding": 4, "flip": True}
    assert default_augment("imagefolder", 224)["augment"] == "imagenet"
    assert default_augment("imagefolder", 32) == {"augment": "cifar", "crop_padding": 4, "flip": True}
    d = SimpleNamespace(augment=True, crop_padding=None, flip=None)
    from adaptkd.data.build import resolve_augment

    assert resolve_augment(d, "digits", 8) == {"augment": "cifar", "crop_padding": 1, "flip": False}
    assert math.isclose(DataConfig().crop_ratio, 0.875)


# ------------------------------------------------------------------------------- through the engine


def _train_cfg(out, data, **run):
    from tests.helpers import tiny_config

    cfg = tiny_config(out, "ce")
    cfg["data"] = {"batch_size": 4, "eval_batch_size": 8, **data}
    cfg["optim"]["epochs"] = 1
    cfg["run"].update({"max_steps_per_epoch": None, **run})
    return cfg


def test_trainer_streams_a_photo_folder_and_records_settings(tmp_path):
    import yaml

    from adaptkd.engine.evaluate import evaluate
    from adaptkd.engine.trainer import Trainer

    root = image_folder(tmp_path / "img")
    lines = []
    tr = Trainer(_train_cfg(tmp_path / "run",
                            {"name": "imagefolder", "root": str(root), "image_size": 16, "augment": "imagenet",
                                               "workers": 1}), log=lines.append)
    summary = tr.fit()
    assert tr.pipe.mode == "stream" and summary["steps"] == 2
    assert any("augment=imagenet (random-resized crop + flip)" in s and "streamed, 1 worker" in s for s in lines)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["augment"] == "imagenet" and saved["cache"] == "none" and saved["image_size"] == 16
    assert len(saved["mean"]) == 3
    ev = evaluate(str(tmp_path / "run"))
    assert ev["networks"]["student"]["n"] == 4
    assert ev["networks"]["student"]["top1"] == pytest.approx(summary["learners"]["student"]["final_acc"])
    tr.pipe.close()


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, 8, 8, generator=g)
        self.targets = (torch.arange(n) % 3).tolist()
        self.classes = ["a", "b", "c"]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


def test_python_dataset_recorded_and_refused_by_name(tmp_path):
    from adaptkd.engine.evaluate import evaluate
    from adaptkd.engine.trainer import Trainer

    data = (_Tensors(12, 0), _Tensors(6, 1))
    tr = Trainer(_train_cfg(tmp_path / "run", {"name": "digits", "image_size": 8, "workers": 0}), data=data,
                 log=lambda s: None)
    tr.fit()
    assert tr.cfg.data.name == "python" and "_Tensors" in tr.cfg.data.source
    assert tr.pipe.class_names == ["a", "b", "c"] and tr.pipe.in_channels == 1
    with pytest.raises(DataError, match="data passed from Python"):
        evaluate(str(tmp_path / "run"))
    ev = evaluate(str(tmp_path / "run"), data=data)
    assert ev["networks"]["student"]["n"] == 6


def _no_timing(records):
    return [{k: v for k, v in r.items() if not (k.startswith("time/") or k.endswith("per_s"))} for r in records]


def test_checkpoint_inside_epoch_resumes_exactly_with_workers(tmp_path):
    from adaptkd.engine.logger import read_metrics
    from adaptkd.engine.trainer import Trainer

    root = image_folder(tmp_path / "img", per_class=(8, 8))
    data = {"name": "imagefolder", "root": str(root), "image_size": 16, "augment": "imagenet", "workers": 1,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}

    def cfg(out):
        c = _train_cfg(out, data, checkpoint_every_steps=3, log_every=1)
        c["optim"]["epochs"] = 2
        return c

    full = Trainer(cfg(tmp_path / "full"), log=lambda s: None)
    expected = full.fit()
    full.pipe.close()

    crashed = Trainer(cfg(tmp_path / "part"), log=lambda s: None)
    crash_at_step(crashed, 6)  # epoch 2 has 4 steps: the checkpoint at step 6 is inside it
    crashed.pipe.close()
    ck = torch.load(tmp_path / "part" / "last.pt", weights_only=False)
    assert ck["in_epoch"]["epoch"] == 2 and ck["in_epoch"]["step"] == 2 and ck["global_step"] == 6

    resumed = Trainer(cfg(tmp_path / "part"), resume=True, log=lambda s: None)
    got = resumed.fit()
    resumed.pipe.close()
    assert got["final_acc"] == expected["final_acc"] and got["steps"] == expected["steps"] == 8
    a = _no_timing(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    b = _no_timing(read_metrics(tmp_path / "part" / "metrics.jsonl"))
    assert a == b


def test_bad_image_stops_and_keeps_last_checkpoint(tmp_path):
    from adaptkd.engine.trainer import Trainer

    root = image_folder(tmp_path / "img", per_class=(8, 8))
    data = {"name": "imagefolder", "root": str(root), "image_size": 16, "augment": "imagenet", "workers": 0,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    tr = Trainer(_train_cfg(tmp_path / "run", data, checkpoint_every_steps=1), log=lambda s: None)
    step = tr.train_step

    def corrupt_after_first(*a, **k):
        out = step(*a, **k)
        for p in (root / "train").rglob("*.jpg"):
            p.write_bytes(b"\xff\xd8broken")
        return out

    tr.train_step = corrupt_after_first
    with pytest.raises(DataError, match=r"not a readable image.*training stopped in epoch 1 at step 1.*last good "
                                        r"checkpoint .*last\.pt.* is kept"):
        tr.fit()
    assert (tmp_path / "run" / "last.pt").is_file()


class _Dies(_Tensors):
    def __getitem__(self, i):
        if i == 3:
            os._exit(7)  # a worker killed without a Python exception (e.g. a crashing decoder library)
        return super().__getitem__(i)


def test_dying_worker_names_the_batch_files(tmp_path):
    from adaptkd.data.build import build_pipeline

    pipe, _ = build_pipeline(_cfg(name="digits", workers=1, cache="none", image_size=8, mean=[0.5], std=[0.2]),
                             dataset=(_Dies(8, 0), _Tensors(4, 1)))
    with pytest.raises(DataError, match=r"a data worker process died while reading batch \d+ \(first files: "
                                        r"Python train dataset \(_Dies\) sample \d"):
        list(pipe.train_batches(0, batch_size=8, seed=0, drop_last=False))


def test_trainer_on_shards_resumes_inside_an_epoch(tmp_path):
    from adaptkd.engine.logger import read_metrics
    from adaptkd.engine.trainer import Trainer

    data = {"name": "webdataset", "root": _shards(tmp_path / "sh", "train", 4, 6),
            "test_root": _shards(tmp_path / "sh", "val", 1, 4), "image_size": 16, "augment": "imagenet",
            "workers": 2, "mean": [0.5] * 3, "std": [0.25] * 3}

    def cfg(out):
        return _train_cfg(out, data, checkpoint_every_steps=2, log_every=1)

    expected = Trainer(cfg(tmp_path / "full"), log=lambda s: None).fit()
    crashed = Trainer(cfg(tmp_path / "part"), log=lambda s: None)
    crash_at_step(crashed, 3)
    got = Trainer(cfg(tmp_path / "part"), resume=True, log=lambda s: None).fit()
    assert got["final_acc"] == expected["final_acc"] and got["steps"] == expected["steps"] == 6
    assert _no_timing(read_metrics(tmp_path / "full" / "metrics.jsonl")) == \
        _no_timing(read_metrics(tmp_path / "part" / "metrics.jsonl"))
