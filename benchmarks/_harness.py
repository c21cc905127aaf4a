"""Pieces shared by the per-method step-time scripts (``benchmarks/*_step_time.py``): the config of
a timing run on random-init networks, the teacher/student/batch command-line options, and a timer.
Importing it also puts the repository root on ``sys.path`` so the scripts run from a checkout."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def step_config(args: argparse.Namespace, out: str, *, method: dict[str, Any], student: dict | None = None,
                teachers: list[dict] | None = None, balance: dict | None = None,
                optim: dict | None = None) -> dict[str, Any]:
    """A one-epoch synthetic run of ``args.batch``-sized batches: student ``args.student`` and one
    random-init teacher ``args.teacher`` unless given; SGD lr 0.01 unless ``optim``; no logging,
    progress, latency or TensorBoard, so that only the step is timed."""
    cfg: dict[str, Any] = {
        "data": {"name": "synthetic", "image_size": args.image_size, "num_classes": args.classes,
                 "train_size": args.batch * 2, "test_size": args.batch, "batch_size": args.batch},
        "student": student if student is not None else {"arch": args.student},
        "teachers": teachers if teachers is not None else [{"arch": args.teacher, "random_init": True}],
        "method": method,
        "optim": optim if optim is not None else {"name": "sgd", "lr": 0.01, "epochs": 1},
        "run": {"out": out, "seed": 0, "device": args.device, "progress": False, "latency": False,
                "tensorboard": False, "log_every": 10**9, "threads": args.threads},
    }
    if balance is not None:
        cfg["balance"] = balance
    return cfg


def add_pair_args(p: argparse.ArgumentParser, *, steps: int, warmup: int, steps_help: str,
                  warmup_help: str) -> None:
    """--teacher/--student (resnet32x4 -> resnet8x4), --batch 64, --classes 100, --image-size 32,
    --steps, --warmup, --threads 1, --device cpu."""
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c
