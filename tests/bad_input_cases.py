"""The bad-input campaign: every case defined once, used by ``tests/test_bad_inputs.py`` and by
the table in ``docs/errors.md``.

Each case builds its inputs in a fresh folder and gives the arguments of one ``adaptkd`` command
(``train`` unless said otherwise). The command must refuse it before any training: exit code 2,
one ``adaptkd: error: ...`` message that names the field or the file at fault, and no run file
created or changed. Regenerate the table with::

    python tests/bad_input_cases.py --markdown > docs/errors.md
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["Case", "CASES", "Fixtures", "make_fixtures", "run_case", "snapshot", "applicable"]


# ----------------------------------------------------------------------------------------------
# shared inputs (built once)


@dataclass
class Fixtures:
    """Files shared by the cases (read-only for them)."""

    root: Path
    teacher: str  # adaptkd checkpoint of a cnn_small trained for 1 step on digits (10 classes)
    teacher_sd: str  # plain state_dict of a cnn_small for digits
    finished_run: Path  # a finished tiny run folder (ce, cnn_tiny)


def base(out: Path, method_name: str = "ce", teachers: list | None = None, **sections: Any) -> dict:
    """A valid tiny digits config (the cases break one thing in it)."""
    cfg: dict[str, Any] = {
        "data": {"name": "digits", "batch_size": 32, "crop_padding": 1, "flip": False},
        "student": {"arch": "cnn_tiny"},
        "teachers": teachers or [],
        "method": {"name": method_name},
        "optim": {"name": "sgd", "lr": 0.05, "epochs": 1, "schedule": "constant", "milestones": []},
        "run": {"out": str(out), "seed": 0, "progress": False, "latency": False, "tensorboard": False,
                "max_steps_per_epoch": 1, "device": "cpu", "threads": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    return cfg


def make_fixtures(root: Path) -> Fixtures:
    from adaptkd.cli import main
    from adaptkd.models import build_model

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sd = root / "teacher_sd.pt"
    torch.save(build_model("cnn_small", 10, in_channels=1).state_dict(), sd)
    # a real adaptkd checkpoint of a cnn_small (one step of ce)
    cfg = base(root / "teacher_run", student={"arch": "cnn_small"})
    (root / "teacher.yaml").write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(root / "teacher.yaml")]) == 0
        cfg = base(root / "finished_run")
        (root / "finished.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["train", str(root / "finished.yaml")]) == 0
    return Fixtures(root=root, teacher=str(root / "teacher_run" / "last.pt"), teacher_sd=str(sd),
                    finished_run=root / "finished_run")


# ----------------------------------------------------------------------------------------------
# cases


@dataclass
class Case:
    """One bad input.

    ``build(tmp, fx)`` writes what the case needs under ``tmp`` and returns the ``adaptkd``
    arguments; the run folder of every case is ``tmp/run``. ``expect``: text the message must
    contain (the field or file at fault). ``requires``: a method that must be registered.
    """

    group: str
    name: str
    build: Callable[[Path, Fixtures], list[str]]
    expect: str
    requires: str | None = None


def write(tmp: Path, cfg: dict | str, name: str = "c.yaml") -> str:
    p = tmp / name
    if isinstance(cfg, str):
        p.write_text(cfg)
    else:
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(p)


def train(tmp: Path, cfg: dict | str, *extra: str) -> list[str]:
    return ["train", write(tmp, cfg), *extra]


def teacher_cfg(fx: Fixtures, **over: Any) -> dict:
    return {"arch": "cnn_small", "checkpoint": fx.teacher, **over}


def cfg_case(group: str, name: str, expect: str, make: Callable[[Path, Fixtures], dict | str], *extra: str,
             requires: str | None = None) -> Case:
    return Case(group, name, lambda tmp, fx: train(tmp, make(tmp, fx), *extra), expect, requires)


def _hf_folder(tmp: Path, kind: str) -> str:
    """A tiny random transformers model saved in ``tmp/hf_<kind>`` (with an image-processor config
    except for ``noproc``); returns the folder's name, relative to the case folder (its cwd)."""
    import json

    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
             "image_size": 16, "patch_size": 8}
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(**small), add_pooling_layer=False) if kind == "backbone" else \
        ViTForImageClassification(ViTConfig(**small, num_labels=3 if kind == "classifier3" else 10))
    folder = tmp / f"hf_{kind}"
    model.save_pretrained(folder)
    if kind != "noproc":
        (folder / "preprocessor_config.json").write_text(json.dumps(
            {"size": {"height": 16, "width": 16}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return folder.name


def hf_case(name: str, kind: str, method: str, options: dict, expect: str, *, args: dict | None = None,
            requires: str = "module:transformers") -> Case:
    def make(tmp: Path, fx: Fixtures) -> dict:
        teacher = {"arch": f"hf:{_hf_folder(tmp, kind)}", **({"args": args} if args else {})}
        return base(tmp / "run", method, [teacher], method={"name": method, **options})

    return cfg_case("ecosystem models", name, expect, make, requires=requires)


def method_case(name: str, method: str, options: dict, expect: str, teachers: str = "frozen",
                requires: str | None = None) -> Case:
    def make(tmp: Path, fx: Fixtures) -> dict:
        t = {"frozen": [teacher_cfg(fx)], "two": [teacher_cfg(fx), teacher_cfg(fx)],
             "online": [{"arch": "cnn_tiny", "trainable": True}],
             "none": []}[teachers]
        return base(tmp / "run", method, t, method={"name": method, **options})

    return cfg_case("method options", name, expect, make, requires=requires or method)


def ckpt_case(name: str, expect: str, make_file: Callable[[Path, Fixtures], str], arch: str = "cnn_small",
              where: str = "teacher") -> Case:
    def make(tmp: Path, fx: Fixtures) -> dict:
        path = make_file(tmp, fx)
        if where == "teacher":
            return base(tmp / "run", "kd", [{"arch": arch, "checkpoint": path}])
        return base(tmp / "run", "ce", student={"arch": arch, "checkpoint": path})

    return cfg_case("checkpoints", name, expect, make)


# --- checkpoint files


def _raw(data: bytes, name: str = "bad.pt"):
    def make(tmp: Path, fx: Fixtures) -> str:
        (tmp / name).write_bytes(data)
        return str(tmp / name)

    return make


def _truncated(tmp: Path, fx: Fixtures) -> str:
    (tmp / "trunc.pt").write_bytes(Path(fx.teacher).read_bytes()[:300])
    return str(tmp / "trunc.pt")


class _Code:  # unpickling it would call a function (weights_only refuses)
    def __reduce__(self):
        return (os.getcwd, ())


def _needs_code(tmp: Path, fx: Fixtures) -> str:
    torch.save({"model": _Code()}, tmp / "code.pt")
    return str(tmp / "code.pt")


def _state(arch: str, classes: int, name: str, nan: bool = False, meta: bool = False):
    def make(tmp: Path, fx: Fixtures) -> str:
        from adaptkd.models import build_model

        sd = build_model(arch, classes, in_channels=1).state_dict()
        if nan:
            sd["fc.weight"][0, 0] = float("nan")
        obj: Any = sd
        if meta:  # an adaptkd run checkpoint of a 12-class model (a teacher trained on other data)
            obj = {"format": "adaptkd/1", "epoch": 1, "meta": {"arch": {"student": arch}, "num_classes": classes},
                   "models": {"student": sd}}
        torch.save(obj, tmp / name)
        return str(tmp / name)

    return make


def _other_arch_ckpt(tmp: Path, fx: Fixtures) -> str:
    return fx.teacher  # a cnn_small run checkpoint, given to a cnn_medium teacher


def _tensor_file(tmp: Path, fx: Fixtures) -> str:
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    return str(tmp / "tensor.pt")


# --- CIFAR folders


def _dump(path: Path, obj: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar10(tmp: Path, broken: str | None = None) -> Path:
    """A CIFAR-10 folder of 4 images per batch; ``broken`` spoils data_batch_2."""
    rng = np.random.default_rng(0)
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        if name == "data_batch_2" and broken == "shape":
            batch[b"data"] = batch[b"data"][:, :1024]
        if name == "data_batch_2" and broken == "dtype":
            batch[b"data"] = batch[b"data"].astype(np.float32)
        if name == "data_batch_2" and broken == "label":
            batch[b"labels"] = [0, 1, 10, 3]
        if name == "data_batch_2" and broken == "negative":
            batch[b"labels"] = [0, -1, 2, 3]
        if name == "data_batch_2" and broken == "count":
            batch[b"labels"] = [0, 1, 2]
        _dump(folder / name, batch)
        if name == "data_batch_2" and broken == "garbage":
            (folder / name).write_bytes(b"this is not a pickle")
        if name == "data_batch_2" and broken == "code":
            (folder / name).write_bytes(pickle.dumps(_Code(), protocol=2))
        if name == "data_batch_2" and broken == "missing":
            (folder / name).unlink()
    return tmp / "cifar"


def cifar_case(name: str, broken: str | None, expect: str) -> Case:
    def make(tmp: Path, fx: Fixtures) -> dict:
        root = _cifar10(tmp, broken)
        return base(tmp / "run", data={"name": "cifar10", "root": str(root)}, student={"arch": "cnn_tiny"})

    return cfg_case("data: CIFAR files", name, expect, make)


# --- image folders


def _png(path: Path, color: int = 128) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (color, 0, 0)).save(path)


def _imagefolder(tmp: Path, broken: str) -> Path:
    root = tmp / "images"
    if broken == "missing":
        return root
    root.mkdir()
    if broken == "empty":
        return root
    for split in ("train", "val"):
        (root / split).mkdir()
    if broken == "no_classes":
        (root / "train" / "readme.txt").write_text("no class folders here")
        return root
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            _png(root / split / c / "a.png")
    if broken == "no_val":
        shutil.rmtree(root / "val")
    if broken == "empty_class":
        shutil.rmtree(root / "train" / "dog")
        (root / "train" / "dog").mkdir()
    if broken == "only_text":
        shutil.rmtree(root / "train" / "dog")
        (root / "train" / "dog").mkdir()
        (root / "train" / "dog" / "notes.txt").write_text("not an image")
    if broken == "not_an_image":
        (root / "train" / "dog" / "b.png").write_text("a text file with an image extension")
    if broken == "unknown_val_class":
        _png(root / "val" / "bird" / "a.png")
    return root


def folder_case(name: str, broken: str, expect: str, **data: Any) -> Case:
    def make(tmp: Path, fx: Fixtures) -> dict:
        root = _imagefolder(tmp, broken)
        return base(tmp / "run", data={"name": "imagefolder", "root": str(root), "image_size": 8, **data})

    return cfg_case("data: image folders", name, expect, make)


# --- run folders


def _finished(tmp: Path, fx: Fixtures) -> Path:
    shutil.copytree(fx.finished_run, tmp / "run", symlinks=True)
    return tmp / "run"


def folder_run_case(name: str, expect: str, prepare: Callable[[Path, Fixtures], dict], *extra: str) -> Case:
    return Case("run folder", name, lambda tmp, fx: train(tmp, prepare(tmp, fx), *extra), expect)


def _existing_run(tmp: Path, fx: Fixtures) -> dict:
    _finished(tmp, fx)
    return base(tmp / "run")


def _run_is_symlink(tmp: Path, fx: Fixtures) -> dict:
    (tmp / "elsewhere").mkdir()
    (tmp / "run").symlink_to(tmp / "elsewhere")
    return base(tmp / "run")


def _planted(name: str):
    def make(tmp: Path, fx: Fixtures) -> dict:
        (tmp / "run").mkdir()
        (tmp / "victim.txt").write_text("must stay untouched")
        (tmp / "run" / name).symlink_to(tmp / "victim.txt")
        return base(tmp / "run")

    return make


def _run_is_file(tmp: Path, fx: Fixtures) -> dict:
    (tmp / "run").write_text("a file where the run folder should be")
    return base(tmp / "run")


def _resume_nothing(tmp: Path, fx: Fixtures) -> dict:
    return base(tmp / "run")


def _resume_corrupt(tmp: Path, fx: Fixtures) -> dict:
    run = _finished(tmp, fx)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    return base(tmp / "run")


def _resume_code(tmp: Path, fx: Fixtures) -> dict:
    run = _finished(tmp, fx)
    torch.save({"format": "adaptkd/1", "payload": _Code()}, run / "last.pt")
    return base(tmp / "run")


def _resume_other_arch(tmp: Path, fx: Fixtures) -> dict:
    _finished(tmp, fx)
    return base(tmp / "run", student={"arch": "cnn_small"})


def _resume_other_method(tmp: Path, fx: Fixtures) -> dict:
    _finished(tmp, fx)  # a ce run resumed as kd: the checkpoint's method state does not fit
    return base(tmp / "run", "kd", [teacher_cfg(fx)])


def _binary(tmp: Path) -> str:
    (tmp / "c.yaml").write_bytes(b"\xff\xfe\x00data: {}")
    return str(tmp / "c.yaml")


# --- taps


def tap_case(name: str, method: str, options: dict, expect: str, teachers: str = "frozen") -> Case:
    c = method_case(name, method, options, expect, teachers)
    c.group = "feature taps"
    return c


CASES: list[Case] = [
    # config files
    cfg_case("config file", "malformed YAML (unclosed bracket)", "c.yaml' is not valid YAML at line 3",
             lambda t, f: "data:\n  name: [digits\n"),
    cfg_case("config file", "a YAML list instead of a mapping", "expected a mapping",
             lambda t, f: "- data\n- student\n"),
    Case("config file", "the config file does not exist", lambda t, f: ["train", str(t / "missing.yaml")],
         "missing.yaml"),
    Case("config file", "a binary (non-UTF-8) config file", lambda t, f: ["train", _binary(t)], "not UTF-8"),
    cfg_case("config file", "a `!!python/object/apply` tag (code execution)", "not valid YAML",
             lambda t, f: "data: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n"),
    cfg_case("config file", "a `!!python/name` tag", "not valid YAML",
             lambda t, f: "method: {name: !!python/name:os.system ''}\n"),
    cfg_case("config file", "an unknown section", "field `unknown_section`",
             lambda t, f: {**base(t / "run"), "unknown_section": 1}),
    cfg_case("config file", "an unknown key (typo)", "field `data.batch_sise`",
             lambda t, f: base(t / "run", data={"batch_sise": 3})),
    cfg_case("config file", "a section that is not a mapping", "field `student`",
             lambda t, f: base(t / "run", student=5)),
    cfg_case("config file", "a wrong type (text for a number)", "field `optim.lr`",
             lambda t, f: base(t / "run", optim={"lr": "fast"})),
    cfg_case("config file", "a wrong type (list for an integer)", "field `data.batch_size`",
             lambda t, f: base(t / "run", data={"batch_size": [1, 2]})),
    cfg_case("config file", "zero epochs", "field `optim.epochs`", lambda t, f: base(t / "run", optim={"epochs": 0})),
    cfg_case("config file", "batch size 0", "field `data.batch_size`",
             lambda t, f: base(t / "run", data={"batch_size": 0})),
    cfg_case("config file", "momentum outside [0, 1)", "field `optim.momentum`",
             lambda t, f: base(t / "run", optim={"momentum": 1.5})),
    cfg_case("config file", "milestones not increasing", "field `optim.milestones`",
             lambda t, f: base(t / "run", optim={"milestones": [30, 10]})),
    cfg_case("config file", "an unknown dataset", "field `data.name`",
             lambda t, f: base(t / "run", data={"name": "cifar1000"})),
    cfg_case("config file", "an unknown model", "field `student.arch`",
             lambda t, f: base(t / "run", student={"arch": "resnet9000"})),
    cfg_case("config file", "an unknown method", "field `method.name`",
             lambda t, f: base(t / "run", method={"name": "kdd"})),
    cfg_case("config file", "an unknown balancer", "field `balance.name`",
             lambda t, f: base(t / "run", balance={"name": "magic"})),
    cfg_case("config file", "an unknown precision", "field `run.precision`",
             lambda t, f: base(t / "run", run={"precision": "fp8"})),
    cfg_case("config file", "an unknown non-finite policy", "field `run.nonfinite`",
             lambda t, f: base(t / "run", run={"nonfinite": "ignore"})),
    cfg_case("config file", "a device that does not exist", "field `run.device`",
             lambda t, f: base(t / "run", run={"device": "tpu"})),
    cfg_case("config file", "two networks with one name", "network names must be unique",
             lambda t, f: base(t / "run", "kd", [teacher_cfg(f, name="student")])),
    cfg_case("config file", "an unknown model argument", "field `student`",
             lambda t, f: base(t / "run", student={"arch": "cnn_tiny", "args": {"widht": 3}})),
    cfg_case("config file", "a per-network optimiser override with an unknown key", "field `teachers.0.optim.lrr`",
             lambda t, f: base(t / "run", "dml", [{"arch": "cnn_tiny", "trainable": True, "optim": {"lrr": 0.1}}]),
             requires="dml"),
    Case("config file", "an override without `=`", lambda t, f: train(t, base(t / "run"), "optim.lr"),
         "override 'optim.lr'"),
    Case("config file", "an override past the end of a list",
         lambda t, f: train(t, base(t / "run"), "teachers.3.arch=cnn_small"), "teachers.3"),
    Case("config file", "an override with a wrong type", lambda t, f: train(t, base(t / "run"), "optim.epochs=zero"),
         "field `optim.epochs`"),
    # method options
    method_case("negative temperature", "kd", {"temperature": -4}, "field `method.temperature`"),
    method_case("zero temperature", "dkd", {"temperature": 0}, "field `method.temperature`"),
    method_case("an unknown method option (typo)", "kd", {"temprature": 4}, "field `method.temprature`"),
    method_case("a wrong option type", "dtkd", {"alpha": "three"}, "field `method.alpha`"),
    method_case("warm-up 0 (DKD divides by it)", "dkd", {"warmup_epochs": 0}, "field `method.warmup_epochs`"),
    method_case("negative warm-up", "dtkd", {"warmup_epochs": -1}, "field `method.warmup_epochs`"),
    method_case("an unknown DTKD sharpness", "dtkd", {"sharpness": "min"}, "field `method.sharpness`"),
    method_case("label smoothing outside [0, 1)", "ce", {"label_smoothing": 1.5}, "field `method.label_smoothing`",
                teachers="none"),
    method_case("teacher-drop probability p outside [0, 1]", "unic", {"drop_prob": 1.5}, "field `method.drop_prob`",
                teachers="two"),
    method_case("standardiser momentum outside [0, 1]", "unic", {"momentum_end": -0.1}, "field `method.momentum_end`",
                teachers="two"),
    method_case("an unknown composed loss", "compose", {"terms": [{"loss": "kdd"}]}, "method.terms.0.loss"),
    method_case("a composed term with a negative weight", "compose", {"terms": [{"loss": "kd", "weight": -1}]},
                "method.terms.0"),
    method_case("compose without terms", "compose", {}, "field `method.terms`"),
    method_case("an unknown SwitOKD topology", "switokd", {"topology": "3T3S"}, "field `method.topology`",
                teachers="online"),
    method_case("RTK top-k of 0", "rtk", {"k": 0}, "field `method.k`"),
    method_case("FitNet stage 1 as long as training", "fitnet", {"stage1_epochs": 1}, "field `method.stage1_epochs`"),
    cfg_case("method options", "a gradient-balancer λ0 outside [0, 1]", "balance.lambda0",
             lambda t, f: base(t / "run", "kd", [teacher_cfg(f)], balance={"name": "gradient", "lambda0": 1.5})),
    cfg_case("method options", "a balancer option of another controller", "balance",
             lambda t, f: base(t / "run", "kd", [teacher_cfg(f)],
                               balance={"name": "gradient", "controller": "ratio", "rho": 2.0})),
    cfg_case("method options", "a distillation method without a teacher", "field `teachers`",
             lambda t, f: base(t / "run", "kd")),
    cfg_case("method options", "an offline method with a trainable teacher", "field `teachers.0.trainable`",
             lambda t, f: base(t / "run", "kd", [{"arch": "cnn_small", "trainable": True}])),
    cfg_case("method options", "an online method with a frozen teacher", "field `teachers.0.trainable`",
             lambda t, f: base(t / "run", "dml", [teacher_cfg(f)]), requires="dml"),
    # checkpoints
    cfg_case("checkpoints", "a frozen teacher without a checkpoint", "field `teachers.0.checkpoint`",
             lambda t, f: base(t / "run", "kd", [{"arch": "cnn_small"}])),
    ckpt_case("a teacher checkpoint that does not exist", "field `teachers.0.checkpoint`",
              lambda t, f: str(t / "nope.pt")),
    ckpt_case("an empty checkpoint file", "empty.pt' is empty (0 bytes)", _raw(b"", "empty.pt")),
    ckpt_case("a corrupt checkpoint (random bytes)", "garbage.pt' is corrupt or truncated",
              _raw(bytes(range(64)), "garbage.pt")),
    ckpt_case("a truncated checkpoint", "trunc.pt' is corrupt or truncated", _truncated),
    ckpt_case("a checkpoint whose loading needs code (pickled object)", "code.pt' contains objects that need code",
              _needs_code),
    ckpt_case("a checkpoint that is not a dict", "tensor.pt': expected a dict", _tensor_file),
    ckpt_case("a run checkpoint of another architecture",
              "is a 'cnn_small' network, but the config asks for 'cnn_medium'",
              _other_arch_ckpt, arch="cnn_medium"),
    ckpt_case("a state_dict of another architecture", "other_arch.pt' does not fit model 'cnn_small'",
              _state("cnn_tiny", 10, "other_arch.pt")),
    ckpt_case("a teacher trained for another class count (12 vs 10)", "trained for 12 classes, but the data has 10",
              _state("cnn_small", 12, "classes12.pt", meta=True)),
    ckpt_case("a state_dict of another class count (7 vs 10)", "classes7.pt' does not fit model 'cnn_small'",
              _state("cnn_small", 7, "classes7.pt")),
    ckpt_case("a student checkpoint of another class count", "field `student.checkpoint`",
              _state("cnn_tiny", 7, "student7.pt"), arch="cnn_tiny", where="student"),
    ckpt_case("a checkpoint with a NaN weight", "tensor 'fc.weight' holds 1 non-finite value",
              _state("cnn_small", 10, "nan.pt", nan=True)),
    # data
    cfg_case("data: settings", "a class count the dataset does not have", "num_classes",
             lambda t, f: base(t / "run", data={"num_classes": 5})),
    cfg_case("data: settings", "more training samples than the dataset has", "train_size",
             lambda t, f: base(t / "run", data={"train_size": 100000})),
    cfg_case("data: settings", "a folder dataset without data.root", "field `data.root`",
             lambda t, f: base(t / "run", data={"name": "cifar100"})),
    cfg_case("data: CIFAR files", "CIFAR files missing", "CIFAR-10 files not found",
             lambda t, f: base(t / "run", data={"name": "cifar10", "root": str(t / "nothing")})),
    cifar_case("a missing CIFAR batch file", "missing", "missing data_batch_2"),
    cifar_case("a CIFAR batch of the wrong shape", "shape", "data_batch_2: 'data' must have shape [N, 3072]"),
    cifar_case("a CIFAR batch of the wrong dtype", "dtype", "data_batch_2: 'data' must have dtype uint8, got float32"),
    cifar_case("a CIFAR label outside the class range", "label", "label 10 is outside [0, 10)"),
    cifar_case("a negative CIFAR label", "negative", "label -1 is outside [0, 10)"),
    cifar_case("fewer CIFAR labels than images", "count", "4 images but 3 labels"),
    cifar_case("a CIFAR batch that is not a pickle", "garbage", "data_batch_2: not a valid data pickle"),
    cifar_case("a CIFAR batch whose unpickling would run code", "code", "refusing to load global posix.getcwd"),
    folder_case("an image folder that does not exist", "missing", "does not exist or is not a folder"),
    folder_case("an empty image folder", "empty", "no train/ folder"),
    folder_case("no class folders in train/", "no_classes", "train: no class folders"),
    folder_case("no val/ (or test/) folder", "no_val", "no val/ (or test/) folder"),
    folder_case("a class folder without images", "empty_class", "dog: class folder holds no images"),
    folder_case("a class folder of non-image files", "only_text", "dog: class folder holds no images"),
    folder_case("a non-image file with an image extension", "not_an_image", "b.png: not a readable image"),
    folder_case("a val/ class the train split lacks", "unknown_val_class", "['bird'] do not exist in the train split"),
    folder_case("a class count that differs from the folders", "ok", "has 2 class folders, but num_classes=3",
                num_classes=3),
    # feature taps
    tap_case("an AFD student tap that does not exist", "afd", {"student_taps": ["stages.9"]}, "stages.9"),
    tap_case("an AFD teacher tap that does not exist", "afd", {"teacher_taps": ["block9"]}, "block9"),
    tap_case("an RTK student tap that does not exist", "rtk", {"student_taps": ["layer1.0"]}, "layer1.0"),
    tap_case("a FitNet teacher tap that does not exist", "fitnet", {"teacher_taps": ["stages.7"]}, "stages.7"),
    tap_case("a UNIC student block that does not exist", "unic", {"student_blocks": ["stages.5"]}, "stages.5",
             teachers="two"),
    tap_case("UNIC taps for a teacher that does not exist", "unic", {"teacher_taps": {"teacher5": "stages.0"}},
             "field `method.teacher_taps`", teachers="two"),
    # ecosystem models (hf:): tiny random transformers models written by the case with save_pretrained
    hf_case("a Hub backbone (no classifier head) as a logit teacher", "backbone", "kd", {},
            "'teacher0' (hf:hf_backbone), a backbone without a classifier head"),
    hf_case("a Hub classifier teacher with another class count (3 vs 10)", "classifier3", "kd", {},
            "classifies 3 labels, but the data has 10 classes"),
    hf_case("a Hub teacher tap that does not exist", "classifier", "fitnet",
            {"teacher_taps": ["blocks.9"], "kd_weight": 0},
            "blocks.9"),
    hf_case("trust_remote_code on a Hub model", "classifier", "kd", {}, "field `teachers.0.args.trust_remote_code`",
            args={"trust_remote_code": True}),
    hf_case("a Hub teacher whose input spec cannot be told", "noproc", "kd", {}, "set input_size, mean, std"),
    # run folders
    folder_run_case("a folder that already holds a run (no --resume)", "already holds a run", _existing_run),
    folder_run_case("the run folder is a symbolic link", "is a symbolic link", _run_is_symlink),
    folder_run_case("a symbolic link planted for metrics.jsonl", "metrics.jsonl' is a symbolic link planted",
                    _planted("metrics.jsonl")),
    folder_run_case("a symbolic link planted for last.pt", "last.pt' is a symbolic link planted", _planted("last.pt")),
    folder_run_case("a symbolic link planted for the tb/ folder", "tb' is a symbolic link planted", _planted("tb")),
    folder_run_case("the run folder is a file", "exists and is not a folder", _run_is_file),
    folder_run_case("--resume without a checkpoint", "nothing to resume", _resume_nothing, "--resume"),
    folder_run_case("--resume with a truncated last.pt", "last.pt' is corrupt or truncated", _resume_corrupt,
                    "--resume"),
    folder_run_case("--resume with a last.pt whose loading needs code", "last.pt' contains objects that need code",
                    _resume_code, "--resume"),
    folder_run_case("--resume with another student architecture",
                    "network 'student' is 'cnn_tiny', config says 'cnn_small'", _resume_other_arch, "--resume"),
    folder_run_case("--resume with another method", "is a run of method 'ce', but the config says 'kd'",
                    _resume_other_method, "--resume"),
]


# ----------------------------------------------------------------------------------------------
# running a case


def applicable(case: Case) -> bool:
    if case.requires is None:
        return True
    if case.requires.startswith("module:"):
        import importlib.util

        return importlib.util.find_spec(case.requires.partition(":")[2]) is not None
    from adaptkd.methods import list_methods

    return case.requires in list_methods()


def snapshot(folder: Path) -> dict[str, Any]:
    """Every entry under ``folder`` (not following links): content hash / link target."""
    if not os.path.lexists(folder):
        return {}
    out: dict[str, Any] = {}
    top = Path(folder)
    if top.is_symlink() or not top.is_dir():
        return {".": ("link", os.readlink(top)) if top.is_symlink() else ("file",
                                                                          hashlib.sha256(top.read_bytes()).hexdigest())}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(top))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                st = p.stat()
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
            else:
                out[rel] = ("dir",)
    return out


def run_case(case: Case, tmp: Path, fx: Fixtures) -> tuple[int, str, dict, dict]:
    """Run one case in ``tmp``: (exit code, stderr, run folder before, after). The outside
    files of the case (``tmp`` minus the run folder) are checked by the caller too."""
    from adaptkd.cli import main

    argv = case.build(tmp, fx)
    before = {"run": snapshot(tmp / "run"), "all": snapshot(tmp)}
    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp)  # a `!!python/...` payload that ran would write here
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse
                rc = int(exc.code or 0)
    finally:
        os.chdir(cwd)
    after = {"run": snapshot(tmp / "run"), "all": snapshot(tmp)}
    return rc, err.getvalue(), before, after


def markdown(root: Path) -> str:
    """The table of docs/errors.md, from the real messages (paths shown relative to the case folder)."""
    fx = make_fixtures(root / "fixtures")
    rows = []
    for i, case in enumerate(CASES, 1):
        if not applicable(case):
            rows.append((case.group, case.name, f"(skipped: method {case.requires!r} is not registered)", ""))
            continue
        tmp = root / f"case{i:03d}"
        tmp.mkdir()
        rc, err, _, _ = run_case(case, tmp, fx)
        msg = err.strip()
        for base_dir, label in ((str(tmp), "<case>"), (str(fx.root), "<fixtures>"), (str(root), "<tmp>")):
            msg = msg.replace(base_dir, label)
        rows.append((case.group, case.name, msg, str(rc)))
    lines = [
        "# Errors: every bad input and its message",
        "",
        "Generated by `python tests/bad_input_cases.py --markdown > docs/errors.md` from the real",
        "messages of `adaptkd train` (the same cases `tests/test_bad_inputs.py` checks). Each is refused",
        "before training starts, with exit code 2 and no run file created or changed. &lt;case&gt; is the",
        "folder the case ran in, &lt;fixtures&gt; the folder of the files the cases share.",
        "",
        f"{sum(1 for r in rows if r[3])} cases.",
        "",
        "| # | input | exit | message |",
        "|---:|---|---:|---|",
    ]
    for i, (group, name, msg, rc) in enumerate(rows, 1):
        cell = msg.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n",
                                                                                                               "<br>")
        lines.append(f"| {i} | **{group}**: {name} | {rc} | {cell} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        print("usage: python tests/bad_input_cases.py --markdown > docs/errors.md", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        table = markdown(Path(d))
    from tests.hostile_cases import markdown as hostile_markdown
    from tests.hostile_cases import run_campaign

    sys.stdout.write(table + "\n" + hostile_markdown(run_campaign(log=lambda s: None)))
