"""The engine end to end on tiny real runs: training, teachers, checkpoints, resume, faults."""

from __future__ import annotations

import json

import pytest
import torch

from adaptkd.config import ConfigError, load_config
from adaptkd.engine.checkpoint import CheckpointError, load_checkpoint
from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import NonFiniteError, RunFolderError, Trainer
from tests.helpers import crash_after_epoch, tiny_config


def test_ce_run_writes_everything(tmp_path):
    summary = Trainer(tiny_config(tmp_path / "r")).fit()
    out = tmp_path / "r"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (out / name).is_file(), name
    recs = read_metrics(out / "metrics.jsonl")
    epochs = [r["epoch"] for r in recs if r["kind"] == "epoch"]
    assert epochs == [1, 2]
    assert any(r["kind"] == "step" and "loss/student/ce" in r for r in recs)
    s = json.loads((out / "summary.json").read_text())
    assert s["learners"]["student"]["params"] == summary["learners"]["student"]["params"] > 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 2 and ck["meta"]["arch"]["student"] == "cnn_tiny"


def test_teacher_is_frozen_and_computed_without_grad(tmp_path, teacher_ckpt):
    cfg = tiny_config(tmp_path / "kd", "kd", teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}])
    tr = Trainer(cfg)
    teacher = tr.networks["teacher0"]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    tr.fit()
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats too: eval mode


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_logit_methods_train(tmp_path, teacher_ckpt, method):
    cfg = tiny_config(tmp_path / method, method, teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}])
    s = Trainer(cfg).fit()
    assert 0 <= s["final_acc"] <= 100
    recs = read_metrics(tmp_path / method / "metrics.jsonl")
    step = [r for r in recs if r["kind"] == "step"][0]
    assert f"loss/student/{'kd' if method == 'kd' else 'dkd'}" in step


def test_resume_equals_uninterrupted(tmp_path):
    full = Trainer(tiny_config(tmp_path / "full", **{"optim__epochs": 3})).fit()
    part_cfg = tiny_config(tmp_path / "part", **{"optim__epochs": 3})
    crash_after_epoch(Trainer(part_cfg), 1)
    resumed = Trainer(load_config(part_cfg), resume=True).fit()
    assert resumed["final_acc"] == full["final_acc"]
    a = [r for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if r["kind"] == "epoch"]
    b = [r for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["train/student/ce"] == rb["train/student/ce"]
        assert ra["test/acc/student"] == rb["test/acc/student"]


def test_existing_run_is_not_overwritten(tmp_path):
    Trainer(tiny_config(tmp_path / "r", **{"optim__epochs": 1})).fit()
    with pytest.raises(RunFolderError, match="already holds a run"):
        Trainer(tiny_config(tmp_path / "r", **{"optim__epochs": 1}))


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "nan", **{"optim__epochs": 2})
    crash_after_epoch(Trainer(cfg), 1)
    good = load_checkpoint(tmp_path / "nan" / "last.pt")
    tr2 = Trainer(load_config(cfg), resume=True)
    orig = tr2.method.forward

    def poisoned(inp):
        out = orig(inp)
        if inp.step >= 8:
            out.losses["student"]["ce"] = out.losses["student"]["ce"] * float("nan")
        return out

    monkeypatch.setattr(tr2.method, "forward", poisoned)
    with pytest.raises(NonFiniteError, match=r"student\.ce.*step 8"):
        tr2.fit()
    kept = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert kept["epoch"] == good["epoch"] == 1
    assert all(torch.equal(kept["models"]["student"][k],
                           good["models"]["student"][k]) for k in good["models"]["student"])


def test_nonfinite_skip_counts(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "skip", **{"run__nonfinite": "skip", "optim__epochs": 1})
    tr = Trainer(cfg)
    orig = tr.method.forward

    def poisoned(inp):
        out = orig(inp)
        if inp.step % 2 == 0:
            out.losses["student"]["ce"] = out.losses["student"]["ce"] * float("inf")
        return out

    monkeypatch.setattr(tr.method, "forward", poisoned)
    tr.fit()
    assert tr.nonfinite_skipped == 3
    assert all(torch.isfinite(p).all() for p in tr.networks["student"].parameters())


def test_bad_teacher_checkpoints(tmp_path, teacher_ckpt):
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(open(teacher_ckpt, "rb").read()[:100])
    with pytest.raises(CheckpointError, match="trunc.pt.*corrupt or truncated"):
        Trainer(tiny_config(tmp_path / "a", "kd", teachers=[{"arch": "cnn_small", "checkpoint": str(bad)}]))
    with pytest.raises(CheckpointError, match="is a 'cnn_small' network, but the config asks for 'cnn_medium'"):
        Trainer(tiny_config(tmp_path / "b", "kd", teachers=[{"arch": "cnn_medium", "checkpoint": teacher_ckpt}]))
    raw = tmp_path / "raw.pt"
    from adaptkd.models import build_model

    torch.save(build_model("cnn_small", 7, in_channels=1).state_dict(), raw)
    with pytest.raises(CheckpointError, match="does not fit model 'cnn_small'.*shape"):
        Trainer(tiny_config(tmp_path / "c", "kd", teachers=[{"arch": "cnn_small", "checkpoint": str(raw)}]))
    evil = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights only"):
        Trainer(tiny_config(tmp_path / "d", "kd", teachers=[{"arch": "cnn_small", "checkpoint": str(evil)}]))


def test_class_count_mismatch(tmp_path, teacher_ckpt):
    # a teacher trained for 10 classes against a 3-class synthetic dataset
    cfg = tiny_config(tmp_path / "m", "kd", teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}])
    ck = load_checkpoint(teacher_ckpt)
    ck["meta"]["num_classes"] = 12
    p = tmp_path / "t12.pt"
    torch.save(ck, p)
    cfg["teachers"][0]["checkpoint"] = str(p)
    with pytest.raises(CheckpointError, match="trained for 12 classes, but the data has 10"):
        Trainer(cfg)


def test_symlink_planted_in_run_folder_is_refused(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(RunFolderError, match="symbolic link"):
        Trainer(tiny_config(out))


def test_config_error_before_training(tmp_path):
    with pytest.raises(ConfigError, match="teachers"):
        Trainer(tiny_config(tmp_path / "x", "kd"))
