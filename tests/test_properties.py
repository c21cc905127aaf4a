"""Property tests (hypothesis) for every loss function in ``adaptkd.losses`` and every balancer
controller in ``adaptkd.balance``.

Properties, for inputs across ±1e4 in float32 and float64, batch size 1 upwards, two classes
upwards, temperatures from 1e-3 to 100:

- finite output, and finite gradient with respect to every input that carries one;
- the value range each function documents (probabilities, distances, weights, temperatures);
- batch permutation: per-sample outputs are permuted the same way, batch means are unchanged.

Examples are derandomised (the same on every run; CI is reproducible); run with
``HYPOTHESIS_PROFILE=explore`` for a fresh random search with more examples.
``test_every_public_loss_is_covered`` fails when a loss is added to ``adaptkd.losses`` without a
property here.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import adaptkd.losses as L
from adaptkd import balance as B

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("explore", max_examples=300, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = [torch.float32, torch.float64]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread (a second one only waits for the first on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
TEMPS = st.one_of(st.sampled_from([1e-3, 1.0, 4.0, 100.0]), st.floats(1e-3, 100.0))
# values in [-1e4, 1e4], representable in float32, with the extremes and 0 drawn often
VALUE = st.one_of(st.floats(-1e4, 1e4, allow_nan=False, width=32), st.sampled_from([-1e4, 1e4, 0.0, 1e-3, -1e-3]))
POSITIVE = st.one_of(st.floats(0.0, 1e4, width=32), st.sampled_from([0.0, 1e4, 1e-30]))


def arrays(shape) -> st.SearchStrategy:
    return hnp.arrays(np.float64, shape, elements=VALUE)


@st.composite
def logit_batch(draw, max_b: int = 6, max_c: int = 8):
    """(student [B, C], teacher [B, C], target [B], permutation of the batch)."""
    b, c = draw(st.integers(1, max_b)), draw(st.integers(2, max_c))
    s, t = draw(arrays((b, c))), draw(arrays((b, c)))
    y = np.array(draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
    perm = np.array(draw(st.permutations(range(b))))
    return s, t, y, perm


def tensor(a, dtype, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=dtype, requires_grad=grad)


def finite(*xs) -> None:
    for x in xs:
        assert torch.isfinite(x).all(), x


def grads_finite(out: torch.Tensor, *inputs: torch.Tensor) -> None:
    """Backward from ``out.sum()``; every input that the output reaches gets a finite gradient."""
    with_grad = [x for x in inputs if x.requires_grad]
    gs = torch.autograd.grad(out.sum(), with_grad, allow_unused=True, retain_graph=True)
    assert any(g is not None for g in gs), "no gradient reached any input"
    for g in gs:
        if g is not None:
            assert torch.isfinite(g).all(), g


def same(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-9) -> None:
    """Equal up to float64 summation-order rounding (relative to the magnitude involved)."""
    a, b = a.detach().double(), b.detach().double()
    scale = max(1.0, float(a.abs().max()), float(b.abs().max()))
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


PROPERTIES: list[str] = []  # names of the properties, for the count in docs/reliability.md


def prop(*names: str):
    PROPERTIES.extend(names)
    return lambda f: f


# ----------------------------------------------------------------------------------------------
# logit losses


def _logit_losses(s, t, y, T):
    """{name: (scalar batch-mean loss)} of every logit loss with a gradient."""
    return {
        "kd_loss": L.kd_loss(s, t, T),
        "dkd_loss": L.dkd_loss(s, t, y, 1.0, 8.0, T),
        "dtkd_loss(max)": L.dtkd_loss(s, t, T, sharpness="max"),
        "dtkd_loss(logsumexp)": L.dtkd_loss(s, t, T, sharpness="logsumexp"),
        "dtkd_loss_parts": L.dtkd_loss_parts(s, t, T).loss,
        "online_kl_loss": L.online_kl_loss(s, t, T),
    }


@prop("logit losses: finite value and gradient", "logit losses: batch permutation invariance")
@pytest.mark.parametrize("dtype", DTYPES)
@given(batch=logit_batch(), T=TEMPS)
@example(batch=(np.array([[1e4, -1e4]]), np.array([[-1e4, 1e4]]), np.array([0]), np.array([0])), T=1e-3)
@example(batch=(np.array([[0.0, 0.0]]), np.array([[1e4, 1e4]]), np.array([1]), np.array([0])), T=100.0)
@example(batch=(np.array([[-1e4, -1e4], [1e4, -1e4]]), np.array([[-1e4, -1e4], [-1e4, 1e4]]),
                np.array([1, 0]), np.array([1, 0])), T=4.0)
def test_logit_losses(dtype, batch, T):
    s_np, t_np, y_np, perm = batch
    s, t, y = tensor(s_np, dtype, True), tensor(t_np, dtype, True), torch.tensor(y_np)
    losses = _logit_losses(s, t, y, T)
    for name, v in losses.items():
        assert v.dim() == 0 and v.dtype == dtype, name
        finite(v)
        grads_finite(v, s, t)
    if dtype == torch.float64:
        p = torch.tensor(perm)
        permuted = _logit_losses(s.detach()[p], t.detach()[p], y[p], T)
        for name in losses:
            same(losses[name], permuted[name])


@prop("KD/DKD/online KL are non-negative", "DKD with two classes: NCKD is 0")
@pytest.mark.parametrize("dtype", DTYPES)
@given(batch=logit_batch(), T=TEMPS)
def test_divergences_are_non_negative_and_dkd_two_class(dtype, batch, T):
    s_np, t_np, y_np, _ = batch
    s, t, y = tensor(s_np, dtype), tensor(t_np, dtype), torch.tensor(y_np)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for v in (L.kd_loss(s, t, T), L.dkd_loss(s, t, y, 1.0, 8.0, T), L.online_kl_loss(s, t, T)):
        assert v >= -tol * max(1.0, T * T) * (1 + float(s.abs().max() + t.abs().max()) / max(T, 1e-3))
    if s.shape[1] == 2:  # the non-target distribution has one class: NCKD = 0, DKD = α·TCKD
        only_nckd = L.dkd_loss(s, t, y, alpha=0.0, beta=8.0, temperature=T)
        assert only_nckd == 0
        sg = s.clone().requires_grad_(True)
        grads_finite(L.dkd_loss(sg, t, y, alpha=1.0, beta=8.0, temperature=T), sg)


@prop("DTKD temperatures: finite, positive, sum 2T, permutation", "DTKD sharpness/guard: permutation")
@pytest.mark.parametrize("dtype", DTYPES)
@given(batch=logit_batch(), T=TEMPS)
def test_dtkd_temperatures(dtype, batch, T):
    s_np, t_np, _, perm = batch
    s, t = tensor(s_np, dtype, True), tensor(t_np, dtype, True)
    for sharp in ("max", "logsumexp"):
        ts, tt = L.dtkd_temperatures(s, t, T, sharpness=sharp)
        finite(ts, tt)
        assert (ts > 0).all() and (tt > 0).all()
        rel = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(ts + tt, torch.full_like(ts, 2 * T), rtol=rel, atol=rel * T)
        grads_finite(ts + 2 * tt, s, t)
        p = torch.tensor(perm)
        ts_p, tt_p = L.dtkd_temperatures(s.detach()[p], t.detach()[p], T, sharpness=sharp)
        same(ts.detach()[p], ts_p, 1e-6 if dtype == torch.float32 else 1e-12)
        same(tt.detach()[p], tt_p, 1e-6 if dtype == torch.float32 else 1e-12)
        m = L.dtkd_sharpness(s.detach(), sharp)
        finite(m)
        assert torch.equal(L.dtkd_sharpness(s.detach()[p], sharp), m[p])
        g = L.dtkd_guarded(s.detach(), t.detach(), sharpness=sharp)
        assert g.dtype == torch.bool and torch.equal(L.dtkd_guarded(s.detach()[p], t.detach()[p], sharpness=sharp),
                                                     g[p])
        parts = L.dtkd_loss_parts(s, t, T, sharpness=sharp)
        assert torch.equal(parts.guarded, g)
        assert torch.equal(parts.student_T, ts) and torch.equal(parts.teacher_T, tt)


@pytest.mark.xfail(strict=True, reason="DTKD in float32: a tiny positive sharpness (max logit 1e-30) is not guarded; "
                   "its temperature underflows and the gradient through it overflows to NaN; see docs/reliability.md")
@pytest.mark.parametrize("sharpness, teacher", [("max", [1e-30, -17.0]), ("logsumexp", [8.57319075e-23, -17.0])])
def test_dtkd_tiny_positive_sharpness_float32(sharpness, teacher):
    s = torch.tensor([[1.0, 0.0]], requires_grad=True)
    t = torch.tensor([teacher], requires_grad=True)
    loss = L.dtkd_loss(s, t, 4.0, sharpness=sharpness)
    finite(loss)
    grads_finite(loss, s, t)


PROPERTIES.append("DTKD: tiny positive sharpness in float32 (known NaN gradient, strict xfail)")


@prop("SwitOKD statistics: finite, in range, permutation invariant")
@pytest.mark.parametrize("dtype", DTYPES)
@given(batch=logit_batch(), T=TEMPS)
def test_switokd_statistics(dtype, batch, T):
    s_np, t_np, y_np, perm = batch
    s, t, y = tensor(s_np, dtype), tensor(t_np, dtype), torch.tensor(y_np)
    d = L.switokd_decision(t, s, y, T)
    for v in (d.gap, d.teacher_distance, d.student_distance, d.epsilon, d.threshold):
        assert v.dim() == 0
        finite(v)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert -tol <= d.gap <= 2 + tol
    assert -tol <= d.teacher_distance <= 2 + tol and -tol <= d.student_distance <= 2 + tol
    assert 0 < d.epsilon <= 1 + tol
    assert d.expert.dtype == torch.bool and d.expert.dim() == 0
    assert bool(d.expert) == bool((d.gap > d.threshold) & (d.teacher_distance < d.student_distance))
    assert torch.equal(L.label_distance(s, y, T), d.student_distance)
    assert torch.equal(L.distillation_gap(t, s, T), d.gap)
    if dtype == torch.float64:
        p = torch.tensor(perm)
        dp = L.switokd_decision(t[p], s[p], y[p], T)
        for a, b in zip((d.gap, d.teacher_distance, d.student_distance, d.epsilon, d.threshold),
                        (dp.gap, dp.teacher_distance, dp.student_distance, dp.epsilon, dp.threshold)):
            same(a, b)
        assert bool(dp.expert) == bool(d.expert) or abs(float(d.gap - d.threshold)) < 1e-9


@prop("SwitOKD threshold: finite for every pair of distances in [0, 2]")
@pytest.mark.parametrize("dtype", DTYPES)
@given(t=st.one_of(st.floats(0, 2), st.just(0.0)), s=st.one_of(st.floats(0, 2), st.just(0.0)))
def test_switokd_threshold(dtype, t, s):
    eps, delta = L.switokd_threshold(torch.tensor(t, dtype=dtype), torch.tensor(s, dtype=dtype))
    finite(eps, delta)
    assert 0 < eps <= 1


@prop("SwitOKD mode: expert iff G > delta and t < s; a given eps only moves delta = s - eps*t")
@pytest.mark.parametrize("dtype", DTYPES)
@given(g=st.floats(0, 2), t=st.floats(0, 2), s=st.floats(0, 2), e=st.floats(0.01, 1))
def test_switokd_mode(dtype, g, t, s, e):
    g_, t_, s_ = (torch.tensor(v, dtype=dtype) for v in (g, t, s))
    eps, delta, expert = L.switokd_mode(g_, t_, s_)
    finite(eps, delta)
    assert bool(expert) == bool((g_ > delta) & (t_ < s_))
    assert torch.equal(torch.stack([eps, delta]), torch.stack(L.switokd_threshold(t_, s_)))
    eps2, delta2, expert2 = L.switokd_mode(g_, t_, s_, torch.tensor(e, dtype=dtype))
    assert torch.equal(delta2, s_ - torch.tensor(e, dtype=dtype) * t_) and float(eps2) == pytest.approx(e)
    assert bool(expert2) == bool((g_ > delta2) & (t_ < s_))


# ----------------------------------------------------------------------------------------------
# feature losses


@st.composite
def feature_batch(draw):
    """Student features [B, Cs, Hs, Hs] and teacher features [B, Ct, Ht, Ht] (Hs ≥ Ht), and a permutation."""
    b = draw(st.integers(1, 4))
    ht = draw(st.integers(1, 3))
    hs = ht * draw(st.integers(1, 2))
    cs, ct = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    fs, ft = draw(arrays((b, cs, hs, hs))), draw(arrays((b, ct, ht, ht)))
    perm = np.array(draw(st.permutations(range(b))))
    return fs, ft, perm


@prop("spatial attention: finite, unit or zero rows, gradient, permutation",
      "attention-map distances: finite, ≥ 0, gradient, permutation",
      "AFD/RTK/hint losses: finite, gradient, permutation invariant",
      "RTK influence and key selection: finite, a key kept per row, permutation")
@pytest.mark.parametrize("dtype", DTYPES)
@given(batch=feature_batch(), k=st.integers(1, 3), rule=st.sampled_from(["fixed", "relative", "top_m"]),
       logits=st.data())
def test_feature_losses(dtype, batch, k, rule, logits):
    fs_np, ft_np, perm = batch
    fs, ft = tensor(fs_np, dtype, True), tensor(ft_np, dtype, True)
    p = torch.tensor(perm)
    rel = 1e-5 if dtype == torch.float32 else 1e-10

    v = L.spatial_attention(fs, size=tuple(ft.shape[-2:]))
    finite(v)
    norms = v.detach().norm(dim=1)  # x / max(‖x‖, eps): unit rows, shorter only below eps
    assert (norms <= 1 + 1e-3).all(), norms
    big = fs.detach().double().pow(2).mean(1).flatten(1).norm(dim=1) > 1e-6
    assert ((norms[big] - 1).abs() < 1e-3).all(), norms
    grads_finite(v * torch.linspace(0.5, 1.5, v.shape[1], dtype=dtype), fs)
    same(L.spatial_attention(fs.detach()[p], size=tuple(ft.shape[-2:])), v.detach()[p], rel)

    feats_s, feats_t = [fs, fs * 0.5], [ft]
    dist = L.attention_map_distances(feats_s, feats_t)  # [B, T, S]
    assert dist.shape == (fs.shape[0], 1, 2)
    finite(dist)
    assert (dist >= 0).all()
    grads_finite(dist, fs, ft)
    same(L.attention_map_distances([x.detach()[p] for x in feats_s], [x.detach()[p] for x in feats_t]),
         dist.detach()[p], rel)

    raw = logits.draw(arrays(tuple(dist.shape)))
    att = torch.softmax(tensor(raw, dtype, True), dim=-1)  # [B, T, S], softmax over students
    afd = L.afd_loss(att, dist)
    finite(afd)
    grads_finite(afd, fs, ft)

    att_st = att.transpose(1, 2)  # [B, S, T]
    infl_b = L.rtk_influence(att_st.detach(), k=k, scope="batch")
    infl_s = L.rtk_influence(att_st.detach(), k=k, scope="sample")
    finite(infl_b, infl_s)
    same(L.rtk_influence(att_st.detach()[p], k=k, scope="batch"), infl_b, rel)
    same(L.rtk_influence(att_st.detach()[p], k=k, scope="sample"), infl_s[p], rel)
    keep_s = L.select_keys(infl_s, rule=rule, top_m=1)
    assert keep_s.any(-1).all()
    assert torch.equal(L.select_keys(infl_s[p], rule=rule, top_m=1), keep_s[p])
    keep_b = L.select_keys(infl_b, rule=rule, top_m=1)
    for renorm in (False, True):
        r = L.rtk_loss(att, dist, keep_b, teacher_axis=1, renormalise=renorm)
        finite(r)
        grads_finite(r, fs, ft)
        rp = L.rtk_loss(att.detach()[p], dist.detach()[p], keep_b, teacher_axis=1, renormalise=renorm)
        same(r, rp, rel)
        r2 = L.rtk_loss(att, dist, keep_s, teacher_axis=1, renormalise=renorm)
        finite(r2)
        same(L.rtk_loss(att.detach()[p], dist.detach()[p], keep_s[p], teacher_axis=1, renormalise=renorm), r2, rel)

    proj = fs[:, :1, : ft.shape[2], : ft.shape[3]]
    h = L.hint_loss(proj, ft[:, :1])
    finite(h)
    grads_finite(h, fs, ft)
    same(L.hint_loss(proj.detach()[p], ft.detach()[p][:, :1]), h, rel)


# ----------------------------------------------------------------------------------------------
# UNIC: token loss, teacher dropping, standardisation


@st.composite
def token_batch(draw, min_b: int = 1):
    b, n, d = draw(st.integers(min_b, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    s, t = draw(arrays((b, 1 + n, d))), draw(arrays((b, 1 + n, d)))
    perm = np.array(draw(st.permutations(range(b))))
    return s, t, perm


@prop("UNIC token loss: finite per image, gradient, permutation")
@pytest.mark.parametrize("dtype", DTYPES)
@given(batch=token_batch())
@example(batch=(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), np.array([0])))
@example(batch=(np.zeros((2, 2, 3)), np.full((2, 2, 3), 1e4), np.array([1, 0])))
def test_unic_token_loss(dtype, batch):
    s_np, t_np, perm = batch
    s, t = tensor(s_np, dtype, True), tensor(t_np, dtype, True)
    loss = L.unic_token_loss(s, t)
    assert loss.shape == (s.shape[0],)
    finite(loss)
    assert (loss >= -1e-6).all()
    grads_finite(loss, s, t)
    p = torch.tensor(perm)
    same(L.unic_token_loss(s.detach()[p], t.detach()[p]), loss.detach()[p], 1e-6 if dtype == torch.float32 else 1e-12)


@prop("teacher-drop weights: finite, ≥ 0, sum 1, protected teacher kept, permutation")
@pytest.mark.parametrize("dtype", DTYPES)
@given(k=st.integers(1, 4), b=st.integers(1, 5), p=st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)),
       normalize=st.sampled_from(["global", "per_image"]), data=st.data())
def test_teacher_drop_weights(dtype, k, b, p, normalize, data):
    losses = tensor(data.draw(hnp.arrays(np.float64, (k, b), elements=POSITIVE)), dtype)
    draws = tensor(data.draw(hnp.arrays(np.float64, (k, b), elements=st.floats(0, 1, exclude_max=True))), dtype)
    perm = torch.tensor(data.draw(st.permutations(range(b))))
    w = L.teacher_drop_weights(losses, draws, p, normalize)
    assert w.shape == (k, b) and not w.requires_grad
    finite(w)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(), torch.ones((), dtype=dtype), rtol=1e-5, atol=1e-5)
    best = losses.argmax(0)
    assert (w[best, torch.arange(b)] > 0).all(), "each image keeps its highest-loss teacher"
    torch.testing.assert_close(L.teacher_drop_weights(losses[:, perm], draws[:, perm], p, normalize), w[:, perm])


@prop("standardise: finite output and state, gradient, permutation (B ≥ 2)")
@pytest.mark.parametrize("dtype", DTYPES)
@given(batch=token_batch(min_b=2), m=st.one_of(st.sampled_from([0.0, 1.0, 0.001]), st.floats(0, 1)))
def test_standardize(dtype, batch, m):
    x_np, _, perm = batch
    for x in (tensor(x_np[:, 0], dtype, True), tensor(x_np, dtype, True)):  # class tokens [B, D], patches [B, N, D]
        shape = (1,) * (x.dim() - 1) + (x.shape[-1],)
        mean, std = torch.zeros(shape, dtype=dtype), torch.ones(shape, dtype=dtype)
        y, nm, ns = L.standardize(x, mean, std, m)
        finite(y, nm, ns)
        assert (ns > 0).all()
        grads_finite(y + nm + ns, x)
        p = torch.tensor(perm)
        yp, nmp, nsp = L.standardize(x.detach()[p], mean, std, m)
        rel = 1e-5 if dtype == torch.float32 else 1e-10
        same(yp, y.detach()[p], rel)
        same(nmp, nm, rel)
        same(nsp, ns, rel)


def test_standardize_batch_of_one_class_token(tmp_path):
    """One class token has no unbiased std: the pure function returns NaN there, as the reference
    (torch.std); the unic method keeps its running state for such a batch, so a last batch of one
    image leaves its statistics finite."""
    import warnings

    from adaptkd.engine.trainer import Trainer
    from adaptkd.models import build_model
    from tests.helpers import method_config

    x = torch.randn(1, 4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "degrees of freedom is <= 0"
        y, nm, ns = L.standardize(x, torch.zeros(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64), 0.5)
        finite(y, nm)
        assert torch.isnan(ns).all()
        if "unic" in __import__("adaptkd.methods", fromlist=["x"]).list_methods():
            teacher = tmp_path / "t.pt"
            torch.save(build_model("cnn_small", 10, in_channels=1).state_dict(), teacher)
            cfg = method_config("unic", tmp_path / "r", str(teacher), epochs=1, steps=3)
            cfg["data"].update({"train_size": 65, "batch_size": 32})  # batches of 32, 32, 1
            tr = Trainer(cfg, log=lambda s: None)
            tr.fit()
            stats = {k: v for k, v in tr.method.state_dict().items() if k.startswith("stats_")}
            assert stats and all(torch.isfinite(v).all() for v in stats.values())


PROPERTIES.append("standardise: a batch of one class token (reference NaN; the unic method keeps its state)")


# ----------------------------------------------------------------------------------------------
# balancer controllers (adaptkd.balance) and the gradient balancer end to end

CONTROLLERS = [
    {"controller": "safe"}, {"controller": "safe", "psi0": 30.0}, {"controller": "safe", "rho": 4.0},
    {"controller": "task_max"}, {"controller": "ratio"}, {"controller": "ratio", "task_safe": True},
    {"controller": "cosine_gate"}, {"controller": "cosine_gate", "gate": "hard"},
    {"controller": "safe", "lambda_min": 0.1, "lambda_max": 0.8},
]


def _check_controllers(p, a, b, c, lam0, perm) -> None:
    res = B.controller_lambda(p, a, b, c, lam0)
    for name, v in res.items():
        finite(v)
        assert ((v >= 0) & (v <= 1)).all(), (name, v)
    lam = res["lambda"]
    assert ((lam >= p.lambda_min) & (lam <= p.lambda_max)).all()
    lo, hi = B.decrease_interval(a, b, c)
    assert (lo <= hi + 1e-6).all()
    for v in (*B.importance(a, b, c, lam), B.update_norm(a, b, c, lam), B.dominance_bound(a, b, c, p.rho),
              B.cone_bound(a, b, c, 30.0)):
        finite(v)
    res_p = B.controller_lambda(p, a[perm], b[perm], c[perm], lam0)
    for name in res:
        assert torch.equal(res_p[name], res[name][perm]), name


@prop("controllers: λ finite and within [λ_min, λ_max], bounds finite in [0, 1], elementwise permutation")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", CONTROLLERS, ids=lambda o: "-".join(f"{v}" for v in o.values()))
@given(data=st.data())
def test_controllers(dtype, opts, data):
    n = data.draw(st.integers(1, 6))
    a = tensor(data.draw(hnp.arrays(np.float64, n, elements=POSITIVE)), dtype)
    b = tensor(data.draw(hnp.arrays(np.float64, n, elements=POSITIVE)), dtype)
    c = tensor(data.draw(hnp.arrays(np.float64, n, elements=st.floats(-1, 1))), dtype)
    lam0 = data.draw(st.floats(0, 1))
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    _check_controllers(B.GradientParams(**opts), a, b, c, lam0, perm)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", CONTROLLERS, ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_controller_corners(dtype, opts):
    """Zero gradients, opposite and aligned gradients, huge and tiny norms. The largest norm is
    the largest the balancer admits: it computes squared norms in the dtype and keeps its previous
    state when they overflow (float32: norms below ~1.8e19)."""
    huge = 1e18 if dtype == torch.float32 else 1e150
    a = torch.tensor([0.0, 0.0, 1.0, 1e4, 1e-30, 1.0, 1e4, huge], dtype=dtype)
    b = torch.tensor([0.0, 1.0, 0.0, 1e-30, 1e4, 1.0, 1e4, huge], dtype=dtype)
    c = torch.tensor([0.0, -1.0, 1.0, -1.0, 1.0, -1.0, 0.0, -1.0], dtype=dtype)
    _check_controllers(B.GradientParams(**opts), a, b, c, 0.9, torch.arange(8).flip(0))


@prop("gradient balancer: finite λ and gradients for logits ±1e4 at every controller")
@pytest.mark.parametrize("opts", CONTROLLERS[::2] + [{"controller": "ratio", "ema": 0.9}],
                         ids=lambda o: "-".join(f"{v}" for v in o.values()))
@given(batch=logit_batch(), T=TEMPS)
def test_gradient_balance_end_to_end(opts, batch, T):
    from adaptkd.balance import BackwardContext, GradientBalance
    from adaptkd.methods.base import StepOut

    s_np, t_np, y_np, _ = batch
    w = torch.nn.Parameter(torch.ones(s_np.shape[1]))
    z = tensor(s_np, torch.float32) * w  # logits that depend on a parameter
    t, y = tensor(t_np, torch.float32), torch.tensor(y_np)
    out = StepOut(losses={"student": {"ce": F.cross_entropy(z, y), "kd": L.kd_loss(z, t, T)}},
                  weights={"student": {"ce": 0.1, "kd": 0.9}}, logits={"student": z})
    bal = GradientBalance(B.GradientParams(**opts))
    ctx = BackwardContext(params={"student": [w]}, extra_params={"student": []}, task_terms=frozenset({"ce"}),
                          stepping=["student"], step=0, networks={})
    signals = bal.backward(out, ctx)
    lam = signals["balance/student/lambda"]
    finite(lam)
    assert 0 <= lam <= 1
    assert w.grad is not None and torch.isfinite(w.grad).all()


# ----------------------------------------------------------------------------------------------

COVERED = {
    "kd_loss", "dkd_loss", "dtkd_temperatures", "dtkd_loss", "dtkd_loss_parts", "dtkd_guarded", "dtkd_sharpness",
    "switokd_decision", "switokd_mode", "switokd_threshold", "label_distance", "distillation_gap", "online_kl_loss",
    "spatial_attention", "attention_map_distances", "afd_loss", "rtk_influence", "select_keys", "rtk_loss",
    "hint_loss", "unic_token_loss", "teacher_drop_weights", "standardize",
}
CONTROLLER_FUNCTIONS = {"controller_lambda", "importance", "update_norm", "dominance_bound", "decrease_interval",
                        "cone_bound"}


def test_every_public_loss_is_covered():
    """Every function exported by adaptkd.losses (and every controller function) has a property here."""
    public = {n for n in L.__all__ if callable(getattr(L, n)) and not isinstance(getattr(L, n), type)}
    assert public - COVERED == set(), f"add property tests for {sorted(public - COVERED)}"
    assert COVERED - public == set(), f"no longer exported: {sorted(COVERED - public)}"
    for name in CONTROLLER_FUNCTIONS:
        assert callable(getattr(B, name))
    assert B.list_balancers() == ["fixed", "gradient"], "a new balancer: add its controller properties here"
