"""engine/roster.py: the run's networks (built or passed, frozen teachers), taps, forward modules, optimisers."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from adaptkd.config import ConfigError, load_config
from adaptkd.engine.roster import (
    attach_taps,
    build_networks,
    build_optimisers,
    check_class_counts,
    forward_networks,
)
from tests.helpers import tiny_config

CPU = torch.device("cpu")
PIPE = SimpleNamespace(num_classes=10, in_channels=1, class_names=[str(i) for i in range(10)])


def _cfg(tmp_path, **over):
    raw = tiny_config(tmp_path / "r", "kd", teachers=[{"arch": "cnn_tiny"}], **over)
    return load_config(raw, provided={"teacher0"})


def _teacher() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_learners_built_and_a_passed_teacher_frozen(tmp_path):
    cfg = _cfg(tmp_path)
    lines: list[str] = []
    nets = build_networks(cfg, PIPE, CPU, {"teacher0": _teacher()}, lines.append)
    assert list(nets.networks) == ["student", "teacher0"]
    assert (nets.learners, nets.frozen) == (["student"], ["teacher0"])
    assert nets.fields == {"student": "student", "teacher0": "teachers.0"}
    t = nets.networks["teacher0"]
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    assert all(p.requires_grad for p in nets.networks["student"].parameters())


def test_a_passed_network_the_config_does_not_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"networks \['ghost'\] were passed"):
        build_networks(_cfg(tmp_path), PIPE, CPU, {"teacher0": _teacher(), "ghost": _teacher()}, print)


def test_class_count_mismatch_names_the_network(tmp_path):
    cfg = _cfg(tmp_path)
    nets = {"teacher0": nn.Sequential(nn.Flatten(), nn.Linear(64, 7))}
    with pytest.raises(ConfigError, match=r"network 'teacher0' .* outputs \(7,\) classes"):
        check_class_counts(nets, lambda name: nn.Identity(), torch.zeros(2, 1, 8, 8), 10, cfg.network_names(),
                           "digits")
    nets["teacher0"].train()
    check_class_counts({"t": _teacher()}, lambda name: nn.Identity(), torch.zeros(2, 1, 8, 8), 10, {}, "digits")


def test_optimiser_per_learner_with_its_override_and_method_parameters(tmp_path):
    raw = tiny_config(tmp_path / "r", "dml", peers=None)
    raw["peers"] = [{"arch": "cnn_tiny", "optim": {"lr": 0.01}}]
    cfg = load_config(raw)
    nets = build_networks(cfg, PIPE, CPU, None, print)
    extra = nn.Parameter(torch.zeros(3))
    opt = build_optimisers(cfg, nets.networks, nets.learners, {"student": [extra]})
    peer = nets.learners[1]
    assert opt.optims["student"].param_groups[0]["lr"] == 0.05
    assert opt.optims[peer].param_groups[0]["lr"] == 0.01
    assert opt.extra_params == {"student": [extra], peer: []}
    assert any(p is extra for p in opt.optims["student"].param_groups[0]["params"])
    with pytest.raises(ConfigError, match=r"unknown learners \['ghost'\]"):
        build_optimisers(cfg, nets.networks, nets.learners, {"ghost": [extra]})


def test_taps_on_an_unknown_network_or_module_are_config_errors(tmp_path):
    nets = {"student": nn.Sequential(nn.Flatten(), nn.Linear(64, 10))}
    taps = attach_taps(SimpleNamespace(taps=lambda: {"student": ["1"]}), nets, [], method_name="m")
    nets["student"](torch.zeros(2, 1, 8, 8))
    assert taps["student"].outputs["1"].shape == (2, 10)
    with pytest.raises(ConfigError, match="method 'm' asks for taps on unknown network 'ghost'"):
        attach_taps(SimpleNamespace(taps=lambda: {"ghost": ["1"]}), nets, [], method_name="m")
    with pytest.raises(ConfigError, match="method 'm': tap on student"):
        attach_taps(SimpleNamespace(taps=lambda: {"student": ["nope"]}), nets, [], method_name="m")


def test_forward_networks_on_one_process_are_the_networks(tmp_path):
    nets = build_networks(_cfg(tmp_path), PIPE, CPU, {"teacher0": _teacher()}, print)
    fwd = forward_networks(nets, nn.Identity(), CPU, distributed=False, compile=False)
    assert fwd == nets.networks and fwd is not nets.networks

