"""Feature distillation: AFD (verified reference), RTK (reconstruction), FitNet hints.

Losses are checked against independent float64 computations written from docs/methods/features.md (loops,
no library helpers), against their properties, on plain nn.Modules tapped by module path, on
heterogeneous zoo pairs, and end to end on tiny digits runs.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adaptkd.config import ConfigError, load_config
from adaptkd.losses import (
    afd_loss,
    attention_map_distances,
    hint_loss,
    rtk_influence,
    rtk_loss,
    select_keys,
    spatial_attention,
)
from adaptkd.methods import MethodContext, StepIn, build_method
from adaptkd.taps import FeatureTaps
from tests.helpers import tiny_config

D64 = torch.float64


# ----------------------------------------------------------------------------------------------
# Plain nn.Modules (not from the zoo): different channels, spatial sizes and layer counts.
class Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())  # 6 x 8x8
        self.c2 = nn.Sequential(nn.Conv2d(6, 10, 3, stride=2, padding=1), nn.ReLU())  # 10 x 4x4
        self.c3 = nn.Sequential(nn.Conv2d(10, 12, 3, padding=1), nn.ReLU())  # 12 x 4x4
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.c3(self.c2(self.c1(x))).mean((2, 3)))


class Student(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleDict({
            "a": nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU()),  # 4 x 4x4
            "b": nn.Sequential(nn.Conv2d(4, 7, 3, stride=2, padding=1), nn.ReLU()),  # 7 x 2x2 (< teacher)
        })
        self.fc = nn.Linear(7, 5)

    def forward(self, x):
        return self.fc(self.body["b"](self.body["a"](x)).mean((2, 3)))


T_TAPS, S_TAPS = ["c1", "c2", "c3"], ["body.a", "body.b"]


def context(student, teacher, x):
    return MethodContext(networks={"student": student, "teacher0": teacher}, learners=["student"],
                         frozen=["teacher0"], arches={"student": "plain", "teacher0": "plain"}, num_classes=5,
                         epochs=1, steps_per_epoch=1, sample_input=x[:2])


def step_input(student, teacher, x, y, s_taps, t_taps, dtype=torch.float32):
    """Run both networks once (teacher under no_grad) and return a StepIn with leaf features."""
    with torch.no_grad(), FeatureTaps(teacher, t_taps, detach=True) as tt:
        tl = teacher(x)
    with torch.no_grad(), FeatureTaps(student, s_taps) as st:
        sl = student(x)
    feats = {"student": {k: v.to(dtype).requires_grad_() for k, v in st.outputs.items()},
             "teacher0": {k: v.to(dtype).requires_grad_() for k, v in tt.outputs.items()}}
    return StepIn(x=x, y=y, epoch=1, step=0,
                  logits={"student": sl.to(dtype).requires_grad_(), "teacher0": tl.to(dtype)},
                  feats=feats)


@pytest.fixture(scope="module")
def plain():
    torch.manual_seed(0)
    s, t = Student(), Teacher()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    return s, t, x, y


def build(name, opts, s, t, x, dtype=torch.float32):
    torch.manual_seed(1)
    return build_method(name, {"student_taps": S_TAPS, "teacher_taps": T_TAPS, **opts}, context(s, t, x)).to(dtype)


# ----------------------------------------------------------------------------------------------
# Independent float64 computations from the spec (loops, explicit formulas).
def ref_map(f, size=None):
    """Channel mean of squares, adaptive-average-pooled to ``size`` by its bin rule, L2-normalised."""
    m = (f ** 2).mean(1)  # [B, H, W]
    b, h, w = m.shape
    if size is not None and (h, w) != tuple(size):
        ho, wo = size
        out = torch.zeros(b, ho, wo, dtype=f.dtype)
        for i in range(ho):
            for j in range(wo):
                r0, r1 = (i * h) // ho, -((-(i + 1) * h) // ho)
                c0, c1 = (j * w) // wo, -((-(j + 1) * w) // wo)
                out[:, i, j] = m[:, r0:r1, c0:c1].mean((1, 2))
        m = out
    v = m.reshape(b, -1)
    return v / v.norm(dim=1, keepdim=True)


def ref_bn(x, bn):
    mu = x.mean(0)
    var = ((x - mu) ** 2).mean(0)  # biased, training mode
    return (x - mu) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def ref_proj(x, proj):
    y = ref_bn(x @ proj.linear.weight.T + proj.linear.bias, proj.bn)
    return y.clamp_min(0) if proj.relu else y


def ref_attention(att, q_feats, k_feats):
    """e[b,i,j] = (q_i · W_i k_j + p_i · p_j)/√d, softmax over j — AFD §2.2 with generic roles."""
    d, nq, nk = att.qk_dim, len(q_feats), len(k_feats)
    b = q_feats[0].shape[0]
    q = [ref_proj(f.mean((2, 3)), p) for p, f in zip(att.query, q_feats)]
    k = [ref_proj(f.mean((2, 3)), p) for p, f in zip(att.key, k_feats)]
    rows = torch.cat(k, 0)  # the bilinear BatchNorm sees all B·n_k keys
    kt = ref_proj(rows, att.bilinear).reshape(nk, b, nq, d)
    e = torch.zeros(b, nq, nk, dtype=D64)
    for i in range(nq):
        for j in range(nk):
            e[:, i, j] = ((q[i] * kt[j, :, i]).sum(1) + (att.pos_query[i] * att.pos_key[j]).sum()) / math.sqrt(d)
    ex = torch.exp(e - e.max(2, keepdim=True).values)
    return ex / ex.sum(2, keepdim=True)


def ref_distances(fs, ft):
    """D[b, t, s] = mean over teacher-t positions of (v̂_{s→t} − v_t)²."""
    out = torch.zeros(fs[0].shape[0], len(ft), len(fs), dtype=D64)
    for ti, f_t in enumerate(ft):
        vt = ref_map(f_t)
        for si, f_s in enumerate(fs):
            out[:, ti, si] = ((ref_map(f_s, f_t.shape[-2:]) - vt) ** 2).mean(1)
    return out


def rel_err(a, b, floor=1e-300):
    return float((a - b).abs().max() / b.abs().max().clamp_min(floor))


# ----------------------------------------------------------------------------------------------
def test_spatial_attention_and_distances_match_float64_reference():
    torch.manual_seed(0)
    f = torch.randn(3, 5, 6, 6, dtype=D64)
    assert rel_err(spatial_attention(f), ref_map(f)) < 1e-12
    assert rel_err(spatial_attention(f, (4, 4)), ref_map(f, (4, 4))) < 1e-12  # uneven bins
    assert rel_err(spatial_attention(f, (8, 8)), ref_map(f, (8, 8))) < 1e-12  # student smaller than teacher
    fs = [torch.randn(3, 4, 4, 4, dtype=D64), torch.randn(3, 7, 2, 2, dtype=D64)]
    ft = [torch.randn(3, 6, 8, 8, dtype=D64), torch.randn(3, 10, 4, 4, dtype=D64), torch.randn(3, 12, 4, 4, dtype=D64)]
    assert rel_err(attention_map_distances(fs, ft), ref_distances(fs, ft)) < 1e-12
    ft = [ft[1], ft[0], ft[2]]  # teacher sizes interleaved: 4x4, 8x8, 4x4
    assert rel_err(attention_map_distances(fs, ft), ref_distances(fs, ft)) < 1e-12


def test_afd_matches_independent_float64_computation(plain):
    s, t, x, y = plain
    afd = build("afd", {}, s, t, x, D64)
    inp = step_input(s, t, x, y, S_TAPS, T_TAPS, D64)
    out = afd(inp)
    out.losses["student"]["afd"].backward()
    got_grads = [inp.feats["student"][n].grad.clone() for n in S_TAPS] + [p.grad.clone() for p in afd.parameters()]
    afd.zero_grad()
    fs = [inp.feats["student"][n].detach().requires_grad_() for n in S_TAPS]
    ft = [inp.feats["teacher0"][n].detach() for n in T_TAPS]
    alpha = ref_attention(afd.attention, ft, fs)  # teacher queries, student keys: [B, T, S]
    dist = ref_distances(fs, ft)
    expected = sum((alpha[:, ti] * dist[:, ti]).sum(1).mean() for ti in range(len(ft)))
    assert rel_err(out.losses["student"]["afd"], expected) < 1e-9
    expected.backward()
    want_grads = [f.grad for f in fs] + [p.grad for p in afd.parameters()]
    # (Linear biases before a BatchNorm have a gradient of exactly 0 in theory, ~1e-17 in practice.)
    scale = max(float(w.abs().max()) for w in want_grads)
    assert all(rel_err(g, w, floor=1e-4 * scale) < 1e-9 for g, w in zip(got_grads, want_grads))
    alpha, expected = alpha.detach(), expected.detach()
    assert out.weights["student"] == {"ce": 1.0, "kd": 0.9, "afd": 200.0}
    assert set(out.signals) == {"afd/attention_entropy"}
    ent = -(alpha * alpha.log()).sum(2).mean()
    assert rel_err(out.signals["afd/attention_entropy"], ent) < 1e-9


def test_rtk_matches_independent_float64_computation(plain):
    s, t, x, y = plain
    for scope, renorm in [("batch", False), ("sample", True)]:
        rtk = build("rtk", {"influence_scope": scope, "renormalise": renorm, "k": 1}, s, t, x, D64)
        inp = step_input(s, t, x, y, S_TAPS, T_TAPS, D64)
        out = rtk(inp)
        fs = [inp.feats["student"][n].detach() for n in S_TAPS]
        ft = [inp.feats["teacher0"][n].detach() for n in T_TAPS]
        with torch.no_grad():
            a = ref_attention(rtk.attention, fs, ft)  # student queries, teacher keys: [B, S, T]
            dist = ref_distances(fs, ft).transpose(1, 2)
            n_t = len(ft)
            cols = a.mean(0, keepdim=True) if scope == "batch" else a  # [B', S, T]
            infl = cols.sort(dim=1, descending=True).values[:, :1].mean(1)  # top-1 mean over students
            keep = infl >= 1.0 / n_t
            for r in range(keep.shape[0]):
                if not keep[r].any():
                    keep[r, infl[r].argmax()] = True
            w = a * keep.to(D64).unsqueeze(1)
            if renorm:
                w = w / w.sum(2, keepdim=True)
            expected = sum((w[:, si] * dist[:, si]).sum(1).mean() for si in range(len(fs)))
        assert rel_err(out.losses["student"]["rtk"], expected) < 1e-9
        assert rel_err(out.signals["rtk/kept_fraction"], keep.to(D64).mean()) < 1e-12


def test_rtk_reduces_exactly_to_afd_when_nothing_is_filtered(plain):
    s, t, x, y = plain
    afd = build("afd", {}, s, t, x)
    rtk = build("rtk", {"orientation": "teacher_query", "threshold": 0.0, "renormalise": False}, s, t, x)
    assert set(afd.state_dict()) == set(rtk.state_dict())
    rtk.load_state_dict(afd.state_dict())  # same parameters
    outs, grads = [], []
    for m in (afd, rtk):
        inp = step_input(s, t, x, y, S_TAPS, T_TAPS)
        m.zero_grad()
        o = m(inp)
        term = o.losses["student"]["afd" if m is afd else "rtk"]
        term.backward()
        outs.append(term.detach())
        grads.append([p.grad.clone() for p in m.parameters()] + [inp.feats["student"][n].grad for n in S_TAPS])
        if m is rtk:
            assert float(o.signals["rtk/kept_fraction"]) == 1.0
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_loss_zero_when_student_maps_equal_teacher_maps_and_nonnegative():
    torch.manual_seed(0)
    ft = [torch.randn(4, 6, 8, 8, dtype=D64), torch.randn(4, 10, 4, 4, dtype=D64)]
    fs = [f.clone() for f in ft]
    d = attention_map_distances(fs, ft)
    att = torch.softmax(torch.randn(4, 2, 2, dtype=D64), 2)
    diag = torch.stack([d[:, 0, 0], d[:, 1, 1]])
    assert torch.equal(diag, torch.zeros_like(diag))
    # Maps are invariant to scale and to channel duplication: still the same maps.
    fs2 = [torch.cat([2 * ft[0], 2 * ft[0]], 1), 3 * ft[1]]
    d2 = attention_map_distances(fs2, ft)
    assert float(d2[:, 0, 0].abs().max()) < 1e-12 and float(d2[:, 1, 1].abs().max()) < 1e-12
    # A loss that only attends to matching pairs is zero; any attention gives a non-negative loss.
    eye = torch.eye(2, dtype=D64).expand(4, 2, 2)
    assert float(afd_loss(eye, d)) == 0.0
    assert float(afd_loss(att, d)) >= 0.0
    assert float(rtk_loss(eye, d, torch.tensor([True, True]))) == 0.0
    assert float(rtk_loss(att, d, torch.tensor([True, False]), renormalise=True)) >= 0.0


def test_methods_zero_distillation_on_identical_networks():
    torch.manual_seed(0)
    t, s = Teacher(), Teacher()
    s.load_state_dict(t.state_dict())
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    for name in ("afd", "rtk"):  # one tap each side: the only pair has equal maps
        m = build_method(name, {"student_taps": ["c2"], "teacher_taps": ["c2"]}, context(s, t, x))
        out = m(step_input(s, t, x, y, ["c2"], ["c2"]))
        assert float(out.losses["student"][name]) == 0.0
        assert float(out.losses["student"]["kd"]) < 1e-6
    fit = build_method("fitnet", {"student_taps": ["c2"], "teacher_taps": ["c2"], "regressor_bn": False},
                       context(s, t, x))
    with torch.no_grad():  # identity regressor: the hint is exactly zero
        fit.regressor[0].weight.copy_(torch.eye(10).view(10, 10, 1, 1))
        fit.regressor[0].bias.zero_()
    assert float(fit(step_input(s, t, x, y, ["c2"], ["c2"])).losses["student"]["hint"]) == 0.0


def test_no_gradient_reaches_the_teacher(plain):
    s, t, x, y = plain
    for name, opts in [("afd", {}), ("rtk", {}), ("rtk", {"orientation": "teacher_query"}),
                       ("fitnet", {"student_taps": ["body.a"], "teacher_taps": ["c2"]})]:
        if name == "fitnet":
            m = build_method(name, opts, context(s, t, x))
            inp = step_input(s, t, x, y, ["body.a"], ["c2"])
        else:
            m = build(name, opts, s, t, x)
            inp = step_input(s, t, x, y, S_TAPS, T_TAPS)
        out = m(inp)
        total = sum(v * out.weight("student", k) for k, v in out.losses["student"].items())
        total.backward()
        for f in inp.feats["teacher0"].values():
            assert f.grad is None, name
        assert inp.logits["teacher0"].grad is None
        assert all(p.grad is None for p in t.parameters())
        assert any(f.grad is not None for f in inp.feats["student"].values())


# ----------------------------------------------------------------------------------------------
def test_select_keys_keeps_exactly_at_or_above_threshold():
    infl = torch.tensor([0.25, 0.5, 0.25, 0.0])
    assert select_keys(infl).tolist() == [True, True, True, False]  # default τ = 1/T = 0.25, non-strict
    assert select_keys(infl, "fixed", 0.2500001).tolist() == [False, True, False, False]
    assert select_keys(infl, "fixed", 0.0).tolist() == [True] * 4
    assert select_keys(infl, "relative").tolist() == [True, True, True, False]  # mean = 0.25
    assert select_keys(infl, "relative", 2.0).tolist() == [False, True, False, False]
    assert select_keys(torch.tensor([0.1, 0.4, 0.2, 0.3]), "relative", relative_to="median").tolist() == [False, True,
                                                                                                          True, True]
    assert select_keys(infl, "top_m", top_m=2).tolist() == [True, True, True, False]  # tie at the boundary: both kept
    assert select_keys(torch.tensor([0.1, 0.4, 0.2, 0.3]), "top_m", top_m=2).tolist() == [False, True, False, True]
    # Fallback: nothing passes → the top-1 key only (per row for per-sample influence).
    assert select_keys(infl, "fixed", 0.9).tolist() == [False, True, False, False]
    rows = torch.tensor([[0.1, 0.2, 0.15], [0.5, 0.6, 0.1]])
    assert select_keys(rows, "fixed", 0.55).tolist() == [[False, True, False], [False, True, False]]
    assert select_keys(rows, "fixed", 0.45).tolist() == [[False, True, False], [True, True, False]]
    with pytest.raises(ValueError, match="top_m"):
        select_keys(infl, "top_m", top_m=5)
    assert not select_keys(infl.requires_grad_()).requires_grad


def test_rtk_influence_is_top_k_mean_per_teacher_key():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(5, 4, 3, dtype=D64), 2)  # [B, S, T]
    for k in (1, 2, 4, 9):
        kk = min(k, 4)
        batch = torch.tensor([sorted(a.mean(0)[:, j].tolist(), reverse=True)[:kk] for j in range(3)], dtype=D64).mean(1)
        assert rel_err(rtk_influence(a, k, "batch"), batch) < 1e-12
        per = torch.tensor([[sum(sorted(a[b, :, j].tolist(),
                                        reverse=True)[:kk]) / kk for j in range(3)] for b in range(5)], dtype=D64)
        assert rel_err(rtk_influence(a, k, "sample"), per) < 1e-12
    # Students querying, batch scope: some key always reaches 1/T (column means average to 1/T).
    for k in (1, 2, 4):
        assert bool((rtk_influence(a, k) >= 1 / 3).any())


def test_rtk_loss_renormalisation():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(3, 2, 4, dtype=D64), 2)
    d = torch.rand(3, 2, 4, dtype=D64)
    keep = torch.tensor([True, False, True, False])
    w = a * keep.to(D64)
    w = w / w.sum(2, keepdim=True)
    assert rel_err(rtk_loss(a, d, keep, renormalise=True), (w * d).sum(2).mean(0).sum()) < 1e-12
    assert rel_err(rtk_loss(a, d, keep), (a * keep * d).sum(2).mean(0).sum()) < 1e-12
    # Teacher axis 1 (teachers query): whole rows are dropped; renormalising kept rows changes nothing.
    keep_t = torch.tensor([True, False])
    ref = (a[:, 0] * d[:, 0]).sum(1).mean()
    assert rel_err(rtk_loss(a, d, keep_t, teacher_axis=1), ref) < 1e-12
    assert rel_err(rtk_loss(a, d, keep_t, teacher_axis=1, renormalise=True), ref) < 1e-12


def test_hint_loss_is_mean_squared_error():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4, 4, dtype=D64), torch.randn(2, 3, 4, 4, dtype=D64)
    assert rel_err(hint_loss(s, t), ((s - t) ** 2).sum() / s.numel()) < 1e-12
    with pytest.raises(ValueError, match="shapes differ"):
        hint_loss(s, t[:, :2])


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("teacher_arch, student_arch", [("resnet32x4", "shufflenetv2"), ("vgg13", "mobilenetv2")])
def test_heterogeneous_zoo_pairs_one_step(teacher_arch, student_arch):
    from adaptkd.models import build_model

    torch.manual_seed(0)
    t, s = build_model(teacher_arch, num_classes=10).eval(), build_model(student_arch, num_classes=10)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    ctx = context(s, t, x)
    inp = step_input(s, t, x, y, s.tap_blocks, t.tap_blocks)
    for name in ("afd", "rtk", "fitnet"):
        m = build_method(name, {}, ctx)
        assert set(m.taps()["student"]) <= set(s.tap_blocks) and set(m.taps()["teacher0"]) <= set(t.tap_blocks)
        out = m(inp)
        total = sum(v * out.weight("student", k) for k, v in out.losses["student"].items())
        assert torch.isfinite(total)
        total.backward()
        for pname, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)
    for n in s.tap_blocks:
        assert inp.feats["student"][n].grad is not None


def test_options_are_validated(tmp_path, plain):
    base = {"teachers": [{"arch": "cnn_small", "random_init": True}], "data": {"name": "digits"}}
    for method, needle in [({"name": "afd", "qk_dimm": 8}, "method.qk_dimm"),
                           ({"name": "rtk", "threshold_rule": "top_m"}, "top_m"),
                           ({"name": "rtk", "orientation": "sideways"}, "method.orientation"),
                           ({"name": "rtk", "threshold": -0.1}, "method.threshold"),
                           ({"name": "fitnet", "stage1_epochs": 5}, "stage1_epochs")]:
        raw = {**base, "method": method, "optim": {"epochs": 5}}
        with pytest.raises(ConfigError) as err:
            load_config(raw)
        assert needle in str(err.value)
    with pytest.raises(ConfigError, match="balance.name"):
        load_config({**base, "method": {"name": "fitnet", "stage1_epochs": 2}, "optim": {"epochs": 5},
                     "balance": {"name": "gradient"}})
    load_config({**base, "method": {"name": "fitnet", "stage1_epochs": 2}, "optim": {"epochs": 5}})  # valid
    with pytest.raises(ConfigError, match="exactly one frozen teacher"):
        load_config({**base, "teachers": base["teachers"] * 2, "method": {"name": "afd"}})
    s, t, x, _ = plain
    with pytest.raises(ValueError, match=r"student_taps.*body\.b"):
        build_method("afd", {"student_taps": ["body.c"], "teacher_taps": T_TAPS}, context(s, t, x))
    with pytest.raises(ValueError, match="tap_blocks"):
        build_method("rtk", {}, context(s, t, x))  # plain modules: taps must be named
    with pytest.raises(ValueError, match="top_m"):
        build_method("rtk", {"student_taps": S_TAPS, "teacher_taps": T_TAPS, "threshold_rule": "top_m", "top_m": 4},
                     context(s, t, x))


# ----------------------------------------------------------------------------------------------
# End to end on digits: cnn_small teacher -> cnn_tiny student.
def _run(tmp_path, method, epochs=1, **opts):
    from adaptkd.engine.trainer import Trainer

    cfg = tiny_config(tmp_path / method, method, teachers=[{"arch": "cnn_small", "checkpoint": opts.pop("ckpt")}],
                      **{"optim__epochs": epochs})
    cfg["method"].update(opts)
    cfg["run"]["max_steps_per_epoch"] = 3
    cfg["run"]["log_every"] = 1
    return Trainer(cfg, log=lambda s: None)


@pytest.mark.parametrize("method", ["afd", "rtk"])
def test_attention_methods_end_to_end(tmp_path, teacher_ckpt, method):
    from adaptkd.engine.logger import read_metrics

    tr = _run(tmp_path, method, ckpt=teacher_ckpt)
    teacher = {k: v.clone() for k, v in tr.networks["teacher0"].state_dict().items()}
    before = {k: v.clone() for k, v in tr.method.state_dict().items()}
    summary = tr.fit()
    assert 0 <= summary["final_acc"] <= 100
    assert all(torch.equal(teacher[k], v) for k, v in tr.networks["teacher0"].state_dict().items())
    assert all(p.grad is None for p in tr.networks["teacher0"].parameters())
    after = tr.method.state_dict()
    assert not torch.equal(before["attention.pos_key"], after["attention.pos_key"])  # trained with the student
    recs = read_metrics(tmp_path / method / "metrics.jsonl")
    step = [r for r in recs if r["kind"] == "step"][0]
    assert f"loss/student/{method}" in step and "loss/student/kd" in step and "loss/student/ce" in step
    if method == "afd":
        assert 0.0 <= step["afd/attention_entropy"] <= math.log(3) + 1e-6
    else:
        assert len(step["rtk/influence"]) == 3 and 0 < step["rtk/kept_fraction"] <= 1
        epoch = [r for r in recs if r["kind"] == "epoch"][0]
        assert 0 < epoch["rtk/kept_fraction_epoch"] <= 1 and "rtk/kept/stages.0" in epoch


def test_fitnet_two_stage_end_to_end(tmp_path, teacher_ckpt):
    tr = _run(tmp_path, "fitnet", epochs=2, ckpt=teacher_ckpt, stage1_epochs=1)
    assert tr.method.s_tap == "stages.1" and tr.method.t_tap == "stages.1"  # middle of tap_blocks
    student = tr.networks["student"]
    snap = lambda: {k: v.detach().clone() for k, v in student.named_parameters()}  # noqa: E731
    p0, r0 = snap(), tr.method.regressor[0].weight.detach().clone()
    tr.train_epoch(1)  # stage 1: hint only
    p1 = snap()
    for k in p0:
        changed = not torch.equal(p0[k], p1[k])
        assert changed == k.startswith(("stages.0", "stages.1")), k
    assert not torch.equal(r0, tr.method.regressor[0].weight)
    tr.epoch = 1
    r1 = tr.method.regressor[0].weight.detach().clone()
    tr.train_epoch(2)  # stage 2: CE (+KD) only, every layer trains, the regressor no longer does
    p2 = snap()
    assert all(not torch.equal(p1[k], p2[k]) for k in p1)
    assert torch.equal(r1, tr.method.regressor[0].weight)
