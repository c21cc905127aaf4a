"""Determinism: the same seed on CPU gives identical metrics and weights, for every method.

This module also holds ``method_config``, the tiny digits run of a method that the fault and
bad-input tests reuse. Its options and networks come from the method's own spec
(``spec.example``), so a newly registered method is covered at once.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from adaptkd.engine.checkpoint import load_checkpoint
from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import Trainer
from adaptkd.methods import example_networks, list_methods, method_class
from tests.conftest import tiny_config


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
        out.append({k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if not _timing(k)})
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


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("method", list_methods())
def test_same_seed_same_run(tmp_path, teacher_ckpt, method):
    """Two runs of one config (same seed, CPU) agree exactly: every metric, every weight."""
    runs = []
    for name in ("a", "b"):
        Trainer(method_config(method, tmp_path / name, teacher_ckpt), log=lambda s: None).fit()
        runs.append(tmp_path / name)
    assert_same_run(*runs)
    steps = [r for r in read_metrics(runs[0] / "metrics.jsonl") if r["kind"] == "step"]
    assert steps and all(any(k.startswith("loss/") for k in r) for r in steps)


def test_another_seed_changes_the_run(tmp_path, teacher_ckpt):
    """The comparison above can fail: a different seed gives different metrics."""
    Trainer(method_config("kd", tmp_path / "a", teacher_ckpt), log=lambda s: None).fit()
    Trainer(method_config("kd", tmp_path / "b", teacher_ckpt, seed=1), log=lambda s: None).fit()
    with pytest.raises(AssertionError):
        assert_same_run(tmp_path / "a", tmp_path / "b")


def test_every_method_declares_its_example():
    """Each registered method's spec names a family and an example whose networks fit its needs."""
    from adaptkd.methods import Roster

    for m in list_methods():
        cls = method_class(m)
        assert cls.spec.family in ("logit", "feature", "online", "unic"), (m, cls.spec.family)
        frozen, trainable, peers = example_networks(m)
        roster = Roster(teachers=tuple(f"t{i}" for i in range(frozen + trainable)),
                        trainable=(False,) * frozen + (True,) * trainable, peers=tuple(f"p{i}" for i in range(peers)))
        cls.check(cls.Params.model_validate(dict(cls.spec.example.options)), roster, epochs=2, balancer="fixed")


def test_deterministic_option_sets_torch_flags(tmp_path):
    """``run.deterministic: true`` switches torch to deterministic algorithms (CUDA kernels)."""
    import os

    before = torch.are_deterministic_algorithms_enabled()
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        tr = Trainer(tiny_config(tmp_path / "d", "ce", run__deterministic=True, run__device="cpu"), log=lambda s: None)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")
        assert torch.backends.cudnn.benchmark is False
        del tr
    finally:
        torch.use_deterministic_algorithms(before)
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = env
