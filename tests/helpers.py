"""Helpers shared by the test modules (no test module imports another): tiny configs, an image
folder written on the fly, a crash after a checkpoint, and comparisons of two run folders."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptkd.engine.checkpoint import load_checkpoint
from adaptkd.engine.logger import read_metrics
from adaptkd.methods import example_networks, method_class


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


def make_image(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A ``w`` x ``h`` image of uniform random pixels (seeded), converted to ``mode``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    return img if mode == "RGB" else img.convert(mode)


def image_folder(root: Path, classes=("cat", "dog"), per_class=(5, 3), size=(20, 15), fmt="JPEG", val=(2, 2),
                 mode="RGB") -> Path:
    """An ImageFolder tree under ``root`` (``train/<class>/``, ``val/<class>/``) of small random images."""
    for split, counts in (("train", per_class), ("val", val)):
        for c, n in zip(classes, counts):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ext = "jpg" if fmt == "JPEG" else "png"
                make_image(size[0] + i, size[1], hash((split, c, i)) % 1000, mode).save(d / f"{i}.{ext}", fmt)
    return root


class Crash(Exception):
    """The simulated crash of :func:`crash_after_epoch`."""


def crash_after_epoch(trainer, epoch):
    """Run ``trainer`` and crash right after the checkpoint of ``epoch`` is written."""
    save = trainer.save

    def save_then_crash(best):
        save(best)
        if trainer.epoch >= epoch:
            raise Crash()

    trainer.save = save_then_crash
    with pytest.raises(Crash):
        trainer.fit()


def crash_at_step(trainer, global_step: int) -> None:
    """Run ``trainer.fit()`` and interrupt it (``KeyboardInterrupt``, as Ctrl-C would) when the step
    after global step ``global_step`` starts: what was checkpointed by then is what a resume finds."""
    step = trainer.train_step

    def crashing(*a, **k):
        if trainer.global_step == global_step:
            raise KeyboardInterrupt
        return step(*a, **k)

    trainer.train_step = crashing
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def family(method: str) -> str:
    """The method family its spec declares (the kill-and-resume test runs one method per family)."""
    return method_class(method).spec.family


def networks(method: str, teacher_ckpt: str) -> dict:
    """The ``teachers``/``peers`` sections of the method's example run (frozen teachers are a trained cnn_small)."""
    frozen, trainable, peers = example_networks(method)
    teachers = [{"arch": "cnn_small", "checkpoint": teacher_ckpt} for _ in range(frozen)]
    teachers += [{"arch": "cnn_tiny", "trainable": True} for _ in range(trainable)]
    return {"teachers": teachers, "peers": [{"arch": "cnn_tiny"} for _ in range(peers)]}


def method_config(method: str, out, teacher_ckpt: str, *, epochs: int = 2, steps: int = 4, **run) -> dict:
    """A tiny digits config of ``method`` (CPU, one thread, no progress bar/latency/TensorBoard)."""
    nets = networks(method, teacher_ckpt)
    cfg = tiny_config(out, method, teachers=nets["teachers"])
    if nets["peers"]:
        cfg["peers"] = nets["peers"]
    cfg["method"].update(copy.deepcopy(dict(method_class(method).spec.example.options)))
    cfg["optim"]["epochs"] = epochs
    cfg["run"].update({"max_steps_per_epoch": steps, "device": "cpu", "threads": 1, "precision": "fp32"})
    cfg["run"].update(run)
    return cfg


#: record fields that measure wall-clock time (legitimately different between two runs)
def _timing(key: str) -> bool:
    return key.startswith("time/") or key.endswith("per_s") or "latency" in key


def comparable(records: list[dict]) -> list[dict]:
    """Metrics records without their timing fields (NaN compared as equal)."""
    out = []
    for r in records:
        out.append({k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k,
                    v in r.items() if not _timing(k)})
    return out


def assert_same_run(a, b) -> None:
    """Two run folders hold identical metrics, final weights, method/balancer state and summaries."""
    ra, rb = comparable(read_metrics(a / "metrics.jsonl")), comparable(read_metrics(b / "metrics.jsonl"))
    assert [(r["kind"], r["epoch"], r["step"]) for r in ra] == [(r["kind"], r["epoch"], r["step"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x == y, {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    for part in ("models", "method", "balancer", "optims", "method_extra"):
        _assert_tree_equal(ca.get(part), cb.get(part), part)
    assert ca["epoch"] == cb["epoch"] and ca["global_step"] == cb["global_step"]


def _assert_tree_equal(x, y, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.shape == y.shape and torch.equal(x, y), where
    elif isinstance(x, dict):
        assert isinstance(y, dict) and set(x) == set(y), (where, set(x) ^ set(y) if isinstance(y, dict) else y)
        for k in x:
            _assert_tree_equal(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        assert isinstance(y, (list, tuple)) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_tree_equal(u, v, f"{where}[{i}]")
    else:
        assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), (where, x, y)

