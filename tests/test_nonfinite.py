"""NonFiniteWatch (adaptkd.engine.nonfinite): the first non-finite step per name, read lazily."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptkd.engine.nonfinite import NonFiniteWatch
from adaptkd.errors import NonFiniteError
from adaptkd.methods import StepOut

NAN = float("nan")


def _out(ce: float, kd: float, w: float = 0.5) -> StepOut:
    return StepOut(losses={"student": {"ce": torch.tensor(ce), "kd": torch.tensor(kd)}},
                   weights={"student": {"ce": 1.0, "kd": torch.tensor(w)}})


def test_all_finite_records_nothing():
    watch = NonFiniteWatch(torch.device("cpu"))
    for step in range(3):
        ok = watch.check(torch.ones(2, 3), {"student": torch.zeros(2, 4)}, _out(1.0, 2.0), step)
        assert bool(ok)
    assert all(int(v) == -1 for v in watch.record().values())
    watch.raise_if_any(epoch=0, out=Path("run"))  # nothing to raise


def test_the_earliest_offender_is_named_with_the_others():
    watch = NonFiniteWatch(torch.device("cpu"))
    x, lg = torch.ones(2, 3), {"student": torch.zeros(2, 4)}
    assert bool(watch.check(x, lg, _out(1.0, 2.0), 0))
    assert not bool(watch.check(x, lg, _out(1.0, NAN), 1))  # kd goes NaN at step 1
    assert not bool(watch.check(x, lg, _out(NAN, NAN, w=float("inf")), 2))  # then ce and the kd weight
    rec = {k: int(v) for k, v in watch.record().items()}
    assert rec["student.kd"] == 1 and rec["student.ce"] == 2 and rec["student.kd.weight"] == 2 and rec["input"] == -1
    with pytest.raises(NonFiniteError,
                       match=r"`student.kd` at epoch 3, step 1 \(also: student.ce, student.kd.weight\)"):
        watch.raise_if_any(epoch=2, out=Path("run"))


def test_changed_terms_keep_what_was_recorded():
    watch = NonFiniteWatch(torch.device("cpu"))
    x, lg = torch.ones(2, 3), {"student": torch.zeros(2, 4)}
    watch.check(x, lg, _out(NAN, 1.0), 4)
    other = StepOut(losses={"student": {"ce": torch.tensor(1.0)}})
    assert bool(watch.check(x, lg, other, 5))
    assert int(watch.record()["student.ce"]) == 4 and int(watch.record()["student.kd"]) == -1
    with pytest.raises(NonFiniteError, match="no checkpoint had been written yet"):
        watch.raise_if_any(epoch=0, out=Path("run"))


def test_the_flags_are_isfinite_for_huge_finite_and_infinite_values():
    watch = NonFiniteWatch(torch.device("cpu"))
    x, big = torch.ones(2, 3), torch.finfo(torch.float32).max
    assert bool(watch.check(x, {"student": torch.zeros(2, 4)}, _out(big, -big, w=big), 0))  # huge but finite
    assert not bool(watch.check(x, {"student": torch.full((2, 4), -float("inf"))}, _out(1.0, 1.0), 1))
    rec = {k: int(v) for k, v in watch.record().items()}
    assert rec == {"input": -1, "student.logits": 1, "student.ce": -1, "student.kd": -1, "student.kd.weight": -1}


def test_the_input_is_watched_only_where_its_normalisation_can_overflow():
    from adaptkd.data import Augment

    assert Augment([0.5], [0.25]).bounded and Augment([0.0, 0.5, 1.0], [1e-3, 1.0, 0.1]).bounded
    assert not Augment([0.5], [1e-45]).bounded  # 1 / (255 · 1e-45) overflows: every view is NaN or inf
    assert not Augment([0.5], [2e-39]).bounded  # a finite scale (2e36), but 255 · scale does not fit in float32
    watch = NonFiniteWatch(torch.device("cpu"))
    assert bool(watch.check(None, {"student": torch.zeros(2, 4)}, _out(1.0, 2.0), 0))
    assert "input" not in watch.record()
    assert not bool(watch.check(None, {"student": torch.full((2, 4), float("nan"))}, _out(1.0, 2.0), 1))
    assert int(watch.record()["student.logits"]) == 1
