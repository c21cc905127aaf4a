"""The worked example of docs/writing-a-method.md: the doc shows the file, this test trains it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import Trainer
from adaptkd.methods import METHODS, StepIn, build_method, example_networks
from tests.helpers import method_config

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def example():
    """docs/examples/logit_mse.py imported (registering ``logit_mse``), and unregistered afterwards."""
    spec = importlib.util.spec_from_file_location("logit_mse_example", DOCS / "examples" / "logit_mse.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        METHODS.remove("logit_mse")


def test_the_guide_shows_the_example_file_verbatim():
    guide = (DOCS / "writing-a-method.md").read_text(encoding="utf-8")
    code = (DOCS / "examples" / "logit_mse.py").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    body = code.split('"""', 2)[2].lstrip("\n")  # the file without its module docstring
    assert body in blocks, "docs/writing-a-method.md must show docs/examples/logit_mse.py as one python block"


def test_the_example_loss_matches_its_formula(example):
    s, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(example.logit_mse_loss(s, t), ((s - t) ** 2).sum() / 12)
    m = build_method("logit_mse", {}, _ctx())
    y = torch.tensor([0, 1, 2, 0])
    out = m(StepIn(x=torch.zeros(4, 1), y=y, epoch=1, step=0, logits={"student": s, "teacher0": t}))
    assert out.weights["student"] == {"ce": 1.0, "mse": 0.5}
    assert torch.equal(out.losses["student"]["mse"], example.logit_mse_loss(s, t))


def test_the_example_trains_end_to_end(example, tmp_path, teacher_ckpt):
    assert example_networks("logit_mse") == (1, 0, 0)
    summary = Trainer(method_config("logit_mse", tmp_path / "run", teacher_ckpt), log=lambda s: None).fit()
    assert summary["method"] == "logit_mse" and 0 <= summary["final_acc"] <= 100
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    steps = [r for r in recs if r["kind"] == "step"]
    epoch = [r for r in recs if r["kind"] == "epoch"][-1]
    assert all("logit_mse/gap" in r and "loss/student/mse" in r for r in steps)
    assert epoch["train/logit_mse/gap"] > 0 and "train/student/mse" in epoch


def _ctx():
    from adaptkd.methods import MethodContext

    return MethodContext(networks={}, learners=["student"], frozen=["teacher0"], arches={}, num_classes=3,
                         epochs=1, steps_per_epoch=1, sample_input=torch.zeros(1))
