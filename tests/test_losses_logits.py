"""KD and DKD against independent float64 computations written from docs/methods/logit.md, and their
mathematical properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptkd.losses import dkd_loss, kd_loss


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ref_kd(s, t, T):
    """mdistiller KD.py restated: log_softmax student, softmax teacher, KL summed over classes,
    mean over batch, times T²."""
    ps, pt = _softmax(s / T), _softmax(t / T)
    kl = np.where(pt > 0, pt * (np.log(pt) - np.log(ps)), 0.0).sum(axis=1)
    return kl.mean() * T * T


def ref_dkd(s, t, y, alpha, beta, T):
    """mdistiller DKD.py restated literally: masked-sum bins, plain log, -1000 trick after /T."""
    B, C = s.shape
    gt = np.zeros((B, C), dtype=bool)
    gt[np.arange(B), y] = True
    ps, pt = _softmax(s / T), _softmax(t / T)

    def bins(p):
        return np.stack([(p * gt).sum(1), (p * ~gt).sum(1)], axis=1)

    bs, bt = bins(ps), bins(pt)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum() / B * T * T
    pt2 = _softmax(t / T - 1000.0 * gt)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0·log 0 at the target entry, as torch's xlogy
        log_ps2 = np.log(_softmax(s / T - 1000.0 * gt))
        nckd = np.where(pt2 > 0, pt2 * (np.log(np.where(pt2 > 0, pt2, 1.0)) - log_ps2), 0.0).sum() / B * T * T
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("C", [2, 10, 100])
def test_kd_matches_float64_reference(T, C):
    g = np.random.default_rng(int(T * 100 + C))
    s, t = g.normal(0, 3, (16, C)), g.normal(0, 3, (16, C))
    got = kd_loss(torch.tensor(s), torch.tensor(t), T).item()
    assert got == pytest.approx(ref_kd(s, t, T), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("C", [2, 3, 10, 100])
@pytest.mark.parametrize("ab", [(1.0, 8.0), (1.0, 2.0), (0.5, 6.0)])
def test_dkd_matches_float64_reference(T, C, ab):
    g = np.random.default_rng(C * 7 + int(T))
    s, t = g.normal(0, 2, (12, C)), g.normal(0, 2, (12, C))
    y = g.integers(0, C, 12)
    got = dkd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha=ab[0], beta=ab[1], temperature=T).item()
    assert got == pytest.approx(ref_dkd(s, t, y, ab[0], ab[1], T), rel=1e-9, abs=1e-12)


def test_dkd_parts_are_tckd_and_nckd():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g, dtype=torch.float64), torch.randn(8, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=g)
    tckd = dkd_loss(s, t, y, alpha=1.0, beta=0.0)
    nckd = dkd_loss(s, t, y, alpha=0.0, beta=1.0)
    assert dkd_loss(s, t, y, alpha=2.5, beta=3.0).item() == pytest.approx(2.5 * tckd.item() + 3.0 * nckd.item(),
                                                                          rel=1e-12)
    # NCKD is the KL between renormalised non-target distributions (computed another way here)
    mask = torch.nn.functional.one_hot(y, 10).bool()
    pt = torch.softmax(t / 4, 1)[~mask].view(8, 9)
    ps = torch.softmax(s / 4, 1)[~mask].view(8, 9)
    pt, ps = pt / pt.sum(1, keepdim=True), ps / ps.sum(1, keepdim=True)
    assert nckd.item() == pytest.approx((pt * (pt.log() - ps.log())).sum(1).mean().item() * 16, rel=1e-10)


def test_dkd_two_classes_has_no_nckd():
    s, t = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (5,))
    assert dkd_loss(s, t, y, alpha=0.0, beta=1.0).item() == 0.0
    s.requires_grad_(True)
    dkd_loss(s, t, y).backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("fn", ["kd", "dkd"])
def test_properties_nonneg_zero_shift_invariant(fn):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(32, 20, generator=g, dtype=torch.float64) * 3
    t = torch.randn(32, 20, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 20, (32,), generator=g)
    loss = (lambda a, b: kd_loss(a, b, 4.0)) if fn == "kd" else (lambda a, b: dkd_loss(a, b, y))
    assert loss(s, t).item() >= 0
    assert loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    shift = torch.randn(32, 1, generator=g, dtype=torch.float64) * 50
    assert loss(s + shift, t - shift).item() == pytest.approx(loss(s, t).item(), rel=1e-9)


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_finite_at_extreme_logits_float32(scale):
    g = torch.Generator().manual_seed(2)
    s = (torch.randn(16, 10, generator=g) * scale).requires_grad_(True)
    t = torch.randn(16, 10, generator=g) * scale
    y = torch.randint(0, 10, (16,), generator=g)
    for T in (1.0, 4.0):
        for val in (kd_loss(s, t, T), dkd_loss(s, t, y, temperature=T)):
            assert torch.isfinite(val)
            (g1,) = torch.autograd.grad(val, s)
            assert torch.isfinite(g1).all()


def test_dkd_stays_finite_where_reference_overflows():
    # std-30 logits at T=1: the reference's plain log of an underflowed bin gives inf in float32
    g = torch.Generator().manual_seed(3)
    s = torch.randn(64, 100, generator=g) * 30
    t = torch.randn(64, 100, generator=g) * 30
    y = torch.randint(0, 100, (64,), generator=g)
    val = dkd_loss(s, t, y, temperature=1.0)
    assert torch.isfinite(val)
    ref64 = dkd_loss(s.double(), t.double(), y, temperature=1.0)
    assert val.item() == pytest.approx(ref64.item(), rel=1e-4)


def test_kd_gradient_matches_closed_form():
    # d/ds [T² KL] = T (softmax(s/T) - softmax(t/T)) / B
    s = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 7, dtype=torch.float64)
    kd_loss(s, t, 3.0).backward()
    expect = 3.0 * (torch.softmax(s / 3, 1) - torch.softmax(t / 3, 1)) / 6
    assert torch.allclose(s.grad, expect, atol=1e-12)


def test_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), 0.0)
    assert math.isfinite(kd_loss(torch.randn(1, 2), torch.randn(1, 2), 1e-3).item())
