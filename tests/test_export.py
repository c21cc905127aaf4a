"""Export (student alone, parity checked), optional extras, external and bring-your-own models."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from torch import nn

from adaptkd.config import ConfigError, load_config
from adaptkd.engine.checkpoint import CheckpointError, load_checkpoint
from adaptkd.engine.networks import MissingExtraError
from adaptkd.export import ExportError, export_module, export_run, rebuild_network, require_onnx
from adaptkd.models import build_model
from tests.helpers import tiny_config

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


@pytest.fixture(scope="module")
def rtk_run(tmp_path_factory, teacher_ckpt):
    """A method that trains its own modules besides the student (attention/projection layers)."""
    from adaptkd.engine.trainer import Trainer
    from adaptkd.methods import list_methods

    method = "rtk" if "rtk" in list_methods() else "kd"
    out = tmp_path_factory.mktemp("exp") / method
    cfg = tiny_config(out, method, teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}])
    cfg["run"]["max_steps_per_epoch"] = 2
    cfg["optim"]["epochs"] = 1
    Trainer(cfg, log=lambda s: None).fit()
    return out


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export_is_the_student_alone_and_matches(rtk_run, tmp_path):
    res = export_run(rtk_run, "torchscript", out=tmp_path / "s.pt")
    loaded = torch.jit.load(res.path)
    zoo = build_model("cnn_tiny", 10, in_channels=1)
    assert set(loaded.state_dict()) == set(zoo.state_dict())  # no projector/attention/teacher weights
    assert res.params == sum(p.numel() for p in zoo.parameters())
    ck = load_checkpoint(rtk_run / "best.pt")
    student, _ = rebuild_network(rtk_run)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in ck["models"]["student"].items())
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(loaded(x), student(x), atol=1e-5)
    assert set(res.parity) == {"random", "real"} and res.parity["real"]["n"] > 0
    assert all(p["max_abs_diff"] <= res.tolerance and p["top1_agreement"] == 100.0 for p in res.parity.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt", "s.pt.json"]
    side = json.loads((tmp_path / "s.pt.json").read_text())
    assert side["metadata"]["arch"] == "cnn_tiny" and side["metadata"]["num_classes"] == 10
    assert len(side["metadata"]["mean"]) == 1


def test_parity_failure_writes_nothing(rtk_run, tmp_path, monkeypatch):
    import adaptkd.export as ex

    real = ex._export_torchscript

    def off_by_a_bit(model, example, tmp):
        run, name = real(model, example, tmp)
        return (lambda x: run(x) + 1e-2), name

    monkeypatch.setattr(ex, "_export_torchscript", off_by_a_bit)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_run(rtk_run, "torchscript", out=tmp_path / "bad.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAS_ONNX, reason="ONNX extra not installed (pip install 'adaptkd[onnx]')")
def test_onnx_export_parity_on_a_zoo_model(rtk_run, tmp_path, capsys):
    from adaptkd.cli import main

    assert main(["export", str(rtk_run), "--format", "onnx", "--out", str(tmp_path / "s.onnx")]) == 0
    out = capsys.readouterr().out
    assert "max abs logit difference" in out and "random" in out and "real" in out
    side = json.loads((tmp_path / "s.onnx.json").read_text())
    assert all(p["max_abs_diff"] <= side["tolerance"] for p in side["parity"].values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx", "s.onnx.json"]  # no temp or stray data files
    assert (tmp_path / "s.onnx").stat().st_size > 4 * side["params"]  # the weights are inside the file
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        assert side["runtime"].startswith("onnxruntime")
        sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
        student, _ = rebuild_network(rtk_run)
        x = torch.randn(7, 1, 8, 8)  # another batch size: the batch dimension is dynamic
        got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
        assert torch.allclose(got, student(x).detach(), atol=1e-4)


def test_missing_onnx_extra_message(rtk_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError) as err:
        export_run(rtk_run, "onnx", out=tmp_path / "s.onnx")
    msg = str(err.value)
    assert "onnxscript" in msg and "pip install 'adaptkd[onnx]'" in msg and "\n" not in msg
    with pytest.raises(MissingExtraError, match=r"adaptkd\[onnx\]"):
        require_onnx()
    from adaptkd.cli import main

    assert main(["export", str(rtk_run), "--format", "onnx"]) == 2
    assert not (rtk_run / "export").exists()


# ----------------------------------------------------------------------------------------------
# Models from outside the zoo


@pytest.mark.parametrize("lib", ["timm", "torchvision"])
def test_external_model_missing_extra_message(tmp_path, lib):
    from adaptkd.engine.trainer import Trainer

    if importlib.util.find_spec(lib) is not None:
        pytest.skip(f"{lib} is installed here; the missing-extra message cannot be provoked")
    cfg = tiny_config(tmp_path / lib)
    cfg["student"] = {"arch": f"{lib}:resnet18"}
    with pytest.raises(MissingExtraError) as err:
        Trainer(cfg, log=lambda s: None)
    assert lib in str(err.value) and "pip install 'adaptkd[vision]'" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision not installed (pip install 'adaptkd[vision]')")
def test_torchvision_student_trains_and_exports(tmp_path):
    from adaptkd.engine.trainer import Trainer

    cfg = tiny_config(tmp_path / "tv", data__name="synthetic", data__image_size=16, data__num_classes=4,
                      data__train_size=64, data__test_size=32)
    cfg["student"] = {"arch": "torchvision:mobilenet_v3_small"}
    Trainer(cfg, log=lambda s: None).fit()
    res = export_run(tmp_path / "tv", "torchscript", out=tmp_path / "tv.pt")
    assert res.parity["random"]["max_abs_diff"] <= res.tolerance


class TinyMLP(nn.Module):
    """A model from outside the zoo: flattened 8x8 digits -> logits."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.net(x)


