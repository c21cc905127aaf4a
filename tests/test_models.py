"""Model zoo: registry behaviour, the feature contract, forward/backward of every model, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptkd.models import build_model, list_models, register_model
from adaptkd.models import registry as _registry

# name -> (exact parameter count at 100 classes, published count in millions or None, tap count).
# Published counts: the CRD (Tian et al. 2020) / mdistiller CIFAR-100 tables, given to 2 decimals.
ZOO = {
    "resnet8": (83_892, None, 3),
    "resnet14": (181_108, None, 6),
    "resnet20": (278_324, 0.28, 9),
    "resnet32": (472_756, 0.47, 15),
    "resnet44": (667_188, 0.67, 21),
    "resnet56": (861_620, 0.86, 27),
    "resnet110": (1_736_564, 1.74, 54),
    "resnet8x4": (1_233_540, 1.23, 3),
    "resnet32x4": (7_433_860, 7.43, 15),
    "resnet50": (23_705_252, 23.71, 16),
    "wrn_16_1": (180_916, None, 6),
    "wrn_16_2": (703_284, 0.70, 6),
    "wrn_16_8": (11_007_540, 11.01, 6),
    "wrn_16_10": (17_174_324, 17.17, 6),
    "wrn_40_1": (569_780, 0.57, 18),
    "wrn_40_2": (2_255_156, 2.26, 18),
    "vgg8": (3_965_028, 3.96, 5),
    "vgg13": (9_462_180, 9.46, 5),
    "mobilenetv2": (812_836, 0.81, 17),
    "shufflenetv1": (949_258, 0.95, 16),
    "shufflenetv2": (1_355_528, 1.36, 16),
    "mobilenet_v1": (3_309_476, None, 13),
    "vit_tiny": (5_380_132, None, 12),
    "vit_small": (21_376_996, None, 12),
    "cnn_tiny": (9_388, None, 3),
    "cnn_small": (78_804, None, 3),
    "cnn_medium": (300_356, None, 3),
}
SMALL = {"cnn_tiny", "cnn_small", "cnn_medium"}
HEAVY = {"resnet50", "vgg13", "wrn_16_8", "wrn_16_10", "vit_small", "resnet32x4"}  # run in eval, B=2


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_zoo_is_registered():
    names = list_models()
    assert names == sorted(names)
    missing = set(ZOO) - set(names)
    assert not missing, f"not registered: {missing}"


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_taps_head(name):
    torch.manual_seed(0)
    num_classes = 7
    if name in SMALL:
        model, x = build_model(name, num_classes, in_channels=1), torch.randn(2, 1, 8, 8)
    else:
        model, x = build_model(name, num_classes), torch.randn(2, 3, 32, 32)
    model.train(name not in HEAVY)

    modules = dict(model.named_modules())
    assert model.tap_blocks, "tap_blocks is empty"
    assert len(set(model.tap_blocks)) == len(model.tap_blocks)
    if name in ZOO:
        assert len(model.tap_blocks) == ZOO[name][2]
    head = modules[model.head_name]
    assert isinstance(head, nn.Linear) and head.in_features == model.feature_dim

    calls = {t: 0 for t in model.tap_blocks}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    head_inputs = []

    def make_hook(tap):
        def hook(_m, _inp, out):
            calls[tap] += 1
            seen[tap] = (out, out.detach().clone())

        return hook

    handles = [modules[t].register_forward_hook(make_hook(t)) for t in model.tap_blocks]
    handles.append(head.register_forward_pre_hook(lambda _m, inp: head_inputs.append(inp[0].shape)))
    logits = model(x)
    for h in handles:
        h.remove()

    assert logits.shape == (2, num_classes)
    assert all(c == 1 for c in calls.values()), f"taps not fired exactly once: {calls}"
    assert head_inputs == [torch.Size([2, model.feature_dim])]
    for tap, (out, snapshot) in seen.items():
        assert out.shape[0] == 2 and out.dim() in (3, 4), (tap, out.shape)
        assert torch.equal(out.detach(), snapshot), f"{tap} output was modified in place after the hook"

    loss = nn.functional.cross_entropy(logits, torch.tensor([1, 3]))
    loss.backward()
    bad = [k for k, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"parameters without a finite gradient: {bad[:5]}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_parameter_counts(name):
    exact, published, _ = ZOO[name]
    n = n_params(build_model(name, 100))
    assert n == exact
    if published is not None:
        assert abs(n / 1e6 - published) < 0.01  # tables round or truncate to 2 decimals
        if published >= 1.0:  # three or more significant figures: also within 0.5 %
            assert abs(n - published * 1e6) / (published * 1e6) < 0.005


def _cifar_resnet_params(depth: int, w: tuple[int, int, int, int], classes: int) -> int:
    """Closed form for the CIFAR BasicBlock ResNet (bias-free convs, BN = 2 params per channel)."""
    n = (depth - 2) // 6
    total = 3 * 9 * w[0] + 2 * w[0] + w[3] * classes + classes
    cin = w[0]
    for c in w[1:]:
        for _ in range(n):
            total += 9 * cin * c + 9 * c * c + 4 * c
            if cin != c:
                total += cin * c + 2 * c
            cin = c
    return total


@pytest.mark.parametrize("depth", [8, 14, 20, 32, 44, 56, 110])
def test_resnet_counts_match_closed_form(depth):
    assert n_params(build_model(f"resnet{depth}", 100)) == _cifar_resnet_params(depth, (16, 16, 32, 64), 100)
    if depth in (8, 32):
        m = build_model(f"resnet{depth}x4", 100)
        assert n_params(m) == _cifar_resnet_params(depth, (32, 64, 128, 256), 100)


@pytest.mark.parametrize("name,dim", [("vit_tiny", 192), ("vit_small", 384)])
def test_vit_count_matches_closed_form(name, dim):
    tokens = 1 + (32 // 4) ** 2
    per_block = 12 * dim * dim + 13 * dim  # qkv, proj, fc1, fc2 (+ biases), two LayerNorms
    expected = 12 * per_block + (3 * 16 * dim + dim) + dim + tokens * dim + 2 * dim + dim * 100 + 100
    assert n_params(build_model(name, 100)) == expected


def test_cnn_features_shapes():
    model = build_model("resnet8x4", 10).eval()
    shapes = {}
    mods = dict(model.named_modules())
    hs = [mods[t].register_forward_hook(lambda m, i, o, t=t: shapes.__setitem__(t, tuple(o.shape)))
          for t in model.tap_blocks]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hs:
        h.remove()
    assert list(shapes.values()) == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8)]


@pytest.mark.parametrize("name", sorted(n for n in ZOO if not n.startswith("vit")))
def test_cnns_accept_small_one_channel_inputs(name):
    model = build_model(name, 10, in_channels=1).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_vit_tokens_grid_and_kwargs():
    model = build_model("vit_tiny", 10, depth=2, drop_path=0.1)
    assert model.patch_grid == (8, 8) and model.embed_dim == 192
    assert model.tap_blocks == ["blocks.0", "blocks.1"]
    out = {}
    h = dict(model.named_modules())["blocks.1"].register_forward_hook(lambda m, i, o: out.setdefault("t", o))
    model.train()(torch.randn(2, 3, 32, 32)).sum().backward()  # drop_path active in train mode
    h.remove()
    assert out["t"].shape == (2, 1 + 64, 192)
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 3, 16, 16))

    digits = build_model("vit_tiny", 10, img_size=8, patch_size=2, depth=1, in_channels=1)
    assert digits.patch_grid == (4, 4)
    assert digits(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_model("vit_tiny", 10, img_size=30)


@pytest.mark.parametrize("width", [1.0, 1.4])
def test_width_mult(width):
    half = n_params(build_model("mobilenetv2", 100))
    m = build_model("mobilenetv2", 100, width_mult=width).eval()
    assert n_params(m) > half and m(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    assert m.feature_dim == (int(1280 * width) if width > 1 else 1280)
    v1 = build_model("mobilenet_v1", 100, width_mult=0.5).eval()
    assert v1.feature_dim == 512 and v1(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="width_mult"):
        build_model("mobilenet_v1", 100, width_mult=0)


def test_unknown_name_names_closest():
    with pytest.raises(KeyError) as e:
        build_model("resnet8x5", 10)
    assert "resnet8x4" in str(e.value)
    with pytest.raises(KeyError) as e:
        build_model("WRN_40_2", 10)
    assert "wrn_40_2" in str(e.value)
    with pytest.raises(KeyError) as e:
        build_model("zzzzzz", 10)
    assert "resnet8" in str(e.value)  # no close match: the message lists what exists


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn_tiny", bad)


def test_unexpected_kwarg_is_a_type_error():
    with pytest.raises(TypeError):
        build_model("resnet8", 10, width_mult=2.0)


def test_register_duplicate_and_default_name():
    @register_model()
    def _zoo_test_net(num_classes: int, in_channels: int = 3) -> nn.Module:
        return build_model("cnn_tiny", num_classes, in_channels=in_channels)

    try:
        assert "_zoo_test_net" in list_models()
        assert build_model("_zoo_test_net", 3)(torch.randn(2, 3, 8, 8)).shape == (2, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_model("_zoo_test_net")(lambda num_classes: nn.Linear(1, num_classes))
        with pytest.raises(ValueError, match="already registered"):
            register_model("resnet8")(lambda num_classes: nn.Linear(1, num_classes))
    finally:
        _registry.MODELS.remove("_zoo_test_net")
    assert "_zoo_test_net" not in list_models()


def test_builder_breaking_the_contract_is_rejected():
    register_model("_zoo_bare_linear")(lambda num_classes: nn.Linear(4, num_classes))
    try:
        with pytest.raises(TypeError, match="tap_blocks"):
            build_model("_zoo_bare_linear", 3)
    finally:
        _registry.MODELS.remove("_zoo_bare_linear")


def test_pretrained_style_state_dict_names():
    """Module names follow the reference CIFAR KD zoo (so its checkpoints' keys line up)."""
    keys = set(build_model("resnet8x4", 100).state_dict())
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer3.0.bn2.running_var", "fc.bias"} <= keys
    keys = set(build_model("wrn_40_2", 100).state_dict())
    assert {"block1.layer.0.bn1.weight", "block2.layer.0.convShortcut.weight", "bn1.bias", "fc.weight"} <= keys
    keys = set(build_model("vgg8", 100).state_dict())
    assert {"block0.0.weight", "block0.0.bias", "block4.1.running_mean", "classifier.weight"} <= keys
    keys = set(build_model("mobilenetv2", 100).state_dict())
    assert {"conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.weight", "classifier.0.weight"} <= keys


def test_needs_rgb_is_the_one_answer_for_namespaced_models():
    # every namespaced model (hf:, timm:, torchvision:) takes RGB; zoo models follow the data. The engine's setup, the
    # `train --check` command, the report and the teacher cache all ask this one function (the cache used to
    # leave out hf:, so a grayscale hf: run built its cache on one-channel data)
    import inspect

    import adaptkd.commands.train as train_cmd
    import adaptkd.engine.setup as setup
    import adaptkd.replay.build as replay_build
    import adaptkd.report.models as report_models
    from adaptkd.models.registry import needs_rgb

    assert needs_rgb("hf:some/model") and needs_rgb("timm:resnet18") and needs_rgb("torchvision:resnet18")
    assert not needs_rgb("cnn_tiny") and not needs_rgb("resnet8x4") and not needs_rgb("nosuch:thing")
    for mod in (setup, train_cmd, replay_build, report_models):
        src = inspect.getsource(mod)
        assert "needs_rgb(" in src and 'startswith(("' not in src, mod.__name__
