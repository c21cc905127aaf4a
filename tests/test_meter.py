"""Epoch metering of method signals (adaptkd.engine.meter) and the method spec's declarations."""

from __future__ import annotations

import pytest
import torch

from adaptkd.engine.meter import SignalMeter
from adaptkd.errors import ConfigError
from adaptkd.methods import MethodSpec, NetworkNeeds, Roster
from adaptkd.methods.spec import check_roster


def test_every_reduction_over_an_epoch():
    spec = MethodSpec(signals={"a": "mean", "b": "min", "c": "max", "d": "sum", "e": "last", "f": "fraction",
                               "vec/*": "mean"})
    meter = SignalMeter(spec)
    for v in ([1.0, 5.0, 2.0, 1.0, 9.0, 0.0], [3.0, 4.0, 7.0, 2.0, 8.0, 0.5]):
        meter.update({**{k: torch.tensor(x) for k, x in zip("abcdef", v)},
                      "vec/x": torch.tensor([v[0], 2 * v[0]]), "unlisted": torch.tensor(1.0)})
    assert meter.summary() == {"a": 2.0, "b": 4.0, "c": 7.0, "d": 3.0, "e": 8.0, "f": 0.5, "vec/x": [2.0, 4.0]}
    assert meter.summary() == {}  # a new epoch starts empty


def test_first_matching_pattern_wins_and_hidden_signals():
    spec = MethodSpec(signals={"s/*/paused": "fraction", "s/*": "mean"}, hidden=("s/*/paused",))
    assert spec.reduction("s/t/paused") == "fraction" and spec.reduction("s/t-s/gap") == "mean"
    assert spec.reduction("other") is None
    assert spec.is_hidden("s/t/paused") and not spec.is_hidden("s/t-s/gap")
    with pytest.raises(ValueError, match="reductions"):
        MethodSpec(signals={"x": "median"})  # type: ignore[dict-item]


@pytest.mark.parametrize("needs, roster, field", [
    (NetworkNeeds(), Roster(), "field `teachers`: method 'm' takes at least one frozen teacher, the config has 0"),
    (NetworkNeeds(frozen=(1, 1)), Roster(("a", "b"), (False, False)), "takes exactly one frozen teacher"),
    (NetworkNeeds(), Roster(("a",), (True,)), "field `teachers.0.trainable`"),
    (NetworkNeeds(frozen=(0, 0), trainable=(0, None)), Roster(("a",), (False,)), "set `trainable: true`"),
    (NetworkNeeds(), Roster(("a",), (False,), ("p",)), "field `peers`: method 'm' takes no online peers"),
    (NetworkNeeds(frozen=(0, 0), trainable=(2, 2)), Roster(("a",), (True,)), "exactly two trainable teachers"),
])
def test_roster_checks_name_the_field(needs, roster, field):
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace("`", "`")):
        check_roster("m", needs, roster)


def test_fitting_roster_passes():
    check_roster("m", NetworkNeeds(frozen=(1, None)), Roster(("a", "b"), (False, False)))
    check_roster("m", NetworkNeeds(frozen=(0, 0), trainable=(1, 1), peers=(1, 1)), Roster(("t",), (True,), ("p",)))
