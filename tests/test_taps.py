"""FeatureTaps: reading intermediate activations of any nn.Module by module path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptkd.taps import FeatureTaps, list_taps, resolve_module


class Net(nn.Module):
    """A shared module called twice, nested containers, and a tuple-returning block."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 3)))
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = self.shared(self.shared(x))
        return self.head(self.inner(h))


class HasModuleAttr(nn.Module):
    """Not a wrapper, yet it has an attribute called ``module``."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(2, 2)
        self.other = nn.Linear(2, 2)

    def forward(self, x):
        return self.other(self.module(x))


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
               for m in model.modules())


def test_repeated_and_nested_modules():
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(5, 4)
    with FeatureTaps(net, ["shared", "inner.1.1", "inner"]) as taps:
        out = net(x)
    first = net.shared(x)
    second = net.shared(first)
    assert taps.calls == {"shared": 2, "inner.1.1": 1, "inner": 1}
    assert torch.equal(taps.outputs["shared"], second)  # the last call's value
    assert torch.equal(taps.outputs["inner"], taps.outputs["inner.1.1"])
    assert torch.equal(net.head(taps.outputs["inner"]), out)


def test_each_root_forward_starts_a_fresh_record():
    net = Net()
    taps = FeatureTaps(net, ["shared"]).attach()
    try:
        for _ in range(3):
            net(torch.randn(2, 4))
            assert taps.calls["shared"] == 2  # per forward, not accumulated
    finally:
        taps.remove()
    assert hooks_left(net) == 0


def test_capture_input_and_outputs_unchanged():
    net = Net()
    x = torch.randn(3, 4)
    ref = net(x)
    with FeatureTaps(net, ["head", "inner.1.0"], capture="input") as taps:
        out = net(x)
    assert torch.equal(out, ref)
    assert torch.equal(taps.outputs["head"], net.inner(net.shared(net.shared(x))))
    assert torch.equal(taps.outputs["inner.1.0"], net.inner[0](net.shared(net.shared(x))))


def test_student_taps_keep_graph_teacher_taps_under_no_grad():
    net = Net()
    x = torch.randn(3, 4)
    with FeatureTaps(net, ["inner.0"]) as taps:
        net(x)
    taps.outputs["inner.0"].pow(2).sum().backward()
    assert net.shared.weight.grad is not None and net.inner[0].weight.grad is not None
    assert net.head.weight.grad is None  # after the tap: untouched
    with torch.no_grad(), FeatureTaps(net, ["inner.0"], detach=True) as taps:
        net(x)
    assert not taps.outputs["inner.0"].requires_grad


def test_hooks_removed_on_exit_and_on_error():
    net = Net()
    with FeatureTaps(net, ["shared", "inner.1", "head"]):
        assert hooks_left(net) > 0
    assert hooks_left(net) == 0
    with pytest.raises(RuntimeError):
        with FeatureTaps(net, ["shared"]):
            raise RuntimeError("boom")
    assert hooks_left(net) == 0
    assert all(not m._forward_hooks for m in net.modules())


def test_unknown_name_lists_close_matches():
    net = Net()
    with pytest.raises(KeyError) as err:
        FeatureTaps(net, ["inner.1.2"])
    msg = str(err.value)
    assert "inner.1.2" in msg and "closest" in msg and "inner.1.1" in msg and "list_taps" in msg
    with pytest.raises(KeyError, match="non-empty"):
        FeatureTaps(net, [""])


def test_list_taps_and_wrappers():
    net = Net()
    names = list_taps(net)
    assert names == ["shared", "inner", "inner.0", "inner.1", "inner.1.0", "inner.1.1", "head"]
    dp = nn.DataParallel(net)  # on CPU it just calls the module
    assert list_taps(dp) == names
    assert resolve_module(dp, "inner.1.1") is net.inner[1][1]
    assert resolve_module(dp, "module.inner.1.1") is net.inner[1][1]
    with FeatureTaps(dp, ["shared"]) as taps:
        dp(torch.randn(2, 4))
    assert taps.calls["shared"] == 2
    # torch.compile's wrapper (torch._dynamo's OptimizedModule, recognised by its class name and
    # ``_orig_mod``); a stand-in, since importing dynamo takes ~10 s on the test machine.
    OptimizedModule = type("OptimizedModule", (nn.Module,), {})
    compiled = OptimizedModule()
    compiled._orig_mod = net
    assert list_taps(compiled) == names
    assert resolve_module(compiled, "head") is net.head
    plain = HasModuleAttr()
    assert list_taps(plain) == ["module", "other"]  # not mistaken for a wrapper
    assert resolve_module(plain, "other") is plain.other


def test_single_string_name_and_tuple_outputs_detached():
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            a, b = self.pair(x)
            return a + b

    m = Holder()
    x = torch.randn(2, 3, requires_grad=True)
    with FeatureTaps(m, "pair", detach=True) as taps:
        m(x)
    a, b = taps.outputs["pair"]
    assert isinstance(taps.outputs["pair"], tuple) and not a.requires_grad and not b.requires_grad
    assert torch.equal(a, x.detach() * 2)


def test_zoo_model_tap_blocks():
    from adaptkd.models import build_model

    net = build_model("resnet8", num_classes=10)
    with torch.no_grad(), FeatureTaps(net, net.tap_blocks, detach=True) as taps:
        net(torch.randn(2, 3, 32, 32))
    assert [tuple(taps.outputs[n].shape[1:]) for n in net.tap_blocks] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert hooks_left(net) == 0


def test_input_taps_next_to_output_taps():
    """A name ending in ':input' captures that module's input, alongside output taps of the same taps object."""
    from adaptkd.taps import FeatureTaps, input_of

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    with FeatureTaps(net, ["1", input_of("2"), "2"], detach=True) as t:
        y = net(x)
    hidden = torch.relu(net[0](x))
    assert input_of("2") == "2:input"
    assert torch.equal(t.outputs["2:input"], hidden) and torch.equal(t.outputs["1"], hidden)
    assert torch.equal(t.outputs["2"], y)
    with pytest.raises(KeyError):
        FeatureTaps(net, ["9:input"])
