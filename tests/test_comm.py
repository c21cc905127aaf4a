"""The communicator methods and balancers reduce through, and the rule that only the engine talks to
``torch.distributed`` (the multi-process behaviour is tested in test_distributed/test_switokd/test_balance)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from adaptkd.comm import LOCAL, Communicator
from adaptkd.engine.distributed import communicator


def test_single_process_communicator_is_the_identity():
    t = torch.tensor([1.0, 2.0])
    assert communicator() is LOCAL and LOCAL.world_size == 1 and LOCAL.rank == 0
    assert LOCAL.sum(t) is t and LOCAL.mean(t) is t


def test_mean_divides_the_sum_by_the_ranks():
    class Twice(Communicator):  # a stand-in for two ranks holding the same tensor
        world_size = 2  # type: ignore[assignment]

        def sum(self, t):
            return t.mul_(2)

    assert Twice().mean(torch.tensor([3.0])).tolist() == [3.0]


def test_only_the_engine_calls_torch_distributed():
    pkg = Path(__file__).resolve().parents[1] / "adaptkd"
    pattern = re.compile(r"^\s*(import torch\.distributed|from torch\.distributed|from torch import distributed)"
                         r"|torch\.distributed\.[a-z_]+\(", re.M)
    offenders = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                 if "engine" not in p.relative_to(pkg).parts and pattern.search(p.read_text())]
    assert not offenders, offenders
