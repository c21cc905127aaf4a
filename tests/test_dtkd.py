"""DTKD: losses against an independent float64 reading of docs/methods/logit.md, the temperatures'
properties, gradients through the temperatures, the guard, the method, composition, a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptkd.balance import weighted_sum
from adaptkd.config import ConfigError, load_config
from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import Trainer
from adaptkd.losses import dkd_loss, dtkd_guarded, dtkd_loss, dtkd_loss_parts, dtkd_temperatures, kd_loss
from adaptkd.methods import MethodContext, StepIn, build_method
from adaptkd.methods.compose import list_terms
from tests.helpers import tiny_config

SIGNALS = [f"{w}_T_{s}" for w in ("student", "teacher") for s in ("mean", "min", "max")] + ["guarded"]


# -- an independent float64 implementation, written from the spec (numpy, not torch) ---------
def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _kl(t_scaled: np.ndarray, s_scaled: np.ndarray) -> np.ndarray:
    """Σ_c p_c (log p_c − log q_c) per row, p = softmax(t_scaled), q = softmax(s_scaled); 0·log0 = 0."""
    lp, lq = _log_softmax(t_scaled), _log_softmax(s_scaled)
    p = np.exp(lp)
    return np.where(p > 0, p * (lp - lq), 0.0).sum(axis=1)


def ref_temperatures(s, t, T, sharp="max"):
    if sharp == "max":
        ms, mt = s.max(axis=1), t.max(axis=1)
    else:
        ms, mt = np.log(np.exp(s).sum(axis=1)), np.log(np.exp(t).sum(axis=1))
    return 2.0 * ms / (mt + ms) * T, 2.0 * mt / (mt + ms) * T


def ref_dtkd(s, t, T, sharp="max"):
    ts, tt = ref_temperatures(s, t, T, sharp)
    d = _kl(t / tt[:, None], s / ts[:, None])
    return float(np.mean(d * tt * ts))


def ref_kd(s, t, T):
    return float(np.mean(_kl(t / T, s / T) * T * T))


def ref_ce(s, y):
    return float(-np.mean(_log_softmax(s)[np.arange(len(y)), y]))


def ref_method_total(s, t, y, epoch, alpha=3.0, beta=1.0, gamma=1.0, T=4.0, warmup=20):
    return min(epoch / warmup, 1.0) * (alpha * ref_dtkd(s, t, T) + beta * ref_kd(s, t, T)) + gamma * ref_ce(s, y)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def logits(seed: int, b: int = 16, c: int = 10, scale: float = 3.0, shift: float = 1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=dtype) * scale + shift


# -- exactness against the reference --------------------------------------------------------
@pytest.mark.parametrize("seed,T", [(0, 4.0), (1, 1.0), (2, 2.5), (3, 8.0)])
def test_matches_reference_float64(seed, T):
    s, t = logits(seed), logits(seed + 100, scale=5.0)
    s[0] -= 30.0  # a mixed-sign sample: reference temperatures of opposite signs, kept by guard=False
    ts, tt = dtkd_temperatures(s, t, T, guard=False)
    rts, rtt = ref_temperatures(s.numpy(), t.numpy(), T)
    assert np.allclose(ts.numpy(), rts, rtol=1e-12, atol=0) and np.allclose(tt.numpy(), rtt, rtol=1e-12, atol=0)
    assert rel(dtkd_loss(s, t, T, guard=False).item(), ref_dtkd(s.numpy(), t.numpy(), T)) <= 1e-9


def test_logsumexp_variant_matches_its_definition():
    s, t = logits(4), logits(5, scale=4.0)
    ts, tt = dtkd_temperatures(s, t, 4.0, sharpness="logsumexp", guard=False)
    rts, rtt = ref_temperatures(s.numpy(), t.numpy(), 4.0, "logsumexp")
    assert np.allclose(ts.numpy(), rts, rtol=1e-12) and np.allclose(tt.numpy(), rtt, rtol=1e-12)
    got = dtkd_loss(s, t, 4.0, sharpness="logsumexp", guard=False).item()
    assert rel(got, ref_dtkd(s.numpy(), t.numpy(), 4.0, "logsumexp")) <= 1e-9
    assert abs(got - dtkd_loss(s, t, 4.0, guard=False).item()) > 1e-6  # a genuinely different variant


def test_reference_can_go_negative_and_guard_prevents_it():
    # Student max +3, teacher max −1: the reference gives T_t = −T (an inverted teacher) and a
    # negative product T_s·T_t, hence a negative loss; the guard flags the sample.
    s = torch.tensor([[3.0, 0.0, -2.0]], dtype=torch.float64)
    t = torch.tensor([[-1.0, -4.0, -2.0]], dtype=torch.float64)
    ts, tt = dtkd_temperatures(s, t, 4.0, guard=False)
    assert ts.item() == pytest.approx(12.0) and tt.item() == pytest.approx(-4.0)
    raw = dtkd_loss(s, t, 4.0, guard=False)
    assert raw.item() < 0 and rel(raw.item(), ref_dtkd(s.numpy(), t.numpy(), 4.0)) <= 1e-9
    assert dtkd_guarded(s, t).tolist() == [True]
    guarded = dtkd_loss(s, t, 4.0).item()
    assert guarded >= 0 and guarded == pytest.approx(kd_loss(s, t, 4.0).item(), rel=1e-12)


# -- properties of the temperatures ---------------------------------------------------------
@pytest.mark.parametrize("guard", [False, True])
def test_temperatures_sum_to_2T(guard):
    s, t = logits(6), logits(7, scale=6.0)
    ts, tt = dtkd_temperatures(s, t, 4.0, guard=guard)
    assert torch.allclose(ts + tt, torch.full_like(ts, 8.0), rtol=1e-12, atol=1e-12)


def test_equal_maxima_give_T():
    s = logits(8)
    t = logits(9, scale=2.0)
    t = t - t.amax(1, keepdim=True) + s.amax(1, keepdim=True)  # same per-sample maximum
    ts, tt = dtkd_temperatures(s, t, 3.0, guard=False)
    assert torch.allclose(ts, torch.full_like(ts, 3.0), rtol=1e-12) and torch.allclose(tt, torch.full_like(tt, 3.0),
                                                                                       rtol=1e-12)


def test_larger_max_gets_larger_temperature():
    s, t = logits(10, shift=5.0), logits(11, shift=5.0, scale=4.0)
    assert bool((s.amax(1) > 0).all() and (t.amax(1) > 0).all())
    ts, tt = dtkd_temperatures(s, t, 4.0)
    bigger_teacher = t.amax(1) > s.amax(1)
    assert bool(((tt > ts) == bigger_teacher).all())
    assert bool(((ts > 0) & (ts < 8) & (tt > 0) & (tt < 8)).all())


# -- gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("guard", [False, True])
def test_gradcheck_through_temperatures(guard):
    s = logits(12, b=5, c=6).requires_grad_(True)
    t = logits(13, b=5, c=6, scale=4.0).requires_grad_(True)
    if guard:
        with torch.no_grad():
            s[0] -= 40.0
            t[0] -= 40.0  # an all-negative (guarded) sample in the batch
    assert torch.autograd.gradcheck(lambda a, b: dtkd_loss(a, b, 4.0, guard=guard), (s, t), eps=1e-6, atol=1e-7)


def test_detached_temperatures_change_the_gradient():
    s = logits(14).requires_grad_(True)
    t = logits(15, scale=4.0)
    (g_full,) = torch.autograd.grad(dtkd_loss(s, t, 4.0), s)
    ts, tt = dtkd_temperatures(s, t, 4.0)
    ts, tt = ts.detach(), tt.detach()
    lp_s = torch.log_softmax(s / ts[:, None], 1)
    lp_t = torch.log_softmax(t / tt[:, None], 1)
    held = ((lp_t.exp() * (lp_t - lp_s)).sum(1) * ts * tt).mean()
    assert held.item() == pytest.approx(dtkd_loss(s, t, 4.0).item(), rel=1e-12)  # same value...
    (g_held,) = torch.autograd.grad(held, s)
    assert (g_full - g_held).norm() > 1e-3 * g_full.norm()  # ...different gradient


# -- the guard and float32 robustness ------------------------------------------------------
def test_guard_on_all_negative_logits():
    s = -torch.rand(8, 10, dtype=torch.float64) * 5 - 0.1
    t = -torch.rand(8, 10, dtype=torch.float64) * 5 - 0.1
    ts, tt = dtkd_temperatures(s, t, 4.0)
    assert torch.equal(ts, torch.full_like(ts, 4.0)) and torch.equal(tt, torch.full_like(tt, 4.0))
    parts = dtkd_loss_parts(s.requires_grad_(True), t, 4.0)
    assert bool(parts.guarded.all()) and torch.isfinite(parts.loss) and parts.loss.item() >= 0
    assert parts.loss.item() == pytest.approx(kd_loss(s, t, 4.0).item(), rel=1e-12)  # a guarded sample is its KD term
    (g,) = torch.autograd.grad(parts.loss, s)
    assert torch.isfinite(g).all()
    # Unguarded, the same inputs follow the reference rule (ratios of negative maxima).
    assert not torch.allclose(dtkd_temperatures(s, t, 4.0, guard=False)[0], ts)


def test_zero_sum_of_maxima_is_guarded_and_finite():
    s = torch.tensor([[2.0, -1.0], [0.0, -3.0]])
    t = torch.tensor([[-2.0, -5.0], [0.0, -1.0]])
    s.requires_grad_(True)
    loss = dtkd_loss(s, t, 4.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert dtkd_guarded(s, t).tolist() == [True, True]


@pytest.mark.parametrize("guard", [True, False])
def test_float32_finite_at_extreme_logits(guard):
    g = torch.Generator().manual_seed(16)
    s = (torch.randn(32, 100, generator=g) * 1e4).requires_grad_(True)
    t = torch.randn(32, 100, generator=g) * 1e4
    t[:4] = t[:4].abs()  # a few very confident teachers
    loss = dtkd_loss(s, t, 4.0, guard=guard)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    if guard:  # ±1e4 all-negative and mixed rows too
        s2 = torch.full((2, 5), -1e4)
        t2 = torch.tensor([[1e4] * 5, [-1e4] * 5])
        assert torch.isfinite(dtkd_loss(s2, t2, 4.0))


def test_bad_arguments():
    s, t = logits(17), logits(18)
    with pytest.raises(ValueError, match="sharpness"):
        dtkd_loss(s, t, sharpness="abs")
    with pytest.raises(ValueError, match="temperature"):
        dtkd_temperatures(s, t, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        dtkd_loss(s, t[:, :5])


# -- the method and composition -------------------------------------------------------------
def _ctx() -> MethodContext:
    return MethodContext(networks={}, learners=["student"], frozen=["teacher0"], arches={}, num_classes=10,
                         epochs=40, steps_per_epoch=1, sample_input=torch.zeros(1))


def _step(s, t, y, epoch):
    return StepIn(x=s, y=y, epoch=epoch, step=0, logits={"student": s, "teacher0": t})


@pytest.mark.parametrize("epoch", [1, 7, 19, 20, 21, 240])
def test_method_total_and_warmup(epoch):
    s, t = logits(19), logits(20, scale=5.0)
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(0))
    out = build_method("dtkd", {}, _ctx())(_step(s, t, y, epoch))
    w = out.weights["student"]
    f = min(epoch / 20, 1.0)
    assert w == {"dtkd": 3.0 * f, "kd": 1.0 * f, "ce": 1.0}
    total = weighted_sum(out.losses["student"], w).item()
    assert rel(total, ref_method_total(s.numpy(), t.numpy(), y.numpy(), epoch)) <= 1e-9
    assert set(out.signals) == {f"dtkd/{k}" for k in SIGNALS}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out.signals.values())


def test_method_options_reach_the_loss():
    s, t = logits(21), logits(22, scale=5.0)
    y = torch.zeros(16, dtype=torch.long)
    opts = {"temperature": 2.0, "alpha": 1.0, "beta": 0.5, "ce_weight": 0.3, "warmup_epochs": 0,
            "sharpness": "logsumexp", "guard": False}
    out = build_method("dtkd", opts, _ctx())(_step(s, t, y, 1))
    assert out.weights["student"] == {"dtkd": 1.0, "kd": 0.5, "ce": 0.3}
    assert rel(out.losses["student"]["dtkd"].item(), ref_dtkd(s.numpy(), t.numpy(), 2.0, "logsumexp")) <= 1e-9
    assert rel(out.losses["student"]["kd"].item(), ref_kd(s.numpy(), t.numpy(), 2.0)) <= 1e-9


@pytest.mark.parametrize("epoch", [1, 10, 20, 33])
def test_compose_dtkd_kd_ce_equals_dtkd_method_exactly(epoch):
    s, t = logits(23, dtype=torch.float32), logits(24, scale=5.0, dtype=torch.float32)
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    terms = [{"loss": "dtkd", "weight": 3.0, "warmup_epochs": 20}, {"loss": "kd", "weight": 1.0, "warmup_epochs": 20},
             {"loss": "ce", "weight": 1.0}]
    a = build_method("dtkd", {}, _ctx())(_step(s, t, y, epoch))
    b = build_method("compose", {"terms": terms}, _ctx())(_step(s, t, y, epoch))
    assert torch.equal(weighted_sum(a.losses["student"], a.weights["student"]),
                       weighted_sum(b.losses["student"], b.weights["student"]))
    assert a.signals.keys() == b.signals.keys()
    assert all(torch.equal(a.signals[k], b.signals[k]) for k in a.signals)


def test_compose_dtkd_plus_dkd():
    s, t = logits(25), logits(26, scale=5.0)
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    terms = [{"loss": "dtkd", "weight": 3.0, "warmup_epochs": 20},
             {"loss": "dkd", "weight": 1.0, "beta": 8, "warmup_epochs": 20},
             {"loss": "ce", "weight": 1.0}, {"loss": "kd", "name": "kd_t2", "temperature": 2.0, "weight": 0.5}]
    m = build_method("compose", {"terms": terms}, _ctx())
    assert m.task_terms == frozenset({"ce"})
    out = m(_step(s, t, y, 5))
    L, w = out.losses["student"], out.weights["student"]
    assert w == {"dtkd": 3.0 * 0.25, "dkd": 1.0 * 0.25, "ce": 1.0, "kd_t2": 0.5}
    assert torch.equal(L["dkd"], dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0))
    assert torch.equal(L["kd_t2"], kd_loss(s, t, 2.0))
    assert rel(L["dtkd"].item(), ref_dtkd(s.numpy(), t.numpy(), 4.0)) <= 1e-9


def test_term_registry_and_config_errors(tmp_path):
    assert {"ce", "kd", "dkd", "dtkd"} <= set(list_terms())
    teachers = [{"arch": "cnn_small", "random_init": True}]

    def load(terms, teachers=teachers):
        cfg = tiny_config(tmp_path, "compose", teachers=teachers)
        cfg["method"]["terms"] = terms
        return load_config(cfg)

    with pytest.raises(ConfigError, match=r"method\.terms\.1\.loss.*unknown loss 'dtdk'.*closest: dtkd"):
        load([{"loss": "ce"}, {"loss": "dtdk"}])
    with pytest.raises(ConfigError, match=r"method\.terms\.0\.sharpness"):
        load([{"loss": "dtkd", "sharpness": "abs"}])
    with pytest.raises(ConfigError, match=r"method\.terms\.0\.beta.*unknown key"):
        load([{"loss": "kd", "beta": 8}])
    with pytest.raises(ConfigError, match=r"method\.terms\.1\.name.*used twice"):
        load([{"loss": "kd"}, {"loss": "kd", "temperature": 2}])
    with pytest.raises(ConfigError, match=r"method\.terms\.0\.weight"):
        load([{"loss": "kd", "weight": -1}])
    with pytest.raises(ConfigError, match=r"method\.terms"):
        load([])
    with pytest.raises(ConfigError, match=r"method\.terms\.0\.loss`: required"):
        load([{"weight": 1.0}])
    with pytest.raises(ConfigError, match=r"method\.terms\.0\.name"):
        load([{"loss": "kd", "name": "a/b"}])
    with pytest.raises(ConfigError, match=r"`teachers`.*dtkd need a teacher"):
        load([{"loss": "dtkd"}, {"loss": "ce"}], teachers=[])
    assert load([{"loss": "ce", "label_smoothing": 0.1}], teachers=[]).method.name == "compose"
    with pytest.raises(ConfigError, match=r"method\.sharpness"):
        cfg = tiny_config(tmp_path, "dtkd", teachers=teachers)
        cfg["method"]["sharpness"] = "abs"
        load_config(cfg)


# -- end to end -------------------------------------------------------------------------------
def test_tiny_run_logs_temperature_signals(tmp_path, teacher_ckpt):
    cfg = tiny_config(tmp_path / "dtkd", "dtkd", teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}])
    cfg["optim"]["epochs"] = 1
    s = Trainer(cfg).fit()
    assert 0 <= s["final_acc"] <= 100
    recs = read_metrics(tmp_path / "dtkd" / "metrics.jsonl")
    steps = [r for r in recs if r["kind"] == "step"]
    assert steps and all(f"dtkd/{k}" in r for r in steps for k in SIGNALS)
    r = steps[0]
    assert r["dtkd/student_T_min"] <= r["dtkd/student_T_mean"] <= r["dtkd/student_T_max"]
    assert r["dtkd/student_T_mean"] + r["dtkd/teacher_T_mean"] == pytest.approx(8.0, rel=1e-5)
    assert r["weight/student/dtkd"] == pytest.approx(3.0 / 20) and r["weight/student/kd"] == pytest.approx(1.0 / 20)
    epoch = [r for r in recs if r["kind"] == "epoch"][0]
    assert all(f"train/dtkd/{k}" in epoch for k in SIGNALS) and epoch["train/dtkd/guarded"] >= 0


def test_tiny_compose_run(tmp_path, teacher_ckpt):
    cfg = tiny_config(tmp_path / "c", "compose", teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}])
    cfg["method"]["terms"] = [{"loss": "dtkd", "weight": 3.0, "warmup_epochs": 20},
                              {"loss": "dkd", "weight": 1.0, "beta": 8, "warmup_epochs": 20}, {"loss": "ce"}]
    cfg["optim"]["epochs"] = 1
    Trainer(cfg).fit()
    steps = [r for r in read_metrics(tmp_path / "c" / "metrics.jsonl") if r["kind"] == "step"]
    assert {"loss/student/dtkd", "loss/student/dkd", "loss/student/ce", "dtkd/guarded"} <= set(steps[0])


def test_recipes_carry_the_dtkd_table():
    """configs/cifar100/dtkd*/ are up to date with the per-pair table in configs/generate.py (spec §3)."""
    import importlib.util
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    spec = importlib.util.spec_from_file_location("adaptkd_generate", root / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.DTKD["res32x4_res8x4"] == (0.05, 3.0, 1.0) and gen.DTKD["res50_mv2"] == (0.01, 3.0, 2.0)
    tables = gen.method_tables()
    for family in ("dtkd", "dtkd_dkd"):
        files = sorted((root / "cifar100" / family).glob("*.yaml"))
        assert [f.stem for f in files] == sorted(tables[family])
        for f in files:
            cfg = yaml.safe_load(f.read_text())
            assert cfg["method"] == tables[family][f.stem] and cfg["optim"]["lr"] == gen.DTKD[f.stem][0]
            assert load_config(cfg, check=False).method.name == ("dtkd" if family == "dtkd" else "compose")
