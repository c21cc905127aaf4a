"""Small helpers shared by method modules."""

from __future__ import annotations

import torch
from torch import Tensor

from adaptkd.methods.base import StepIn


def teacher_logits(inp: StepIn, frozen: list[str]) -> Tensor:
    """The frozen teacher's logits; with several teachers, the mean of their logits."""
    if len(frozen) == 1:
        return inp.logits[frozen[0]]
    return torch.stack([inp.logits[n] for n in frozen]).mean(0)
