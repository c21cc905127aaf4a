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


def test_state_round_trip_continues_the_epoch():
    spec = MethodSpec(signals={"a": "mean", "v": "sum", "f": "fraction"})
    whole, first = SignalMeter(spec), SignalMeter(spec)
    steps = [{"a": torch.tensor(float(i)), "v": torch.tensor([i, -i], dtype=torch.float32),
              "f": torch.tensor(float(i % 2))} for i in range(5)]
    for s in steps:
        whole.update(s)
    for s in steps[:2]:
        first.update(s)
    second = SignalMeter(spec)
    second.load_state_dict(first.state_dict())
    for s in steps[2:]:
        second.update(s)
    assert second.summary() == whole.summary() == {"a": 2.0, "v": [10.0, -10.0], "f": 0.4}


def test_resume_inside_an_epoch_keeps_the_epoch_signals(tmp_path):
    """A run killed after an in-epoch checkpoint resumes with the epoch's signal reductions so far."""
    from adaptkd.engine.logger import read_metrics
    from adaptkd.engine.trainer import Trainer
    from tests.helpers import crash_at_step, tiny_config

    def cfg(out):
        c = tiny_config(out, "switokd", teachers=[{"arch": "cnn_tiny", "trainable": True}])
        c["run"].update({"checkpoint_every_steps": 3, "log_every": 1, "max_steps_per_epoch": 4, "device": "cpu"})
        return c

    Trainer(cfg(tmp_path / "full"), log=lambda s: None).fit()
    crashed = Trainer(cfg(tmp_path / "part"), log=lambda s: None)
    crash_at_step(crashed, 6)  # the checkpoint at global step 6 is 2 steps into epoch 2
    Trainer(cfg(tmp_path / "part"), resume=True, log=lambda s: None).fit()
    full, part = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("full", "part"))
    epochs = [[{k: v for k, v in r.items() if k.startswith("switokd/")} for r in recs if r["kind"] == "epoch"]
              for recs in (full, part)]
    assert epochs[0] == epochs[1] and "switokd/teacher0/paused_frac" in epochs[0][1]
