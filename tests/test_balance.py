"""Balancers: FixedBalance and GradientBalance (docs/methods/balance.md).

The §4 identities and the controllers are checked on explicit random gradient vectors in
float64 against dense grids; the balancer itself on tiny float64 models against direct autograd
of the combined loss; and end to end on a few digits steps.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adaptkd.balance import (
    BackwardContext,
    FixedBalance,
    build_balancer,
    cone_bound,
    controller_lambda,
    decrease_interval,
    dominance_bound,
    importance,
    update_norm,
)
from adaptkd.config import ConfigError, load_config
from adaptkd.losses import kd_loss
from adaptkd.methods.base import Method, StepIn, StepOut
from tests.helpers import tiny_config

D64 = torch.float64
GRID = torch.linspace(0, 1, 20001, dtype=D64)
STEP = 1.0 / 20000


def random_pairs(n: int, dim: int = 7, seed: int = 0):
    """Random gradient pairs (g_T, g_D) with norms spread over 3 decades and every angle."""
    gen = torch.Generator().manual_seed(seed)
    gt = torch.randn(n, dim, generator=gen, dtype=D64) * torch.exp(torch.randn(n, 1, generator=gen, dtype=D64))
    gd = torch.randn(n, dim, generator=gen, dtype=D64) * torch.exp(torch.randn(n, 1, generator=gen, dtype=D64))
    # a third of the pairs strongly conflicting, a third strongly aligned
    k = n // 3
    gd[:k] = -gt[:k] * torch.rand(k, 1, generator=gen, dtype=D64) * 3 + 0.3 * gd[:k]
    gd[k : 2 * k] = gt[k : 2 * k] * torch.rand(k, 1, generator=gen, dtype=D64) * 3 + 0.3 * gd[k : 2 * k]
    return gt, gd


def abc(gt, gd):
    a, b = gt.norm(dim=-1), gd.norm(dim=-1)
    return a, b, (gt * gd).sum(-1) / (a * b)


def on_grid(gt, gd, lam=GRID):
    """Explicit first-order quantities from the vectors' inner products at each λ of ``lam``:
    ⟨g_T,g_λ⟩, ⟨g_D,g_λ⟩, I_T, I_D, cos(g_T,g_λ); pairs [N, dim] give [N, G] arrays."""
    tt, td, dd_ = (gt * gt).sum(-1, keepdim=True), (gt * gd).sum(-1, keepdim=True), (gd * gd).sum(-1, keepdim=True)
    lam = lam.reshape(1, -1) if lam.dim() <= 1 else lam
    dt = (1 - lam) * tt + lam * td
    dd = (1 - lam) * td + lam * dd_
    norm = ((1 - lam) ** 2 * tt + 2 * lam * (1 - lam) * td + lam**2 * dd_).clamp_min(0).sqrt()
    cos_t = dt / (norm * tt.sqrt()).clamp_min(1e-300)
    return dt, dd, (1 - lam) * dt, lam * dd, cos_t


class P:  # controller options without the pydantic checks (for the pure functions)
    def __init__(self, **kw):
        base = dict(controller="safe", rho=1.0, psi0=None, kappa=1.0, task_safe=False, w0=9.0, gate="soft",
                    lambda_min=0.0, lambda_max=1.0)
        base.update(kw)
        self.__dict__.update(base)


# ---------------------------------------------------------------------------------------------
# §4 identities on random gradient pairs


def test_importance_identity_and_first_order_decreases():
    gt, gd = random_pairs(300)
    a, b, c = abc(gt, gd)
    lam = torch.rand(300, dtype=D64, generator=torch.Generator().manual_seed(1))
    g = (1 - lam[:, None]) * gt + lam[:, None] * gd
    i_t = (1 - lam) * (gt * g).sum(-1)
    i_d = lam * (gd * g).sum(-1)
    rhs = lam**2 * b**2 - (1 - lam) ** 2 * a**2
    scale = (a + b) ** 2
    assert torch.allclose((i_d - i_t) / scale, rhs / scale, rtol=0, atol=1e-12)
    ft, fd = importance(a, b, c, lam)
    assert torch.allclose(ft / scale, i_t / scale, rtol=0, atol=1e-12)
    assert torch.allclose(fd / scale, i_d / scale, rtol=0, atol=1e-12)
    # ΔL_T ≈ −η·a[(1−λ)a + λbc] and ‖g_λ‖² = (1−λ)²a² + 2λ(1−λ)abc + λ²b²
    assert torch.allclose((gt * g).sum(-1) / scale, a * ((1 - lam) * a + lam * b * c) / scale, rtol=0, atol=1e-12)
    assert torch.allclose(update_norm(a, b, c, lam), g.norm(dim=-1), rtol=1e-9)
    # dominance iff λ ≥ a/(a+b), whatever the angle
    assert torch.equal(i_d >= i_t, lam * b >= (1 - lam) * a) or ((i_d - i_t).abs() / scale < 1e-12).any()


def test_both_decrease_interval_matches_dense_grid():
    gt, gd = random_pairs(120, seed=2)
    a, b, c = abc(gt, gd)
    lo, hi = decrease_interval(a, b, c)
    assert (lo <= hi).all()
    dt, dd, *_ = on_grid(gt, gd)
    ok = (dt >= 0) & (dd >= 0)
    pos = c >= 0
    assert ok[pos].all() and (lo[pos] == 0).all() and (hi[pos] == 1).all()
    g = GRID[None]
    inside = (g >= lo[:, None] + 1e-9) & (g <= hi[:, None] - 1e-9)
    outside = (g < lo[:, None] - 1e-9) | (g > hi[:, None] + 1e-9)
    assert ok[inside].all() and not ok[outside].any()
    # the exact endpoints: the distillation decrease vanishes at λ_lo, the task decrease at λ_hi
    s = (a + b) ** 2
    neg = ~pos
    assert (on_grid(gt, gd, lo[:, None])[1][neg, 0].abs() / s[neg] < 1e-12).all()
    assert (on_grid(gt, gd, hi[:, None])[0][neg, 0].abs() / s[neg] < 1e-12).all()


@pytest.mark.parametrize("rho", [0.25, 1.0, 3.0, 81.0])
def test_dominance_bound_matches_dense_grid(rho):
    gt, gd = random_pairs(90, seed=3)
    a, b, c = abc(gt, gd)
    lr = dominance_bound(a, b, c, rho)
    if rho == 1.0:
        assert torch.allclose(lr, a / (a + b), rtol=1e-12)
    _, _, i_t, i_d, _ = on_grid(gt, gd)
    dom = i_d >= rho * i_t
    assert dom[GRID[None] >= lr[:, None] + 1e-9].all()
    assert not dom[GRID[None] < lr[:, None] - 1e-9].any()


@pytest.mark.parametrize("psi0", [20.0, 45.0, 90.0])
def test_cone_bound_matches_dense_grid(psi0):
    gt, gd = random_pairs(90, seed=4)
    a, b, c = abc(gt, gd)
    ub = cone_bound(a, b, c, psi0)
    if psi0 == 90.0:
        assert torch.allclose(ub, decrease_interval(a, b, c)[1], rtol=1e-12)
    *_, cos_t = on_grid(gt, gd)
    ok = cos_t >= math.cos(math.radians(psi0)) - 1e-12
    assert ok[GRID[None] <= ub[:, None] - 1e-7].all()
    assert not ok[GRID[None] > ub[:, None] + 1e-7].any()


# ---------------------------------------------------------------------------------------------
# Controllers against a brute-force grid search of their stated objectives


def feasible(gt, gd, rho, cone=None, lam=GRID, tol=0.0):
    """Mask of Λ(ρ) at ``lam``: dominance with ratio ρ and both losses decreasing (or the ψ0 cone)."""
    dt, dd, i_t, i_d, cos_t = on_grid(gt, gd, lam)
    eps = tol * ((gt * gt).sum(-1, keepdim=True) + (gd * gd).sum(-1, keepdim=True))
    ok = (i_d - rho * i_t >= -eps * (1 + rho)) & (dd >= -eps) & (dt >= -eps)
    if cone is not None:
        ok &= cos_t >= math.cos(math.radians(cone)) - max(tol, 1e-12)
    return ok


def on_own(gt, gd, rho, lam, cone=None):
    """The controller's own λ satisfies the constraints (to rounding)."""
    return feasible(gt, gd, rho, cone, lam[:, None], tol=1e-9)[:, 0]


