"""SwitOKD and DML: the switching arithmetic against an independent float64 computation, the
pause rules of every topology, bit-identical paused teachers in a real engine step, and tiny
end-to-end runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptkd.config import ConfigError, load_config
from adaptkd.data import iterate_batches
from adaptkd.engine.evaluate import evaluate, load_run_model
from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import Trainer
from adaptkd.losses import online_kl_loss, switokd_decision, switokd_threshold
from adaptkd.methods import MethodContext, StepIn, build_method
from tests.helpers import tiny_config

TOL = 1e-9


# ---------------------------------------------------------------------------------------------
# Independent float64 reference, written from docs/methods/online.md (per-sample loops, numpy).

def _softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def ref_decision(zt, zs, y, tau=1.0, eps_from=None):
    """(G, t, s, ε, δ, expert) of one pair; ``eps_from=(t', s')`` computes ε from other distances."""
    zt, zs = np.asarray(zt, dtype=np.float64), np.asarray(zs, dtype=np.float64)
    n, c = zt.shape
    G = t = s = 0.0
    for i in range(n):
        pt, ps = _softmax(zt[i] / tau), _softmax(zs[i] / tau)
        onehot = np.zeros(c)
        onehot[int(y[i])] = 1.0
        G += sum(abs(ps[k] - pt[k]) for k in range(c))
        t += sum(abs(pt[k] - onehot[k]) for k in range(c))
        s += sum(abs(ps[k] - onehot[k]) for k in range(c))
    G, t, s = G / n, t / n, s / n
    et, es = eps_from if eps_from is not None else (t, s)
    eps = math.exp(-et / (et + es))
    delta = s - eps * t
    return G, t, s, eps, delta, bool(G > delta and t < s)


def ref_kl(z_learner, z_target, tau=1.0):
    total = 0.0
    for a, b in zip(np.asarray(z_learner, dtype=np.float64), np.asarray(z_target, dtype=np.float64)):
        pl, pt = _softmax(a / tau), _softmax(b / tau)
        total += sum(pt[k] * (math.log(pt[k]) - math.log(pl[k])) for k in range(len(pt)) if pt[k] > 0)
    return total / len(z_learner)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300) if b != 0 else abs(a)


def _logits(gen, b, c, scale):
    return torch.randn(b, c, generator=gen, dtype=torch.float64) * scale


# ---------------------------------------------------------------------------------------------
# The loss functions

@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_decision_matches_float64_reference(tau):
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for trial in range(24):
        b, c = 5 + trial % 4, 3 + trial % 7
        zt = _logits(gen, b, c, 0.5 + 4.0 * (trial % 5))
        zs = _logits(gen, b, c, 0.5 + 2.0 * (trial % 3))
        y = torch.randint(0, c, (b,), generator=gen)
        if trial % 3 == 0:  # a teacher that is right: expert mode becomes possible
            zt[torch.arange(b), y] += 6.0
        d = switokd_decision(zt, zs, y, tau)
        G, t, s, eps, delta, expert = ref_decision(zt.numpy(), zs.numpy(), y.numpy(), tau)
        for got, want in [(d.gap, G), (d.teacher_distance, t), (d.student_distance, s), (d.epsilon, eps),
                          (d.threshold, delta)]:
            assert got.dim() == 0 and got.dtype == torch.float64
            assert rel(got.item(), want) <= TOL, (trial, got.item(), want)
        assert d.expert.dtype == torch.bool and bool(d.expert) == expert
        seen.add(expert)
    assert seen == {True, False}  # both modes exercised


def test_decision_is_detached_and_bounded():
    zt = torch.randn(8, 10, requires_grad=True)
    zs = torch.randn(8, 10, requires_grad=True)
    d = switokd_decision(zt, zs, torch.randint(0, 10, (8,)))
    for v in d:
        assert not v.requires_grad and v.grad_fn is None
    assert 0 <= d.gap <= 2 and 0 <= d.teacher_distance < 2 and 0 <= d.student_distance < 2
    assert math.exp(-1) < d.epsilon <= 1
    # G ≥ s − t (triangle inequality per sample) — the spec's derived fact
    assert d.gap >= d.student_distance - d.teacher_distance - 1e-6


def test_near_tie_margins(monkeypatch):
    import adaptkd.losses.online as online

    # t == s: learning even when G is as large as it can be.
    z = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    d = switokd_decision(z, z.clone(), y)
    assert d.teacher_distance == d.student_distance and not bool(d.expert)

    t = torch.tensor(0.3, dtype=torch.float64)
    s = torch.tensor(0.9, dtype=torch.float64)
    eps, delta = switokd_threshold(t, s)
    for gap, want in [(delta, False),  # G exactly = δ: strict >, learning
                      (torch.nextafter(delta, torch.tensor(9.0, dtype=torch.float64)), True),
                      (torch.nextafter(delta, torch.tensor(-9.0, dtype=torch.float64)), False)]:
        monkeypatch.setattr(online, "distillation_gap", lambda *a, g=gap, **k: g)
        dist = iter([t, s])
        monkeypatch.setattr(online, "label_distance", lambda *a, d=dist, **k: next(d))
        assert bool(online.switokd_decision(z, z, y).expert) == want
    for tv, sv in [(0.5, 0.5), (0.6, 0.5)]:  # t == s and t > s: learning with any gap
        dist = iter([torch.tensor(tv, dtype=torch.float64), torch.tensor(sv, dtype=torch.float64)])
        monkeypatch.setattr(online, "label_distance", lambda *a, d=dist, **k: next(d))
        monkeypatch.setattr(online, "distillation_gap", lambda *a, **k: torch.tensor(2.0, dtype=torch.float64))
        assert not bool(online.switokd_decision(z, z, y).expert)


def test_near_tie_by_bisection_agrees_with_reference():
    """Slide the teacher until G − δ crosses 0; both sides of the crossing agree with float64."""
    gen = torch.Generator().manual_seed(3)
    b, c = 6, 4
    y = torch.randint(0, c, (b,), generator=gen)
    zs = _logits(gen, b, c, 1.0)
    good = _logits(gen, b, c, 3.0)
    good[torch.arange(b), y] += 3.0

    def margin(a):
        zt = a * good + (1 - a) * zs
        G, t, s, eps, delta, _ = ref_decision(zt.numpy(), zs.numpy(), y.numpy())
        return G - delta, zt

    lo, hi = 0.1, 1.0
    assert margin(hi)[0] > 0 > margin(lo)[0]
    for _ in range(45):
        mid = (lo + hi) / 2
        (lo, hi) = (lo, mid) if margin(mid)[0] > 0 else (mid, hi)
    for a in (lo, hi):
        m, zt = margin(a)
        assert abs(m) < 1e-10
        want = ref_decision(zt.numpy(), zs.numpy(), y.numpy())[-1]
        assert bool(switokd_decision(zt, zs, y).expert) == want


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_online_kl_loss_reference_and_gradient(tau):
    gen = torch.Generator().manual_seed(1)
    zl = _logits(gen, 7, 6, 3.0).requires_grad_(True)
    zt = _logits(gen, 7, 6, 3.0).requires_grad_(True)
    loss = online_kl_loss(zl, zt, tau)
    assert rel(loss.item(), ref_kl(zl.detach().numpy(), zt.detach().numpy(), tau)) <= TOL
    loss.backward()
    assert zt.grad is None  # the target is detached
    p_l = torch.softmax(zl.detach() / tau, 1)
    p_t = torch.softmax(zt.detach() / tau, 1)
    assert torch.allclose(zl.grad, (p_l - p_t) / (7 * tau), rtol=1e-9, atol=1e-12)
    assert online_kl_loss(zt, zt).abs().item() < 1e-12
    big = torch.tensor([[1000.0, -1000.0, 0.0]])
    assert torch.isfinite(online_kl_loss(big, -big))


# ---------------------------------------------------------------------------------------------
# The method on crafted inputs (pause rules)

def _method(name, learners, options=None):
    ctx = MethodContext(networks={}, learners=learners, frozen=[], arches={}, num_classes=5, epochs=1,
                        steps_per_epoch=1, sample_input=torch.zeros(1))
    return build_method(name, options or {}, ctx)


def _step(m, learners, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = {n: torch.randn(8, 5, generator=gen, requires_grad=True) for n in learners}
    y = torch.randint(0, 5, (8,), generator=gen)
    return m(StepIn(x=torch.zeros(8, 1), y=y, epoch=1, step=0, logits=z)), z, y


def _force(monkeypatch, m, flags):
    real = m._decide

    def fake(z, y):
        stats = real(z, y).clone()
        stats[:, -1] = torch.tensor([float(f) for f in flags], dtype=stats.dtype)
        return stats

    monkeypatch.setattr(m, "_decide", fake)


@pytest.mark.parametrize("flags", [(False, False), (True, False), (False, True), (True, True)])
def test_2t1s_pause_rules(monkeypatch, flags):
    ln = ["student", "teacher0", "teacher1"]
    m = _method("switokd", ln, {"topology": "2T1S"})
    _force(monkeypatch, m, flags)
    out, _, _ = _step(m, ln)
    paused = {t for t, f in zip(["teacher0", "teacher1"], flags) if f}
    assert out.stepping == set(ln) - paused  # the student always steps
    assert set(out.losses["student"]) == {"ce", "kl_teacher0", "kl_teacher1"}
    assert set(out.losses["teacher0"]) == {"ce", "kl_student", "kl_teacher1"}
    for t in ("teacher0", "teacher1"):
        assert all(w == (0.0 if t in paused else 1.0) for w in out.weights[t].values())
    assert all(w == 1.0 for w in out.weights["student"].values())
    assert out.signals["switokd/teacher1-student/expert"].item() == float(flags[1])


@pytest.mark.parametrize("flags", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("reference_paused_step", [False, True])
def test_1t2s_pause_rules(monkeypatch, flags, reference_paused_step):
    ln = ["student", "teacher0", "peer0"]
    m = _method("switokd", ln, {"topology": "1T2S", "reference_paused_step": reference_paused_step})
    _force(monkeypatch, m, flags)
    out, _, _ = _step(m, ln)
    both = all(flags)
    want = {"student", "peer0"} | ({"teacher0"} if not both or reference_paused_step else set())
    assert out.stepping == want
    w = out.weights["teacher0"]
    # the reference's w1, w2, w0: a student's KL term drops when its pair is in expert mode
    assert w["kl_student"] == (0.0 if flags[0] else 1.0)
    assert w["kl_peer0"] == (0.0 if flags[1] else 1.0)
    assert w["ce"] == (0.0 if both else 1.0)
    assert set(out.losses["student"]) == {"ce", "kl_peer0", "kl_teacher0"}
    assert all(v == 1.0 for n in ("student", "peer0") for v in out.weights[n].values())


def test_1t1s_losses_match_reference():
    ln = ["student", "teacher0"]
    m = _method("switokd", ln)
    out, z, y = _step(m, ln, seed=4)
    zs, zt = z["student"].detach().double().numpy(), z["teacher0"].detach().double().numpy()
    ce = torch.nn.functional.cross_entropy
    assert rel(out.losses["student"]["kl_teacher0"].item(), ref_kl(zs, zt)) < 1e-6  # float32 inputs
    assert rel(out.losses["teacher0"]["kl_student"].item(), ref_kl(zt, zs)) < 1e-6
    assert out.losses["student"]["ce"].item() == ce(z["student"], y).item()
    G, t, s, eps, delta, expert = ref_decision(zt, zs, y.numpy())
    sig = {k.rsplit("/", 1)[1]: v.item() for k, v in out.signals.items()}
    assert rel(sig["gap"], G) < 1e-6 and rel(sig["threshold"], delta) < 1e-5 and rel(sig["epsilon"], eps) < 1e-6
    assert sig["expert"] == float(expert)
    assert out.stepping == ({"student"} if expert else {"student", "teacher0"})
    # gradients: the student's loss reaches only the student's logits
    (out.losses["student"]["ce"] + out.losses["student"]["kl_teacher0"]).backward()
    assert z["teacher0"].grad is None


@pytest.mark.parametrize("topology, learners, slipped, source", [
    ("2T1S", ["student", "teacher0", "teacher1"], 1, 0),
    ("1T2S", ["student", "teacher0", "peer0"], 0, 1),
])
def test_reference_slip_option(topology, learners, slipped, source):
    ours = _method("switokd", learners, {"topology": topology})
    slip = _method("switokd", learners, {"topology": topology, "reference_slip": True})
    gen = torch.Generator().manual_seed(5)
    z = {n: torch.randn(16, 5, generator=gen, dtype=torch.float64) for n in learners}
    y = torch.randint(0, 5, (16,), generator=gen)
    a, b = ours._decide(z, y), slip._decide(z, y)
    pairs = ours.pairs
    dists = [ref_decision(z[t].numpy(), z[s].numpy(), y.numpy()) for t, s in pairs]
    for k, (t, s) in enumerate(pairs):
        own = dists[k]
        assert rel(a[k, 2].item(), own[3]) <= TOL and rel(a[k, 1].item(), own[4]) <= TOL
        eps_from = (dists[source][1], dists[source][2]) if k == slipped else None
        want = ref_decision(z[t].numpy(), z[s].numpy(), y.numpy(), eps_from=eps_from)
        assert rel(b[k, 2].item(), want[3]) <= TOL and rel(b[k, 1].item(), want[4]) <= TOL
        assert bool(b[k, 5]) == want[5]
    assert b[slipped, 2] == b[source, 2] and a[slipped, 2] != b[slipped, 2]


def test_dml_never_pauses():
    ln = ["student", "teacher0", "peer0"]
    m = _method("dml", ln)
    for seed in range(5):
        out, _, _ = _step(m, ln, seed)
        assert out.stepping is None and not out.signals
        assert set(out.losses["teacher0"]) == {"ce", "kl_student", "kl_peer0"}
    avg = _method("dml", ln, {"peer_average": True})
    out, _, _ = _step(avg, ln)
    assert out.weights["student"] == {"ce": 1.0, "kl_teacher0": 0.5, "kl_peer0": 0.5}
    assert avg.epoch_summary({}) == {}


# ---------------------------------------------------------------------------------------------
# Config checks

def _online_cfg(out, method="switokd", teachers=1, peers=0, **opts):
    cfg = tiny_config(out, method, teachers=[{"arch": "cnn_small", "trainable": True} for _ in range(teachers)])
    cfg["peers"] = [{"arch": "cnn_tiny"} for _ in range(peers)]
    cfg["run"]["max_steps_per_epoch"] = 3
    cfg["method"].update(opts)
    return cfg


@pytest.mark.parametrize("method, teachers, peers, opts, needle", [
    ("switokd", 0, 0, {}, "method.topology"),
    ("switokd", 2, 0, {}, "method.topology: 2T1S"),
    ("switokd", 1, 1, {"topology": "2T1S"}, "method.topology: 1T2S"),
    ("switokd", 1, 0, {"reference_slip": True}, "three-network"),
    ("switokd", 2, 0, {"topology": "2T1S", "reference_paused_step": True}, "only for topology 1T2S"),
    ("switokd", 1, 0, {"temprature": 2}, "method.temprature"),
    ("switokd", 1, 0, {"topology": "3T3S"}, "method.topology"),
    ("dml", 0, 0, {}, "at least two networks"),
    ("dml", 1, 0, {"temperature": 0}, "method.temperature"),
])
def test_config_errors(tmp_path, method, teachers, peers, opts, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(_online_cfg(tmp_path / "x", method, teachers, peers, **opts))


@pytest.mark.parametrize("method", ["switokd", "dml"])
def test_frozen_teacher_refused(tmp_path, method):
    cfg = tiny_config(tmp_path / "x", method, teachers=[{"arch": "cnn_small", "random_init": True}])
    with pytest.raises(ConfigError, match=r"teachers\.0\.trainable.*trainable: true"):
        load_config(cfg)


# ---------------------------------------------------------------------------------------------
# Real engine steps

def _batches(tr, n):
    d = tr.cfg.data
    it = iterate_batches(tr.data.train, d.batch_size, shuffle=True, seed=0, epoch=1)
    return [next(it) for _ in range(n)]


def _snapshot(tr, name):
    params = [p.detach().clone() for p in tr.networks[name].parameters()]
    state = tr.optims[name].state_dict()
    bufs = [v.clone() for st in state["state"].values() for v in st.values() if torch.is_tensor(v)]
    return params, bufs, {k: v for k, v in state.items() if k != "state"}


def _same(a, b):
    return len(a[0]) == len(b[0]) and all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and \
        len(a[1]) == len(b[1]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1])) and a[2] == b[2]


def test_expert_step_leaves_teacher_bit_identical(tmp_path, monkeypatch):
    tr = Trainer(_online_cfg(tmp_path / "r"))
    (x0, y0), (x1, y1) = _batches(tr, 2)
    _force(monkeypatch, tr.method, [False])
    tr.train_step(x0, y0, 1, 0.0)  # learning: both step, momentum buffers now exist
    teacher, student = _snapshot(tr, "teacher0"), _snapshot(tr, "student")
    assert teacher[1], "the teacher's optimiser has momentum state after a learning step"
    bn_before = [b.clone() for b in tr.networks["teacher0"].buffers()]
    _force(monkeypatch, tr.method, [True])
    out, _ = tr.train_step(x1, y1, 1, 0.5)
    assert out.stepping == {"student"}
    assert _same(teacher, _snapshot(tr, "teacher0"))  # parameters and optimiser state bit-identical
    assert all(p.grad is None for p in tr.networks["teacher0"].parameters())
    assert not _same(student, _snapshot(tr, "student"))
    # the paused teacher's forward still ran in train mode: its BN running statistics moved
    assert tr.networks["teacher0"].training
    assert any(not torch.equal(a, b) for a,
               b in zip(bn_before, tr.networks["teacher0"].buffers()) if a.is_floating_point())
    # control: a learning step does change the teacher
    _force(monkeypatch, tr.method, [False])
    tr.train_step(x0, y0, 1, 0.6)
    assert not _same(teacher, _snapshot(tr, "teacher0"))


def test_1t2s_reference_paused_step_moves_teacher_by_weight_decay(tmp_path, monkeypatch):
    for ref, moves in [(False, False), (True, True)]:
        tr = Trainer(_online_cfg(tmp_path / f"r{ref}", teachers=1, peers=1, topology="1T2S",
                                 reference_paused_step=ref))
        (x0, y0), = _batches(tr, 1)
        _force(monkeypatch, tr.method, [True, True])
        before = _snapshot(tr, "teacher0")
        tr.train_step(x0, y0, 1, 0.0)
        assert _same(before, _snapshot(tr, "teacher0")) != moves


def test_dml_steps_every_learner_every_step(tmp_path):
    cfg = _online_cfg(tmp_path / "d", "dml", teachers=1, peers=1, **{})
    cfg["optim"]["epochs"] = 1
    tr = Trainer(cfg)
    calls = {n: 0 for n in tr.learners}
    for n, opt in tr.optims.items():
        orig = opt.step

        def counted(*a, _n=n, _orig=orig, **k):
            calls[_n] += 1
            return _orig(*a, **k)

        opt.step = counted
    tr.fit()
    assert calls == {n: tr.steps_per_epoch for n in tr.learners}


@pytest.mark.parametrize("topology, teachers, peers", [("1T1S", 1, 0), ("2T1S", 2, 0), ("1T2S", 1, 1)])
def test_end_to_end_switokd(tmp_path, topology, teachers, peers):
    out = tmp_path / topology
    cfg = _online_cfg(out, teachers=teachers, peers=peers, topology=topology)
    cfg["optim"]["epochs"] = 2 if topology == "1T1S" else 1
    summary = Trainer(cfg).fit()
    recs = read_metrics(out / "metrics.jsonl")
    steps = [r for r in recs if r["kind"] == "step"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    tr_names = ["teacher0", "teacher1"][:teachers]
    pairs = [f"{t}-student" for t in tr_names] + (["teacher0-peer0"] if peers else [])
    for p in pairs:
        for stat in ("gap", "threshold", "epsilon", "t_dist", "s_dist", "expert"):
            assert all(f"switokd/{p}/{stat}" in r for r in steps)
        for r in epochs:
            assert 0.0 <= r[f"switokd/{p}/expert_frac"] <= 1.0
    learners = ["student", *tr_names, *(["peer0"] if peers else [])]
    for r in epochs:
        assert all(f"test/acc/{n}" in r for n in learners)
    assert set(summary["learners"]) == set(learners)
    model, _ = load_run_model(str(out), "teacher0", which="last")
    assert sum(p.numel() for p in model.parameters()) == summary["learners"]["teacher0"]["params"]
    ev = evaluate(str(out), which="last")
    assert set(ev["networks"]) == set(learners)
    assert ev["networks"]["teacher0"]["top1"] == pytest.approx(summary["learners"]["teacher0"]["final_acc"])


def test_expert_fraction_accounting_in_a_real_run(tmp_path, monkeypatch):
    """Modes forced to alternate in a real fit(): the per-epoch expert fraction is the mean of the
    logged per-step modes, the teacher's optimiser is called only on learning steps."""
    cfg = _online_cfg(tmp_path / "w")
    cfg["run"]["log_every"] = 1
    cfg["run"]["max_steps_per_epoch"] = 6
    cfg["optim"]["epochs"] = 1
    tr = Trainer(cfg)
    real = tr.method._decide

    def alternate(z, y):
        stats = real(z, y).clone()
        stats[:, -1] = float(tr.global_step % 2 == 1)
        return stats

    monkeypatch.setattr(tr.method, "_decide", alternate)
    calls = {"n": 0}
    orig = tr.optims["teacher0"].step

    def counted(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    tr.optims["teacher0"].step = counted
    tr.fit()
    recs = read_metrics(tmp_path / "w" / "metrics.jsonl")
    modes = [r["switokd/teacher0-student/expert"] for r in recs if r["kind"] == "step"]
    ep = [r for r in recs if r["kind"] == "epoch"][0]
    assert modes == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert ep["switokd/teacher0-student/expert_frac"] == pytest.approx(0.5)
    assert ep["switokd/teacher0/paused_frac"] == pytest.approx(0.5)
    assert calls["n"] == 3
    weights = [r["weight/teacher0/ce"] for r in recs if r["kind"] == "step"]
    assert weights == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_resume_equals_uninterrupted(tmp_path):
    from tests.helpers import crash_after_epoch

    full = Trainer(_online_cfg(tmp_path / "full", **{})).fit()
    part = _online_cfg(tmp_path / "part")
    crash_after_epoch(Trainer(part), 1)
    resumed = Trainer(load_config(part), resume=True).fit()
    for n in ("student", "teacher0"):
        assert resumed["learners"][n]["final_acc"] == full["learners"][n]["final_acc"]
    a = [r for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if r["kind"] == "epoch"]
    b = [r for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["switokd/teacher0-student/gap_mean"] for r in a] == [r["switokd/teacher0-student/gap_mean"] for r in b]


def _ddp_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as tdist

    from adaptkd.engine.distributed import communicator

    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        ln = ["student", "teacher0"]
        ctx = MethodContext(networks={}, learners=ln, frozen=[], arches={}, num_classes=5, epochs=1,
                            steps_per_epoch=1, sample_input=torch.zeros(1), rank=rank, world_size=2,
                            comm=communicator())
        m = build_method("switokd", {}, ctx)
        gen = torch.Generator().manual_seed(11)
        z = {n: torch.randn(12, 5, generator=gen, dtype=torch.float64) for n in ln}
        y = torch.randint(0, 5, (12,), generator=gen)
        part = slice(6 * rank, 6 * rank + 6)
        torch.save(m._decide({n: v[part] for n, v in z.items()}, y[part]), f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_multi_process_decision_is_the_global_batch_decision(tmp_path):
    """Under DDP every rank decides from the whole (global) batch, as the reference's DataParallel."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "stats")
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), out), nprocs=2, join=True)
    a, b = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(11)
    zs, zt = (torch.randn(12, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    y = torch.randint(0, 5, (12,), generator=gen)
    G, t, s, eps, delta, expert = ref_decision(zt.numpy(), zs.numpy(), y.numpy())
    for got, want in zip(a[0].tolist(), [G, delta, eps, t, s, float(expert)]):
        assert rel(got, want) <= TOL


def test_the_method_decides_through_the_public_decision():
    """What training runs (the method's batched decision) equals the public switokd_decision."""
    from adaptkd.losses import switokd_decision

    ln = ["student", "teacher0"]
    m = _method("switokd", ln, {"temperature": 2.0})
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        z = {n: torch.randn(16, 5, generator=gen) for n in ln}
        y = torch.randint(0, 5, (16,), generator=gen)
        row = m._decide(z, y)[0]
        d = switokd_decision(z["teacher0"], z["student"], y, temperature=2.0)
        want = torch.stack([d.gap, d.threshold, d.epsilon, d.teacher_distance, d.student_distance, d.expert.float()])
        assert torch.equal(row, want)
