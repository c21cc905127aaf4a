"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations


import pytest
import torch

torch.set_num_threads(1)  # the tests use tiny networks: one thread is fastest


def tiny_config(out, method: str = "ce", teachers=None, **over) -> dict:
    """A digits config of a few steps (the smallest real run)."""
    cfg = {
        "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 256, "crop_padding": 1, "flip": False},
        "student": {"arch": "cnn_tiny"},
        "teachers": teachers or [],
        "method": {"name": method},
        "optim": {"name": "sgd", "lr": 0.05, "epochs": 2, "schedule": "cosine", "milestones": []},
        "run": {"out": str(out), "seed": 0, "log_every": 5, "progress": False, "latency": False,
                "max_steps_per_epoch": 6, "tensorboard": False},
    }
    for key, val in over.items():
        section, _, field = key.partition("__")
        cfg.setdefault(section, {})[field] = val
    return cfg


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
