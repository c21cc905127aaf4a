"""engine/epoch.py: an epoch's running sums, its means, and the values logged per step and per epoch."""

import pytest
import torch

from adaptkd.engine.epoch import (
    EpochTotals,
    epoch_end_values,
    step_values,
    sum_across_ranks,
)
from adaptkd.methods import StepOut

CPU = torch.device("cpu")


def _step(kd: float, logits: list[list[float]]) -> StepOut:
    return StepOut(losses={"student": {"kd": torch.tensor(kd)}}, logits={"student": torch.tensor(logits)},
                   signals={"tau": torch.tensor(2.0), "per_class": torch.tensor([1.0, 3.0])})


def test_means_over_used_steps_and_accuracy_over_used_images():
    t = EpochTotals(CPU)
    y = torch.tensor([0, 1])
    t.add(_step(1.0, [[2.0, 0.0], [0.0, 1.0]]), {"balance/w": torch.tensor(0.5), "vec": torch.ones(2)}, y)  # 2 right
    t.seen += 2
    t.seen += 2  # a skipped step: seen, not used
    t.add(_step(3.0, [[0.0, 2.0], [0.0, 1.0]]), {"balance/w": torch.tensor(1.5)}, y)  # 1 right
    t.seen += 2
    summary, seen = t.summary(world_size=1, distributed=False)
    assert seen == 6.0
    assert summary == {"train/student/kd": 2.0, "train/balance/w": 1.0, "train/acc/student": 75.0}
    assert (t.used_steps, t.used_seen) == (2, 4)


def test_state_dict_round_trip_gives_the_same_summary():
    t = EpochTotals(CPU)
    t.add(_step(1.0, [[2.0, 0.0]]), {}, torch.tensor([0]))
    t.seen += 1
    state = t.state_dict()
    assert set(state) == {"seen", "used_steps", "used_seen", "sums", "correct"}
    u = EpochTotals(CPU)
    u.load_state_dict(state)
    assert u.summary(1, False) == t.summary(1, False)
    u.add(_step(3.0, [[0.0, 2.0]]), {}, torch.tensor([0]))
    assert u.summary(1, False)[0]["train/student/kd"] == 2.0
    assert t.summary(1, False)[0]["train/student/kd"] == 1.0  # the state was copied, not shared


def test_world_size_divides_the_summed_steps():
    t = EpochTotals(CPU)
    t.add(_step(4.0, [[1.0, 0.0]]), {}, torch.tensor([0]))
    assert t.summary(world_size=2, distributed=False)[0]["train/student/kd"] == 2.0


def test_sum_across_ranks_without_values_keeps_the_extra():
    assert sum_across_ranks({}, torch.tensor([7.0]), False) == {"__seen": 7.0}


def test_step_values_name_losses_and_leave_out_hidden_signals():
    out = _step(1.5, [[1.0, 0.0]])
    vals = step_values(out, {"balance/w": torch.tensor(0.25)}, lambda name: name == "tau", distributed=False)
    assert vals == {"loss/student/kd": 1.5, "balance/w": 0.25, "per_class": [1.0, 3.0]}
    assert step_values(StepOut(losses={}), {}, lambda name: False, distributed=False) == {}


def test_epoch_end_values_on_one_process_are_the_method_summary():
    vals = {"expert_fraction": 0.5, "mode": "expert"}
    assert epoch_end_values(vals, "switokd", distributed=False, device=CPU) is vals


@pytest.mark.parametrize("skipped", [0, 3])
def test_summary_without_used_steps_is_empty_but_counts_images(skipped):
    t = EpochTotals(CPU)
    t.seen += skipped
    summary, seen = t.summary(1, False)
    assert summary == {} and seen == float(skipped)

