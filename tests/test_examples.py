"""The examples run (one epoch each, on CPU) and stay short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), "--epochs", "1", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("args", [(), ("--method", "switokd"), ("--method", "kd", "--balance", "gradient")])
def test_own_loop_example(args):
    out = run("own_loop.py", *args)
    assert "epoch 1: loss" in out and "student accuracy" in out
    if "gradient" in args:
        assert "balance/student/lambda" in out  # the balancer's signals reach the epoch summary


def test_own_loop_is_short():
    lines = (REPO / "examples" / "own_loop.py").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# 2. Distil"))
    assert len(lines) - start <= 40


def test_lightning_example():
    pytest.importorskip("lightning.pytorch", reason="PyTorch Lightning is not installed (extra `lightning`)")
    out = run("lightning.py")
    assert "teacher accuracy" in out and "student accuracy (dtkd)" in out