@pytest.mark.parametrize("rho,lam0,psi0", [(1.0, 0.9, None), (9.0, 0.9, None), (1.0, 0.3, None), (1.0, 0.9, 30.0)])
def test_safe_controller_is_the_projection_of_lambda0(rho, lam0, psi0):
    gt, gd = random_pairs(90, seed=5)
    a, b, c = abc(gt, gd)
    lam = controller_lambda(P(rho=rho, psi0=psi0), a, b, c, lam0)["lambda"]
    ok = feasible(gt, gd, rho, psi0)
    dist = torch.where(ok, (GRID[None] - lam0).abs(), torch.full_like(ok, 9.0, dtype=D64)).min(1).values
    own = on_own(gt, gd, rho, lam, psi0)
    for i in range(len(a)):
        if own[i]:  # feasible, and no feasible grid point is nearer to the nominal λ0
            assert abs(float(lam[i]) - lam0) <= float(dist[i]) + 2 * STEP
        else:  # infeasible only with the cone, when it excludes Λ(ρ): task safety wins, λ = λ_ψ0
            assert psi0 is not None and not ok[i].any()
            assert torch.isclose(lam[i], cone_bound(a[i], b[i], c[i], psi0))
    if psi0 is None:
        assert own.all()


@pytest.mark.parametrize("rho", [1.0, 9.0])
def test_task_max_controller_maximises_task_decrease(rho):
    gt, gd = random_pairs(90, seed=6)
    a, b, c = abc(gt, gd)
    lam = controller_lambda(P(controller="task_max", rho=rho), a, b, c, 0.9)["lambda"]
    dt, *_ = on_grid(gt, gd)  # −ΔL_T/η on the grid
    ok = feasible(gt, gd, rho)
    mine = on_grid(gt, gd, lam[:, None])[0][:, 0]
    best = torch.where(ok, dt, torch.full_like(dt, -math.inf)).max(1).values
    assert on_own(gt, gd, rho, lam).all()
    assert (mine >= best - 1e-9 * (a + b) ** 2).all()