def test_bring_your_own_module_end_to_end(tmp_path, teacher_ckpt):
    import adaptkd
    from adaptkd.engine.checkpoint import load_into, load_state_dict_for
    from adaptkd.report import build_report

    teacher = build_model("cnn_small", 10, in_channels=1)
    load_into(teacher, load_state_dict_for(teacher_ckpt, arch="cnn_small", num_classes=10), source=teacher_ckpt,
              arch="cnn_small")
    cfg = tiny_config(tmp_path / "byo", "kd")
    del cfg["student"]
    del cfg["teachers"]
    student = TinyMLP()
    before = [p.detach().clone() for p in student.parameters()]
    summary = adaptkd.train(cfg, student=student, teachers=[teacher])
    assert summary["learners"]["student"]["arch"] == "custom" and summary["teachers"]["teacher0"]["arch"] == "custom"
    assert summary["learners"]["student"]["params"] == sum(p.numel() for p in TinyMLP().parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))  # it trained the module given
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    ck = load_checkpoint(tmp_path / "byo" / "best.pt")
    assert ck["meta"]["arch"]["student"] == "custom" and set(ck["models"]["student"]) == set(student.state_dict())
    # A custom module cannot be rebuilt from its checkpoint: clear message; export_module works.
    with pytest.raises(CheckpointError, match="export_module"):
        export_run(tmp_path / "byo", "torchscript")
    res = export_module(student, "torchscript", tmp_path / "mlp.pt", input_shape=(1, 8, 8))
    assert res.parity["random"]["max_abs_diff"] <= res.tolerance
    # The report evaluates it when the module is handed over.
    rep = build_report(tmp_path / "byo", networks={"student": student, "teacher0": teacher}, measure=False)
    man = json.loads(rep.manifest.read_text())
    assert all(m["evaluated"] for m in man["models"]) and len(man["agreement"]) == 1
    rep = build_report(tmp_path / "byo", tmp_path / "r2", measure=False)  # without: still renders, says why
    assert any("custom" in n or "not in the model zoo" in n for n in rep.notes)


def test_custom_arch_config_errors(tmp_path, teacher_ckpt):
    cfg = tiny_config(tmp_path / "c")
    cfg["student"] = {"arch": "custom"}
    with pytest.raises(ConfigError, match="passed from Python"):
        load_config(cfg)
    assert load_config(cfg, provided={"student"}).student.arch == "custom"
    cfg["student"] = {"arch": "my_net", "checkpoint": teacher_ckpt}
    with pytest.raises(ConfigError, match=r"student\.checkpoint.*passed from Python"):
        load_config(cfg, provided={"student"})
    cfg = tiny_config(tmp_path / "c", "kd", teachers=[{"arch": "custom"}])
    assert load_config(cfg, provided={"teacher0"}).teachers[0].arch == "custom"  # no checkpoint needed
    with pytest.raises(ConfigError, match="teachers.0"):
        load_config(cfg)
