"""The run folder module (adaptkd.engine.rundir): the one place that knows a run's files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptkd.engine import rundir
from adaptkd.errors import CheckpointError, RunFolderError


def test_a_trained_run_reads_back(teacher_ckpt):
    run = Path(teacher_ckpt).parent
    cfg = rundir.read_config(run)
    assert cfg["method"]["name"] == "ce" and cfg["student"]["arch"] == "cnn_small"
    summary = rundir.read_summary(run)
    assert summary["method"] == "ce" and summary["final_acc"] == summary["learners"]["student"]["final_acc"]
    recs = rundir.read_metrics(run)
    assert recs[-1]["kind"] == "epoch" and recs[-1]["epoch"] == summary["epochs"]
    assert rundir.checkpoint_path(run, "best") == run / "best.pt"
    assert rundir.checkpoint_path(run, "nonesuch") == run / "last.pt"  # falls back to last.pt
    path, ckpt = rundir.read_checkpoint(run, "last")
    assert path == run / "last.pt" and ckpt["epoch"] == summary["epochs"]
    model, info = rundir.load_model(run)
    assert info["arch"] == "cnn_small" and not model.training
    x = torch.zeros(2, info["in_channels"], info["image_size"], info["image_size"])
    assert model(x).shape == (2, info["num_classes"])


def test_writes_are_read_back(tmp_path):
    rundir.write_config(tmp_path, {"method": {"name": "kd"}, "run": {"out": str(tmp_path)}})
    rundir.write_summary(tmp_path, {"final_acc": 1.5})
    assert rundir.read_config(tmp_path)["method"] == {"name": "kd"}
    assert rundir.read_summary(tmp_path) == {"final_acc": 1.5}
    assert rundir.read_metrics(tmp_path) == []
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp file


def test_what_is_not_a_run_is_named(tmp_path):
    with pytest.raises(RunFolderError, match="no config.yaml"):
        rundir.read_config(tmp_path)
    assert rundir.read_summary(tmp_path) == {}
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        rundir.checkpoint_path(tmp_path)
    (tmp_path / "summary.json").write_text("{oops")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        rundir.read_summary(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="not an adaptkd run checkpoint"):
        rundir.read_checkpoint(tmp_path)