@pytest.mark.parametrize("kappa", [0.5, 1.0, 4.0])
def test_ratio_controller_equalises_weighted_norms(kappa):
    gt, gd = random_pairs(60, seed=7)
    a, b, c = abc(gt, gd)
    lam = controller_lambda(P(controller="ratio", kappa=kappa), a, b, c, 0.9)["lambda"]
    obj = (GRID[None] * b[:, None] - kappa * (1 - GRID[None]) * a[:, None]).abs()
    assert ((lam - GRID[obj.argmin(1)]).abs() <= 2 * STEP).all()
    assert torch.allclose(lam * b, kappa * (1 - lam) * a, rtol=1e-12)
    capped = controller_lambda(P(controller="ratio", kappa=kappa, task_safe=True), a, b, c, 0.9)["lambda"]
    assert torch.equal(capped, torch.minimum(lam, decrease_interval(a, b, c)[1]))


@pytest.mark.parametrize("gate", ["soft", "hard"])
def test_cosine_gate_controller(gate):
    gt, gd = random_pairs(60, seed=8)
    a, b, c = abc(gt, gd)
    lam = controller_lambda(P(controller="cosine_gate", w0=9.0, gate=gate), a, b, c, 0.9)["lambda"]
    w = lam / (1 - lam)
    want = 9.0 * (c.clamp_min(0) if gate == "soft" else (c > 0).to(D64))
    assert torch.allclose(w, want, rtol=1e-12, atol=1e-12)
    # guarantee: ⟨g_T, g_T + w·g_D⟩ ≥ a² — the task loss decreases at least as fast as without distillation
    assert ((gt * (gt + w[:, None] * gd)).sum(-1) >= a**2 * (1 - 1e-12)).all()
    assert (lam[c <= 0] == 0).all()


def test_clip_and_degenerate_statistics():
    z = torch.zeros((), dtype=D64)
    one = torch.ones((), dtype=D64)
    for ctrl in ("safe", "task_max", "ratio", "cosine_gate"):
        for a, b in ((z, z), (z, one), (one, z)):
            lam = controller_lambda(P(controller=ctrl), a, b, z, 0.9)["lambda"]
            assert torch.isfinite(lam) and 0 <= lam <= 1
    lam = controller_lambda(P(lambda_min=0.2, lambda_max=0.5), one, one, one, 0.9)["lambda"]
    assert float(lam) == 0.5


# ---------------------------------------------------------------------------------------------
# The balancer on tiny float64 models


