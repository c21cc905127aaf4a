"""The ImageNet and Tiny-ImageNet recipes (schema and published protocol) and ``train --check``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from adaptkd.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
IMAGENET = sorted((CONFIGS / "imagenet").glob("*/*.yaml"))
TINY = sorted((CONFIGS / "tiny-imagenet").glob("*/*.yaml"))


def test_every_recipe_is_there():
    assert {f"{p.parent.name}/{p.stem}" for p in IMAGENET} == {
        f"{m}/{pair}" for m in ("ce", "kd", "dkd", "dtkd") for pair in ("r34_r18", "r50_mv1")}
    assert {p.stem for p in TINY} == {"res34_mv2_1.4", "wrn16_2_res20"}


@pytest.mark.parametrize("path", IMAGENET, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_imagenet_recipe_protocol(path):
    cfg = load_config(path)  # schema, registry names, options of the method
    d, o = cfg.data, cfg.optim
    assert (d.name, d.image_size, d.augment, d.crop_ratio, d.batch_size) == ("imagefolder", 224, "imagenet", 0.875, 512)
    assert d.mean == [0.485, 0.456, 0.406] and d.std == [0.229, 0.224, 0.225]
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.epochs, o.milestones) == ("sgd", 0.2, 0.9, 1e-4, 100,
                                                                                   [30, 60, 90])
    assert cfg.run.checkpoint_every_steps
    method, pair = path.parent.name, path.stem
    teacher = {"r34_r18": "torchvision:resnet34", "r50_mv1": "torchvision:resnet50"}[pair]
    student = {"r34_r18": "torchvision:resnet18", "r50_mv1": "mobilenet_v1"}[pair]
    assert cfg.student.arch == student
    if method == "ce":
        assert cfg.teachers == []
        return
    assert [t.arch for t in cfg.teachers] == [teacher] and cfg.teachers[0].args == {"weights": "IMAGENET1K_V1"}
    opts = cfg.method.options()
    if method == "kd":
        assert (opts["temperature"], opts["ce_weight"], opts["kd_weight"]) == (1.0, 0.5, 0.5)
    if method == "dkd":
        beta = {"r34_r18": 0.5, "r50_mv1": 2.0}[pair]
        assert (opts["temperature"], opts["alpha"], opts["beta"], opts["warmup_epochs"]) == (1.0, 1.0, beta, 1)


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
def test_tiny_imagenet_switokd_recipe(path):
    cfg = load_config(path)
    d, o = cfg.data, cfg.optim
    assert (d.image_size, d.augment, d.crop_padding, d.flip, d.batch_size) == (64, "cifar", 4, True, 128)
    assert (o.lr, o.weight_decay, o.epochs, o.milestones) == (0.01, 5e-4, 199, [99, 139, 179])
    assert cfg.method.name == "switokd" and cfg.teachers[0].trainable


def test_imagenet_mobilenet_v1_layout():
    import torch

    from adaptkd.models import build_model

    net = build_model("mobilenet_v1", 1000, stem_stride=2)
    assert 4.1e6 < sum(p.numel() for p in net.parameters()) < 4.3e6
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_check_says_what_is_missing(capsys):
    from adaptkd.cli import main

    rc = main(["train", "--check", str(CONFIGS / "imagenet" / "dkd" / "r50_mv1.yaml")])
    out = capsys.readouterr().out
    assert rc == 2 and "FAIL  data: imagefolder root" in out and "NOT ready" in out
    assert "ok    student: mobilenet_v1" in out
    if importlib.util.find_spec("torchvision") is None:
        assert "FAIL  teacher0: torchvision:resnet50" in out and "pip install 'adaptkd[vision]'" in out


def test_check_ready_builds_and_trains_nothing(tmp_path, capsys):
    from adaptkd.cli import main
    from tests.helpers import image_folder

    root = image_folder(tmp_path / "img")
    out_dir = tmp_path / "run"
    rc = main(["train", "--check", str(TINY[1]), f"data.root={root}", "data.image_size=16", "data.workers=0",
               f"run.out={out_dir}"])
    out = capsys.readouterr().out
    assert rc == 0 and "ready to train" in out and "nothing was trained" in out, out
    assert not out_dir.exists()


def test_photo_recipes_as_the_readme_says(tmp_path, capsys):
    """README: a teacher on a photo folder, then a student distilled from it (tiny sizes here)."""
    from adaptkd.cli import main
    from tests.helpers import image_folder

    root = image_folder(tmp_path / "photos", size=(40, 30))
    small = ["data.image_size=32", "data.workers=1", "data.batch_size=4", "optim.epochs=1", "run.progress=false",
             "run.latency=false", "run.tensorboard=false"]
    teacher = tmp_path / "teacher"
    assert main(["train", str(CONFIGS / "photos" / "teacher.yaml"), f"data.root={root}", f"run.out={teacher}",
                 "data.augment=imagenet", *small]) == 0
    kd = [str(CONFIGS / "photos" / "kd.yaml"), f"data.root={root}", f"run.out={tmp_path / 'kd'}",
          "data.augment=imagenet", f"teachers.0.checkpoint={teacher / 'best.pt'}", *small]
    assert main(["train", "--check", *kd]) == 0
    assert main(["train", *kd]) == 0
    out = capsys.readouterr().out
    assert "augment=imagenet (random-resized crop + flip)" in out and "streamed, 1 worker" in out
