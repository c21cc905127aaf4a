"""Determinism: the same seed on CPU gives identical metrics and weights, for every method.

Each method runs its own tiny digits example (``tests.helpers.method_config``: options and networks from
the method's ``spec.example``), so a newly registered method is covered at once.
"""

from __future__ import annotations

import pytest
import torch

from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import Trainer
from adaptkd.methods import example_networks, list_methods, method_class
from tests.helpers import assert_same_run, method_config, tiny_config


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