class Tiny(nn.Module):
    """x → tanh(body) → fc; the last Linear is the head."""

    def __init__(self, d: int = 6, h: int = 8, c: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(d, h)
        self.fc = nn.Linear(h, c)
        self.head_name = "fc"
        self.double()

    def features(self, x):
        return torch.tanh(self.body(x))

    def forward(self, x):
        return self.fc(self.features(x))


def kd_problem(seed: int = 0, n: int = 16, c: int = 5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen, dtype=D64)
    y = torch.randint(0, c, (n,), generator=gen)
    t = 3 * torch.randn(n, c, generator=gen, dtype=D64)
    return x, y, t


def kd_out(net, x, y, t, ce_w=0.1, kd_w=0.9, T=4.0):
    s = net(x)
    return StepOut(losses={"student": {"ce": F.cross_entropy(s, y), "kd": kd_loss(s, t, T)}},
                   weights={"student": {"ce": ce_w, "kd": kd_w}}, logits={"student": s})


def context(nets: dict, step: int = 0, extra: dict | None = None, stepping=None):
    """A BackwardContext as the engine builds it (its communicator: the process group's under DDP)."""
    from adaptkd.engine.distributed import communicator

    return BackwardContext(params={k: list(v.parameters()) for k, v in nets.items()},
                           extra_params={k: list((extra or {}).get(k, [])) for k in nets},
                           task_terms=frozenset({"ce"}), stepping=list(stepping or nets), step=step,
                           networks=dict(nets), comm=communicator())


def grads_of(loss, params):
    return [g.clone() for g in torch.autograd.grad(loss, params)]


def assert_grads(params, want, rtol=1e-9):
    for p, w in zip(params, want):
        assert p.grad is not None
        assert torch.allclose(p.grad, w, rtol=rtol, atol=1e-14), (p.grad - w).abs().max()


def test_fixed_balance_reproduces_the_weighted_sum():
    net = Tiny()
    x, y, t = kd_problem()
    FixedBalance(FixedBalance.Params()).backward(kd_out(net, x, y, t, 0.3, 1.7), context({"student": net}))
    got = [p.grad.clone() for p in net.parameters()]
    s = net(x)
    logp = torch.log_softmax(s, 1)
    ce = -logp[torch.arange(len(y)), y].mean()
    pt = torch.softmax(t / 4, 1)
    kd = 16 * (pt * (torch.log(pt) - torch.log_softmax(s / 4, 1))).sum(1).mean()
    want = grads_of(0.3 * ce + 1.7 * kd, list(net.parameters()))
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("over", ["logits", "head", "params"])
def test_gradient_balance_at_the_method_lambda_equals_fixed(over):
    """λ replaces only the group balance W_D/(W_T+W_D); pinned to it, Gradient == Fixed."""
    x, y, t = kd_problem(1)
    a, b = Tiny(seed=3), Tiny(seed=3)
    FixedBalance(FixedBalance.Params()).backward(kd_out(a, x, y, t, 0.5, 1.5), context({"student": a}))
    bal = build_balancer("gradient", {"over": over, "lambda_min": 0.75, "lambda_max": 0.75})
    sig = bal.backward(kd_out(b, x, y, t, 0.5, 1.5), context({"student": b}))
    assert float(sig["balance/student/lambda"]) == 0.75
    assert_grads(list(b.parameters()), [p.grad for p in a.parameters()], rtol=1e-12)


def grads0(loss, params):
    """∂loss/∂params with zeros for parameters it does not reach (graph kept)."""
    gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def direct_stats(loss_t, loss_d, params):
    gt = torch.cat([g.reshape(-1) for g in grads0(loss_t, params)])
    gd = torch.cat([g.reshape(-1) for g in grads0(loss_d, params)])
    return gt.norm(), gd.norm(), (gt @ gd) / (gt.norm() * gd.norm())


def test_logits_statistics_match_the_closed_form():
    net = Tiny()
    x, y, t = kd_problem(2)
    T = 2.0
    out = kd_out(net, x, y, t, 0.1, 0.9, T)
    sig = build_balancer("gradient", {}).backward(out, context({"student": net}))
    s = out.logits["student"].detach()
    n = len(y)
    dt = (torch.softmax(s, 1) - F.one_hot(y, 5)) / n  # ∂CE/∂z
    dd = T * (torch.softmax(s / T, 1) - torch.softmax(t / T, 1)) / n  # ∂(T²·KL)/∂z
    a, b = dt.norm(), dd.norm()
    c = (dt * dd).sum() / (a * b)
    assert math.isclose(float(sig["balance/student/a"]), float(a), rel_tol=1e-6)  # state is float32
    assert math.isclose(float(sig["balance/student/b"]), float(b), rel_tol=1e-6)
    assert math.isclose(float(sig["balance/student/c"]), float(c), rel_tol=1e-6, abs_tol=1e-7)


def test_head_statistics_match_explicit_last_layer_gradients():
    net = Tiny()
    x, y, t = kd_problem(3)
    out = kd_out(net, x, y, t)
    a, b, c = direct_stats(out.losses["student"]["ce"], out.losses["student"]["kd"], list(net.fc.parameters()))
    # the Gram identity of §6: ⟨∇_{W,b} L_T, ∇_{W,b} L_D⟩ = Σ_ij (h_i·h_j + 1)(δ_T,i·δ_D,j)
    s, h = out.logits["student"].detach(), net.features(x).detach()
    n = len(y)
    dt = (torch.softmax(s, 1) - F.one_hot(y, 5)) / n
    dd = 4.0 * (torch.softmax(s / 4, 1) - torch.softmax(t / 4, 1)) / n
    gram = h @ h.T + 1
    assert math.isclose(float((gram * (dt @ dd.T)).sum()), float(a * b * c), rel_tol=1e-10)
    sig = build_balancer("gradient", {"over": "head"}).backward(out, context({"student": net}))
    assert math.isclose(float(sig["balance/student/a"]), float(a), rel_tol=1e-6)
    assert math.isclose(float(sig["balance/student/b"]), float(b), rel_tol=1e-6)
    assert math.isclose(float(sig["balance/student/c"]), float(c), rel_tol=1e-6, abs_tol=1e-7)


class FeatureOnly(Method):
    """A test method: CE on the logits plus a hint loss on the penultimate features only,
    through a method-owned projector."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        torch.manual_seed(7)
        self.proj = nn.Linear(8, 4).double()

    def forward(self, inp: StepIn) -> StepOut:
        s = inp.logits["student"]
        f = inp.feats["student"]["h"]
        hint = (self.proj(f) - inp.feats["teacher0"]["h"]).pow(2).sum(1).mean()
        return StepOut(losses={"student": {"ce": F.cross_entropy(s, inp.y), "hint": hint}},
                       weights={"student": {"ce": 1.0, "hint": 3.0}}, logits={"student": s})


def feature_step(net, method, seed=4):
    x, y, _ = kd_problem(seed)
    h = net.features(x)
    target = torch.randn(len(y), 4, dtype=D64, generator=torch.Generator().manual_seed(seed))
    return method(StepIn(x=x, y=y, epoch=1, step=0, logits={"student": net.fc(h)},
                         feats={"student": {"h": h}, "teacher0": {"h": target}}))


@pytest.mark.parametrize("over", ["logits", "head"])
def test_feature_only_distillation_is_refused_for_logit_statistics(over):
    net, method = Tiny(), FeatureOnly()
    out = feature_step(net, method)
    with pytest.raises(ConfigError, match=r"\['hint'\].*balance.over: params"):
        build_balancer("gradient", {"over": over}).backward(out,
                                                            context({"student": net},
                                                                    extra={"student": list(method.parameters())}))


@pytest.mark.parametrize("renormalise", [False, True])
def test_params_mode_equals_the_direct_gradient_of_the_combined_loss(renormalise):
    """over=params: p.grad = s·r·[(1−λ)∇L̂_T + λ∇L̂_D]; method-owned parameters get only λ·∇L̂_D."""
    net, method = Tiny(), FeatureOnly()
    out = feature_step(net, method)
    params, extra = list(net.parameters()), list(method.parameters())
    bal = build_balancer("gradient", {"over": "params", "lambda0": 0.3, "renormalise": renormalise})
    lt, ld = out.losses["student"]["ce"], out.losses["student"]["hint"]  # normalised groups: L̂_T = ce, L̂_D = hint
    a, b, c = direct_stats(lt, ld, params)
    gt, gd = grads0(lt, params + extra), grads0(ld, params + extra)
    sig = bal.backward(out, context({"student": net}, extra={"student": extra}))
    lam = sig["balance/student/lambda"].double()
    assert math.isclose(float(sig["balance/student/a"]), float(a), rel_tol=1e-6)
    assert math.isclose(float(sig["balance/student/b"]), float(b), rel_tol=1e-6)
    want_lam = controller_lambda(bal.params, a, b, c, 0.3)["lambda"]
    assert math.isclose(float(lam), float(want_lam), rel_tol=1e-6)
    s = 4.0  # W_T + W_D = 1 + 3
    r = float(update_norm(a, b, c, torch.tensor(0.3, dtype=D64)) / update_norm(a, b, c, lam)) if renormalise else 1.0
    if renormalise:
        assert math.isclose(float(sig["balance/student/renorm"]), r, rel_tol=1e-6)
    r = sig["balance/student/renorm"].double() if renormalise else 1.0
    want = [s * r * ((1 - lam) * t_ + lam * d_) for t_, d_ in zip(gt, gd)]
    assert_grads(params + extra, want)
    assert not any(g.any() for g in gt[-2:])  # the projector is reached by the distillation term only
    if renormalise:  # the update keeps the norm it would have at the nominal λ0
        norm = torch.cat([p.grad.reshape(-1) for p in params]).norm()
        assert math.isclose(float(norm), s * float(update_norm(a, b, c, torch.tensor(0.3, dtype=D64))), rel_tol=1e-6)


@pytest.mark.parametrize("controller", ["safe", "task_max", "ratio", "cosine_gate"])
def test_first_order_prediction_of_each_loss_on_softmax_regression(controller):
    """A Linear student with CE + KD: the one-step changes of L_T and L_D match −η⟨g, g_λ⟩."""
    torch.manual_seed(0)
    net = nn.Linear(6, 5).double()
    x, y, t = kd_problem(5, n=32)
    bal = build_balancer("gradient", {"over": "params", "controller": controller})
    out = kd_out(net, x, y, t)
    lt0, ld0 = float(out.losses["student"]["ce"].detach()), float(out.losses["student"]["kd"].detach())
    sig = bal.backward(out, context({"student": net}))
    a, b, c, lam = (float(sig[f"balance/student/{k}"]) for k in ("a", "b", "c", "lambda"))
    eta = 1e-4
    with torch.no_grad():
        for p in net.parameters():
            p -= eta * p.grad  # s = 0.1 + 0.9 = 1
    with torch.no_grad():
        s = net(x)
        dlt = float(F.cross_entropy(s, y)) - lt0
        dld = float(kd_loss(s, t, 4.0)) - ld0
    pred_t = -eta * a * ((1 - lam) * a + lam * b * c)
    pred_d = -eta * b * ((1 - lam) * a * c + lam * b)
    scale = eta * (a + b) ** 2
    assert abs(dlt - pred_t) <= 3e-4 * max(abs(pred_t), 1e-3 * scale)  # measured: ≤ 6e-5
    assert abs(dld - pred_d) <= 3e-4 * max(abs(pred_d), 1e-3 * scale)
    if controller == "safe":  # both decrease (first order) and distillation dominates
        assert dlt <= 0 and dld <= 0
        i_t, i_d = importance(*(torch.tensor(v, dtype=D64) for v in (a, b, c, lam)))
        assert float(i_d) >= float(i_t) * (1 - 1e-9)


def test_every_n_holds_lambda_between_updates_with_one_plain_backward():
    net = Tiny()
    bal = build_balancer("gradient", {"over": "params", "every": 3, "controller": "ratio"})
    lams = []
    for step in range(4):
        x, y, t = kd_problem(10 + step)
        out = kd_out(net, x, y, t)
        for p in net.parameters():
            p.grad = None
        held = bal.state.get("student")
        calls = []
        orig = torch.autograd.grad
        torch.autograd.grad = lambda *a, calls=calls, orig=orig, **k: (calls.append(1), orig(*a, **k))[1]
        try:
            sig = bal.backward(out, context({"student": net}, step=step))
        finally:
            torch.autograd.grad = orig
        lams.append(float(sig["balance/student/lambda"]))
        if step % 3:
            assert not calls  # a single ordinary backward, λ held
            assert torch.equal(bal.state["student"], held)
            lam = float(held[4])
            z = net(x)
            want = grads_of((1 - lam) * F.cross_entropy(z, y) + lam * kd_loss(z, t, 4.0), list(net.parameters()))
            assert_grads(list(net.parameters()), want)
        else:
            assert len(calls) == 2  # g_T and g_D, no third backward
    assert lams[1] == lams[2] == lams[0] and lams[3] != lams[0]


def test_ema_smoothing_and_state_roundtrip():
    net = Tiny()
    bal = build_balancer("gradient", {"ema": 0.5})
    raw = []
    for step in range(2):
        x, y, t = kd_problem(20 + step)
        out = kd_out(net, x, y, t)
        a, b, c = direct_stats(out.losses["student"]["ce"], out.losses["student"]["kd"], [out.logits["student"]])
        raw.append((a, b, a * b * c))
        bal.backward(out, context({"student": net}, step=step))
    st = bal.state["student"]
    for i in range(3):
        assert math.isclose(float(st[i]), float(0.5 * raw[0][i] + 0.5 * raw[1][i]), rel_tol=1e-6)
    again = build_balancer("gradient", {"ema": 0.5})
    again.load_state_dict(bal.state_dict())
    assert torch.equal(again.state["student"], st)


def test_online_learners_get_their_own_lambda_and_exact_cross_gradients():
    """Two learners whose distillation terms reach each other (no detach): params mode equals the
    gradient of Σ_learner s·[(1−λ)L̂_T + λL̂_D] for every parameter."""
    n1, n2 = Tiny(seed=1), Tiny(seed=2)
    x, y, _ = kd_problem(30)
    z1, z2 = n1(x), n2(x)
    terms = {"student": {"ce": F.cross_entropy(z1, y), "kl": kd_loss(z1, z2, 1.0)},
             "peer0": {"ce": F.cross_entropy(z2, y), "kl": kd_loss(z2, z1, 1.0)}}
    out = StepOut(losses=terms, weights={"student": {"kl": 2.0}, "peer0": {"kl": 0.5}},
                  logits={"student": z1, "peer0": z2})
    params = list(n1.parameters()) + list(n2.parameters())
    a1, b1, _ = direct_stats(terms["student"]["ce"], terms["student"]["kl"], list(n1.parameters()))
    parts = {k: [grads0(terms[learner][term], params) for term in ("ce", "kl")] for k, learner in
             (("s", "student"), ("p", "peer0"))}
    sig = build_balancer("gradient", {"over": "params", "controller": "ratio"}).backward(
        out, context({"student": n1, "peer0": n2}))
    l1, l2 = sig["balance/student/lambda"].double(), sig["balance/peer0/lambda"].double()
    assert float(l1) != float(l2)
    assert math.isclose(float(l1), float(a1 / (a1 + b1)), rel_tol=1e-12)
    want = [3.0 * ((1 - l1) * st + l1 * sd) + 1.5 * ((1 - l2) * pt + l2 * pd)
            for st, sd, pt, pd in zip(*parts["s"], *parts["p"])]
    assert any(w.abs().sum() > 0 for w in want[4:])  # the student's loss reaches the peer and vice versa
    assert all(torch.any(g != 0) for g in parts["s"][1][4:])
    assert_grads(params, want)


@pytest.mark.parametrize("over", ["logits", "params"])
def test_a_learner_with_one_group_only_gets_the_plain_weighted_sum(over):
    """E.g. method ce, or FitNet's hint-only stage: nothing to balance, FixedBalance's gradient."""
    x, y, t = kd_problem(9)
    a, b = Tiny(seed=5), Tiny(seed=5)
    outs = [StepOut(losses={"student": {"kd": kd_loss(n(x), t, 4.0)}}, weights={"student": {"kd": 0.7}},
                    logits={"student": n(x)}) for n in (a, b)]
    FixedBalance(FixedBalance.Params()).backward(outs[0], context({"student": a}))
    sig = build_balancer("gradient", {"over": over}).backward(outs[1], context({"student": b}))
    assert not any(k.startswith("balance/") for k in sig)
    assert_grads(list(b.parameters()), [p.grad for p in a.parameters()], rtol=1e-12)


def test_bad_options_are_refused_by_the_config_loader(tmp_path):
    base = tiny_config(tmp_path / "r", "kd", teachers=[{"arch": "cnn_small", "random_init": True}])
    for bad, field in (({"contoller": "safe"}, "balance.contoller"), ({"over": "all"}, "balance.over"),
                       ({"kappa": 2.0}, "kappa"), ({"lambda_min": 0.9, "lambda_max": 0.1}, "lambda_min"),
                       ({"every": 0}, "balance.every"), ({"psi0": 120}, "balance.psi0")):
        cfg = dict(base, balance={"name": "gradient", **bad})
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config(cfg)


@pytest.mark.parametrize("over", ["logits", "params"])
def test_end_to_end_kd_with_gradient_balance_logs_lambda(tmp_path, teacher_ckpt, over):
    from adaptkd.engine.logger import read_metrics
    from adaptkd.engine.trainer import Trainer

    cfg = tiny_config(tmp_path / over, "kd", teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}])
    cfg["balance"] = {"name": "gradient", "over": over, "every": 2 if over == "params" else 1}
    cfg["optim"]["epochs"] = 1
    s = Trainer(cfg).fit()
    assert 0 <= s["final_acc"] <= 100
    recs = read_metrics(tmp_path / over / "metrics.jsonl")
    steps = [r for r in recs if r["kind"] == "step"]
    for r in steps:
        lam, lo, hi = r["balance/student/lambda"], r["balance/student/lambda_lo"], r["balance/student/lambda_hi"]
        assert lo - 1e-6 <= lam <= hi + 1e-6 and r["balance/student/a"] > 0 and -1 <= r["balance/student/c"] <= 1
    epoch = [r for r in recs if r["kind"] == "epoch"][0]
    assert 0 <= epoch["train/balance/student/lambda"] <= 1


def _ddp_worker(rank: int, world: int, init: str, result: str) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        net = Tiny(seed=0)
        ddp = nn.parallel.DistributedDataParallel(net)
        x, y, t = kd_problem(40 + rank)
        bal = build_balancer("gradient", {"controller": "ratio"})
        sig = bal.backward(kd_out(ddp, x, y, t), context({"student": net}))
        grads = [p.grad.clone() for p in net.parameters()]
        for prm in net.parameters():
            prm.grad = None
        head_sig = build_balancer("gradient", {"over": "head"}).backward(kd_out(ddp, x, y, t),
                                                                         context({"student": net}))
        head = {"lambda": head_sig["balance/student/lambda"], "grads": [p.grad.clone() for p in net.parameters()]}
        refused = ""
        try:
            build_balancer("gradient", {"over": "params"}).backward(kd_out(ddp, x, y, t), context({"student": net}))
        except ConfigError as exc:
            refused = str(exc)
        torch.save({"lambda": sig["balance/student/lambda"], "grads": grads, "head": head, "refused": refused},
                   f"{result}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_multi_process_statistics_are_averaged_over_ranks(tmp_path):
    """Two gloo processes under DDP: both use one λ, from the rank-averaged (a², b², ⟨g_T,g_D⟩);
    DDP still averages the gradients (over logits and over head); over params is refused."""
    import torch.multiprocessing as mp

    res = str(tmp_path / "res.pt")
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'pg'}", res), nprocs=2, join=True)
    r0, r1 = torch.load(res + ".0"), torch.load(res + ".1")
    assert float(r0["lambda"]) == float(r1["lambda"])
    assert "multi-process" in r0["refused"] and "multi-process" in r1["refused"]
    stats, parts = [], []
    for rank in range(2):
        net = Tiny(seed=0)
        x, y, t = kd_problem(40 + rank)
        out = kd_out(net, x, y, t)
        lt, ld = out.losses["student"]["ce"], out.losses["student"]["kd"]
        a, b, c = direct_stats(lt, ld, [out.logits["student"]])
        stats.append(torch.stack([a * a, b * b, a * b * c]))
        parts.append((grads0(lt, list(net.parameters())), grads0(ld, list(net.parameters()))))
    m = torch.stack(stats).mean(0)
    lam = m[0].sqrt() / (m[0].sqrt() + m[1].sqrt())  # ratio, κ = 1
    assert math.isclose(float(r0["lambda"]), float(lam), rel_tol=1e-12)
    for i, g in enumerate(r0["grads"]):
        want = sum((1 - lam) * p[0][i] + lam * p[1][i] for p in parts) / 2
        assert torch.allclose(g, want, rtol=1e-9, atol=1e-14)
        assert torch.equal(g, r1["grads"][i])
    hl = r0["head"]["lambda"].double()
    assert float(hl) == float(r1["head"]["lambda"])
    for i, g in enumerate(r0["head"]["grads"]):
        want = sum((1 - hl) * p[0][i] + hl * p[1][i] for p in parts) / 2
        assert torch.allclose(g, want, rtol=1e-9, atol=1e-14)
        assert torch.equal(g, r1["head"]["grads"][i])
