"""Ecosystem models: ``hf:`` (tiny random transformers models written here with save_pretrained), the
teacher input views, and the timm/torchvision adapters (skipped where those packages do not import)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import tiny_config

transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install 'adaptkd[hf]')")

from adaptkd.config import ConfigError  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402
from adaptkd.models import InputSpec, InputView, build_model  # noqa: E402
from adaptkd.taps import FeatureTaps, list_taps  # noqa: E402

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
SMALL_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _processor(folder, **cfg) -> None:
    """An image-processor config as the Hub ships it (only this JSON is read by adaptkd)."""
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "do_rescale": True, **cfg}))


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """{family: folder} of tiny randomly initialised models, each saved with save_pretrained."""
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        DeiTConfig,
        DeiTForImageClassificationWithTeacher,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    made = {
        "vit": (ViTForImageClassification(ViTConfig(**SMALL_VIT, image_size=24, patch_size=8, num_labels=10)),
                {"size": {"height": 24, "width": 24}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}),
        "deit": (DeiTForImageClassificationWithTeacher(DeiTConfig(**SMALL_VIT, image_size=32, patch_size=8,
                                                                  num_labels=10)),
                 {"size": {"height": 40, "width": 40}, "do_center_crop": True,
                  "crop_size": {"height": 32, "width": 32}, **IMAGENET}),
        "dinov2reg": (Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=8,
            num_register_tokens=2)),
            {"size": {"shortest_edge": 36}, "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
             **IMAGENET}),
        "resnet": (ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                             num_labels=10)),
                   {"size": {"shortest_edge": 16}, "do_center_crop": False, **IMAGENET}),
        "convnext": (ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                                   num_labels=10)),
                     {"size": {"shortest_edge": 20}, **IMAGENET}),
        "vit_noproc": (ViTForImageClassification(ViTConfig(**SMALL_VIT, image_size=16, patch_size=4, num_labels=10)),
                       None),
    }
    out = {}
    for name, (model, proc) in made.items():
        folder = root / name
        model.save_pretrained(folder)
        if proc is not None:
            _processor(folder, **proc)
        out[name] = str(folder)
    return out


def hf_cfg(out, method="kd", teachers=None, student=None, **over):
    cfg = tiny_config(out, method, teachers=teachers, **over)
    cfg["data"] = {"name": "synthetic", "image_size": 16, "num_classes": 10, "train_size": 96, "test_size": 32,
                   "batch_size": 16, "eval_batch_size": 64, "crop_padding": 1}
    cfg["optim"]["epochs"] = 1
    cfg["run"]["max_steps_per_epoch"] = 2
    if student is not None:
        cfg["student"] = student
    return cfg


def vit_student(size=16, patch=4):
    return {"arch": "hf:vit", "args": {"hf_config": {**SMALL_VIT, "image_size": size, "patch_size": patch}}}


# ------------------------------------------------------------------------------------------------
# Environment


def test_importing_transformers_keeps_torch():
    # torch.__version__ may carry a local label the wheel's metadata lacks (PyPI's CUDA builds: "2.14.1+cu130" vs
    # "2.14.1"), so the installed distribution is compared on the public version.
    code = ("import importlib.metadata as md, torch; v = torch.__version__; import transformers, safetensors; "
            "import torch as t; public = lambda s: s.split('+')[0]; "
            "assert t.__version__ == v and public(v) == public(md.version('torch')), (v, md.version('torch')); "
            "print(v)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == torch.__version__


# ------------------------------------------------------------------------------------------------
# Models, taps, token layouts, input specs


@pytest.mark.parametrize("family,prefix,spec", [
    ("vit", 1, ((24, 24), (0.5, 0.5, 0.5))),
    ("deit", 2, ((32, 32), (0.485, 0.456, 0.406))),
    ("dinov2reg", 3, ((32, 32), (0.485, 0.456, 0.406))),
])
def test_token_families_give_zoo_layout(hf_models, family, prefix, spec):
    m = build_model(f"hf:{hf_models[family]}", 10, teacher=True).eval()
    assert (m.input_spec.size, m.input_spec.mean) == spec
    assert m.tap_blocks == ["blocks.0", "blocks.1"] and m.final_tokens == "tokens"
    assert set(m.tap_blocks) <= set(list_taps(m))
    x = torch.randn(2, 3, *spec[0])
    with torch.no_grad(), FeatureTaps(m, m.tap_blocks + ["tokens"]) as t:
        out = m(x)
        raw = m.model(pixel_values=x, output_hidden_states=True)
    n = (spec[0][0] // 8) * (spec[0][1] // 8)
    assert m.patch_grid == (spec[0][0] // 8, spec[0][1] // 8)
    for k, h in enumerate(raw.hidden_states[1:]):
        assert h.shape[1] == prefix + n  # class (+ distillation / registers) + patches
        tok = t.outputs[f"blocks.{k}"]
        assert tok.shape == (2, 1 + n, 32)
        torch.testing.assert_close(tok[:, 0], h[:, 0])  # class token first
        torch.testing.assert_close(tok[:, 1:], h[:, prefix:])  # extra tokens left out
    assert t.outputs["tokens"].shape == (2, 1 + n, 32)
    if m.has_logits:
        torch.testing.assert_close(out, raw.logits)
        assert m.head_name in list_taps(m)
    else:  # a backbone: its pooled feature is the class token, never logits
        assert family == "dinov2reg" and m.head_name is None and out.shape == (2, 32)


@pytest.mark.parametrize("family,size,channels", [("resnet", (16, 16), [8, 16]), ("convnext", (20, 20), [8, 16])])
def test_cnn_families_give_stage_maps(hf_models, family, size, channels):
    m = build_model(f"hf:{hf_models[family]}", 10, teacher=True).eval()
    assert m.input_spec.size == size and m.final_tokens is None and m.has_logits
    with torch.no_grad(), FeatureTaps(m, m.tap_blocks) as t:
        out = m(torch.randn(2, 3, *size))
    assert out.shape == (2, 10)
    assert [t.outputs[b].shape[1] for b in m.tap_blocks] == channels
    assert all(t.outputs[b].dim() == 4 for b in m.tap_blocks)
    head = dict(m.named_modules())[m.head_name]
    assert isinstance(head, torch.nn.Linear) and head.in_features == m.feature_dim == channels[-1]


def test_input_view_resizes_and_renormalises():
    src = InputSpec((16, 16), (0.2, 0.3, 0.4), (0.5, 0.6, 0.7))
    dst = InputSpec((24, 24), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    pixels = torch.rand(2, 3, 16, 16)
    x = (pixels - torch.tensor(src.mean).view(1, 3, 1, 1)) / torch.tensor(src.std).view(1, 3, 1, 1)
    want = torch.nn.functional.interpolate(pixels, size=(24, 24), mode="bilinear", align_corners=False)
    want = (want - torch.tensor(dst.mean).view(1, 3, 1, 1)) / torch.tensor(dst.std).view(1, 3, 1, 1)
    torch.testing.assert_close(InputView(src, dst)(x), want, atol=1e-5, rtol=1e-5)
    same = InputView(src, src)
    assert same.identity and same(x) is x
    gray = InputView(InputSpec((16, 16), (0.5,), (0.25,)), InputSpec((8, 8), (0.5,) * 3, (0.25,) * 3))
    assert gray(torch.randn(2, 1, 16, 16)).shape == (2, 3, 8, 8)


# ------------------------------------------------------------------------------------------------
# Runs


def _fed_sizes(tr, name):
    seen = []
    tr.networks[name].register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[-2:])))
    return seen


def test_kd_from_hub_classifier_feeds_teacher_its_spec(hf_models, tmp_path):
    lines = []
    tr = Trainer(hf_cfg(tmp_path / "r", "kd", [{"arch": f"hf:{hf_models['vit']}"}]), log=lines.append)
    seen = _fed_sizes(tr, "teacher0")
    tr.fit()
    summary = tr.finish()
    assert seen and set(seen) == {(24, 24)}  # the student sees 16x16
    assert "24x24" in summary["teachers"]["teacher0"]["input"]
    assert "preprocessor_config.json" in summary["teachers"]["teacher0"]["input"]
    assert any("teacher0" in ln and "resized/renormalised" in ln for ln in lines)
    assert summary["teachers"]["teacher0"]["final_acc"] is not None
    from pathlib import Path

    from adaptkd.report import build_report

    rep = build_report(tmp_path / "r", evaluate=False, measure=False)
    assert "fed 24x24" in Path(rep.markdown).read_text()  # the report states what the teacher was fed


def test_dtkd_with_convnext_teacher(hf_models, tmp_path):
    s = Trainer(hf_cfg(tmp_path / "r", "dtkd", [{"arch": f"hf:{hf_models['convnext']}"}])).fit()
    assert s["epochs"] == 1


@pytest.mark.parametrize("method", ["afd", "rtk"])
def test_layer_attention_methods_with_hf_cnn_teacher(hf_models, tmp_path, method):
    cfg = hf_cfg(tmp_path / "r", method, [{"arch": f"hf:{hf_models['resnet']}"}], student={"arch": "cnn_small"})
    cfg["data"]["drop_last"] = True
    tr = Trainer(cfg)
    assert tr.method.t_taps == ["blocks.0", "blocks.1"]
    tr.fit()


def test_unic_hf_vit_and_zoo_cnn_teachers_at_different_resolutions(hf_models, tmp_path):
    teachers = [{"arch": f"hf:{hf_models['dinov2reg']}"},  # a backbone at 32x32
                {"arch": f"hf:{hf_models['deit']}"},  # a classifier with a distillation token at 32x32
                {"arch": "cnn_small", "random_init": True, "input_size": 24}]  # a zoo CNN at 24x24
    cfg = hf_cfg(tmp_path / "r", "unic", teachers, student=vit_student())
    lines = []
    tr = Trainer(cfg, log=lines.append)
    seen = {n: _fed_sizes(tr, n) for n in ("teacher0", "teacher1", "teacher2")}
    assert tr.method.t_tap["teacher0"] == tr.method.t_tap["teacher1"] == "tokens"  # final normalised tokens
    assert tr.method.t_head["teacher2"] == "fc"  # the zoo CNN's class token: its pooled feature
    assert tr.method.t_grid["teacher0"] == (4, 4) and tr.method.grid == (4, 4)
    tr.fit()
    assert {n: set(v) for n, v in seen.items()} == {"teacher0": {(32, 32)}, "teacher1": {(32, 32)},
                                                    "teacher2": {(24, 24)}}
    summary = tr.finish()
    assert summary["teachers"]["teacher0"]["final_acc"] is None  # a backbone has no accuracy
    assert "24x24" in summary["teachers"]["teacher2"]["input"]


def test_fitnet_with_cnn_backbone_teacher_and_no_kd(hf_models, tmp_path):
    teacher = {"arch": f"hf:{hf_models['resnet']}", "args": {"head": "backbone"}}  # ResNetModel, no classifier
    cfg = hf_cfg(tmp_path / "r", "fitnet", [teacher], student={"arch": "cnn_small"})
    cfg["method"].update({"kd_weight": 0.0, "stage1_epochs": 0})
    tr = Trainer(cfg)
    assert not tr.networks["teacher0"].has_logits and "teacher0" not in tr.method.logit_networks()
    tr.fit()


def test_dml_with_hf_peer(tmp_path):
    peer = {**vit_student(), "trainable": True}
    s = Trainer(hf_cfg(tmp_path / "r", "dml", [peer])).fit()
    assert s["epochs"] == 1


def test_student_head_replaced_is_stated(hf_models, tmp_path):
    cfg = hf_cfg(tmp_path / "r", "ce", student={"arch": f"hf:{hf_models['resnet']}"})
    cfg["data"]["num_classes"] = 12
    lines = []
    tr = Trainer(cfg, log=lines.append)
    assert any("classifier head replaced (10 -> 12 classes" in ln for ln in lines)
    assert dict(tr.networks["student"].named_modules())[tr.networks["student"].head_name].out_features == 12


def test_export_hf_student(tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra")
    from adaptkd.export import export_run

    Trainer(hf_cfg(tmp_path / "r", "ce", student=vit_student())).fit()
    for fmt, name in (("torchscript", "s.pt"), ("onnx", "s.onnx")):
        res = export_run(str(tmp_path / "r"), fmt, out=str(tmp_path / name))
        assert res.parity["random"]["max_abs_diff"] <= res.tolerance


# ------------------------------------------------------------------------------------------------
# Bad input: one clear message, nothing written


def _refused(cfg, match, tmp_path):
    with pytest.raises(ConfigError, match=match) as info:
        Trainer(cfg)
    assert not (tmp_path / "r").exists()
    return str(info.value)


def test_unknown_id_offline_names_it_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _refused(hf_cfg(tmp_path / "r", "kd", [{"arch": "hf:no-such-org/no-such-model"}]),
                   "no-such-org/no-such-model", tmp_path)
    assert "offline" in msg and "save_pretrained" in msg and "hf:models/" in msg


def test_backbone_as_logit_teacher_refused_by_name(hf_models, tmp_path):
    msg = _refused(hf_cfg(tmp_path / "r", "kd", [{"arch": f"hf:{hf_models['dinov2reg']}"}]), "backbone", tmp_path)
    assert "'teacher0'" in msg and "kd" in msg


def test_class_count_mismatch_refused(hf_models, tmp_path):
    cfg = hf_cfg(tmp_path / "r", "kd", [{"arch": f"hf:{hf_models['vit']}"}])
    cfg["data"]["num_classes"] = 12
    msg = _refused(cfg, "10 labels", tmp_path)
    assert "12" in msg and "teachers.0" in msg


def test_unknown_tap_name_suggests_closest(hf_models, tmp_path):
    cfg = hf_cfg(tmp_path / "r", "unic", [{"arch": f"hf:{hf_models['vit']}"}], student=vit_student(),
                 method__teacher_taps={"teacher0": "blocks.7"})
    msg = _refused(cfg, "blocks.7", tmp_path)
    assert "closest" in msg and "blocks." in msg


def test_trust_remote_code_refused(hf_models, tmp_path):
    cfg = hf_cfg(tmp_path / "r", "kd", [{"arch": f"hf:{hf_models['vit']}", "args": {"trust_remote_code": True}}])
    _refused(cfg, "trust_remote_code", tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        build_model(f"hf:{hf_models['vit']}", 10, trust_remote_code=False)


def test_undeterminable_input_spec_asks_for_it(hf_models, tmp_path):
    msg = _refused(hf_cfg(tmp_path / "r", "kd", [{"arch": f"hf:{hf_models['vit_noproc']}"}]), "input_size", tmp_path)
    assert "mean" in msg and "std" in msg and "teacher0" in msg
    ok = hf_cfg(tmp_path / "r", "kd", [{"arch": f"hf:{hf_models['vit_noproc']}", "input_size": 16,
                                        "mean": [0.5] * 3, "std": [0.5] * 3}])
    assert "16x16" in Trainer(ok).teacher_inputs.specs["teacher0"].describe()


# ------------------------------------------------------------------------------------------------
# timm / torchvision (run wherever those packages import)


def _importable(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None and importlib.import_module(mod) is not None
    except Exception:  # noqa: BLE001 - a broken compiled extension
        return False


@pytest.mark.skipif(not _importable("timm"), reason="timm is not importable here (pip install 'adaptkd[vision]')")
def test_timm_vit_and_cnn_adapters():
    vit = build_model("timm:vit_tiny_patch16_224", 10, img_size=32, patch_size=8, depth=2, reg_tokens=2).eval()
    with torch.no_grad(), FeatureTaps(vit, vit.tap_blocks + ["tokens"]) as t:
        assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert t.outputs["blocks.1"].shape == (2, 17, 192) and t.outputs["tokens"].shape == (2, 17, 192)
    cnn = build_model("timm:resnet18", 10).eval()
    with torch.no_grad(), FeatureTaps(cnn, cnn.tap_blocks) as t:
        cnn(torch.randn(2, 3, 32, 32))
    assert all(v.dim() == 4 for v in t.outputs.values()) and cnn.head_name == "model.fc"


@pytest.mark.skipif(not _importable("torchvision"),
                    reason="torchvision is not importable here (pip install 'adaptkd[vision]')")
def test_torchvision_adapters():
    cnn = build_model("torchvision:resnet18", 10).eval()
    assert cnn.tap_blocks == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"] and cnn.head_name == "model.fc"
    with torch.no_grad(), FeatureTaps(cnn, cnn.tap_blocks) as t:
        assert cnn(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [v.shape[1] for v in t.outputs.values()] == [64, 128, 256, 512]
    vit = build_model("torchvision:vit_b_16", 10, image_size=32).eval()  # its builder fixes the widths
    with torch.no_grad(), FeatureTaps(vit, vit.tap_blocks + ["tokens"]) as t:
        vit(torch.randn(2, 3, 32, 32))
    assert len(vit.tap_blocks) == 12 and vit.head_name == "model.heads.head"
    assert t.outputs["blocks.0"].shape == t.outputs["tokens"].shape == (2, 5, 768)  # class + 2x2 patches


# ------------------------------------------------------------------------------------------------
# The guide's recipes (docs/ecosystem.md), with tiny stand-ins at the folders the guide makes


def _image_folder(root, classes=("cat", "dog"), n=6, size=20):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                px = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8).numpy()
                Image.fromarray(px).save(root / split / c / f"{i}.png")


@pytest.mark.parametrize("recipe", ["hub_classifier_kd", "unic_dinov2"])
def test_guide_recipes_run_as_written(tmp_path, monkeypatch, recipe):
    from pathlib import Path

    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTForImageClassification

    from adaptkd.config import load_config

    monkeypatch.chdir(tmp_path)
    _image_folder(tmp_path / "data" / "my_images")
    proc = {"size": {"height": 224, "width": 224}, "do_center_crop": False, **IMAGENET}
    if recipe == "hub_classifier_kd":  # stands in for a fine-tuned Hub ViT with the folder's 2 classes
        folder = tmp_path / "models" / "vit-cifar10"
        ViTForImageClassification(ViTConfig(**SMALL_VIT, image_size=224, patch_size=32, num_labels=2)
                                  ).save_pretrained(folder)
    else:  # stands in for facebook/dinov2-small
        folder = tmp_path / "models" / "dinov2-small"
        Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                 patch_size=32, image_size=224)).save_pretrained(folder)
    _processor(folder, **proc)
    path = Path(__file__).resolve().parents[1] / "configs" / "ecosystem" / f"{recipe}.yaml"
    cfg = load_config(path, ["data.root=data/my_images", "data.image_size=16", "data.batch_size=4",
                             "optim.epochs=1", "optim.warmup_epochs=0", "run.max_steps_per_epoch=2",
                             "run.progress=false",
                             "run.latency=false", "run.tensorboard=false", "student.args.img_size=16",
                             "student.args.patch_size=4"] if recipe == "unic_dinov2" else
                      ["data.root=data/my_images", "data.image_size=16", "data.batch_size=4", "optim.epochs=1",
                       "run.max_steps_per_epoch=2", "run.progress=false", "run.latency=false",
                       "run.tensorboard=false", "student.arch=cnn_tiny"])
    tr = Trainer(cfg, log=lambda s: None)
    assert tr.teacher_inputs.specs["teacher0"].size == (224, 224)
    tr.fit()
    assert (tmp_path / "runs").is_dir()


def test_paper_recipe_config_is_valid():
    from pathlib import Path

    from adaptkd.config import load_config

    path = Path(__file__).resolve().parents[1] / "configs" / "ecosystem" / "unic_paper_teachers.yaml"
    cfg = load_config(path, ["data.root=data/my_images"])
    assert [t.arch for t in cfg.teachers] == ["hf:models/dino-vitb16", "timm:deit3_base_patch16_224.fb_in1k"]


@pytest.mark.parametrize("labels,outcome", [(["Cat", "dog"], "ok"), (["dog", "cat"], "refused"),
                                            (["kitty", "dog"], "stated")])
def test_teacher_label_order_checked_against_class_folders(tmp_path, labels, outcome):
    from transformers import ViTConfig, ViTForImageClassification

    _image_folder(tmp_path / "images")
    folder = tmp_path / "teacher"
    ViTForImageClassification(ViTConfig(**SMALL_VIT, image_size=16, patch_size=8, num_labels=2,
                                        id2label=dict(enumerate(labels)))).save_pretrained(folder)
    _processor(folder, size={"height": 16, "width": 16}, **IMAGENET)
    cfg = hf_cfg(tmp_path / "r", "kd", [{"arch": f"hf:{folder}"}])
    cfg["data"] = {"name": "imagefolder", "root": str(tmp_path / "images"), "image_size": 16, "batch_size": 4}
    lines = []
    if outcome == "refused":
        with pytest.raises(ConfigError, match="another order"):
            Trainer(cfg, log=lines.append)
        return
    Trainer(cfg, log=lines.append)
    assert any("differ from the data's class names" in ln for ln in lines) == (outcome == "stated")


def test_plain_state_dict_of_the_library_model_loads_as_checkpoint(hf_models, tmp_path):
    from transformers import ViTForImageClassification

    raw = ViTForImageClassification.from_pretrained(hf_models["vit"])
    with torch.no_grad():
        raw.classifier.bias.fill_(0.25)  # "fine-tuned elsewhere"
    torch.save(raw.state_dict(), tmp_path / "raw.pt")
    teacher = {"arch": f"hf:{hf_models['vit']}", "checkpoint": str(tmp_path / "raw.pt")}
    tr = Trainer(hf_cfg(tmp_path / "r", "kd", [teacher]))
    assert torch.all(tr.networks["teacher0"].model.classifier.bias == 0.25)
    assert tr.teacher_inputs.specs["teacher0"].size == (24, 24)  # trained elsewhere: its own spec
    tr.fit()
    from adaptkd.report import build_report

    rep = build_report(tmp_path / "r", evaluate=True, measure=False)  # the report evaluates it at 24x24 too
    assert not [n for n in rep.notes if "teacher0" in n], rep.notes
    row = next(ln for ln in rep.markdown.read_text().splitlines() if ln.startswith("| r/teacher0"))
    assert "fed 24x24" in row and "†" not in row  # re-evaluated (not the summary's value), fed its spec


def test_hf_student_of_a_run_as_teacher_is_fed_the_data_as_is(hf_models, tmp_path):
    student = {"arch": f"hf:{hf_models['vit']}"}  # pretrained spec 24x24; fine-tuned here on 16x16 data
    Trainer(hf_cfg(tmp_path / "s", "ce", student=student)).fit()
    cfg = hf_cfg(tmp_path / "r", "kd", [{**student, "checkpoint": str(tmp_path / "s" / "last.pt")}])
    spec = Trainer(cfg).teacher_inputs.specs["teacher0"]
    assert spec.size == (16, 16) and "the data" in spec.source


def test_backbone_as_student_gets_a_new_head(hf_models, tmp_path):
    lines = []
    tr = Trainer(hf_cfg(tmp_path / "r", "ce", student={"arch": f"hf:{hf_models['dinov2reg']}"}), log=lines.append)
    assert tr.networks["student"].has_logits
    assert any("10-class classifier head added to the pretrained backbone" in ln for ln in lines)
