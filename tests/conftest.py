"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_config

torch.set_num_threads(1)  # the tests use tiny networks: one thread is fastest


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory):
    """A briefly trained cnn_small teacher on digits (adaptkd checkpoint)."""
    from adaptkd.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(out, "ce")
    cfg["student"] = {"arch": "cnn_small"}
    cfg["run"]["max_steps_per_epoch"] = 20
    Trainer(cfg).fit()
    return str(out / "best.pt")
