"""adaptkd.Distiller: every method in a plain PyTorch loop, its state, bad input, autocast, compile, DDP."""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adaptkd.distiller import Distiller, DistillerError, prepare_distributed
from adaptkd.losses import kd_loss
from adaptkd.methods import list_methods
from adaptkd.models import build_model

X = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))


def mlp(hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def cnn(arch: str = "cnn_tiny", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 10, in_channels=1)


# One working setup per registered method: (teachers, peers, options).
SETUPS = {
    "ce": (0, 0, {}),
    "kd": (1, 0, {}),
    "dkd": (1, 0, {}),
    "dtkd": (1, 0, {"warmup_epochs": 2}),
    "fitnet": (1, 0, {}),
    "afd": (1, 0, {}),
    "rtk": (1, 0, {}),
    "unic": (2, 0, {}),
    "compose": (1, 0, {"terms": [{"loss": "ce"}, {"loss": "dtkd", "weight": 1.0, "warmup_epochs": 2}]}),
    "switokd": (1, 0, {}),
    "dml": (1, 1, {}),
}


def build(method: str, **kw) -> Distiller:
    nt, npeer, opts = SETUPS[method]
    teachers = [cnn("cnn_small", seed=10 + i) for i in range(nt)]
    peers = [cnn(seed=20 + i) for i in range(npeer)]
    return Distiller(cnn(), teachers, method, peers=peers, example_input=X, epochs=2, steps_per_epoch=2,
                     **{**opts, **kw})


def run_steps(d: Distiller, n: int, opts=None):
    opts = opts or d.build_optimizers({"lr": 0.05, "epochs": 2})
    outs = []
    for _ in range(n):
        out = d(X, Y)
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        d.backward(out)
        d.step(opts, out)
        outs.append(out)
    return outs, opts


def test_every_registered_method_has_a_setup():
    assert set(SETUPS) == set(list_methods())


@pytest.mark.parametrize("method", sorted(SETUPS))
def test_every_method_trains_in_a_plain_loop(method):
    d = build(method)
    before = {n: copy.deepcopy(m.state_dict()) for n, m in d.learners.items()}
    teachers = {n: copy.deepcopy(t.state_dict()) for n, t in d.teachers.items()}
    outs, _ = run_steps(d, 3)
    out = outs[-1]
    assert torch.isfinite(out.loss) and out.loss.dim() == 0
    assert set(out.terms) <= set(d.learner_names) and out.stepping
    for n, m in d.learners.items():  # every learner moved
        assert any(not torch.equal(v, m.state_dict()[k]) for k, v in before[n].items() if v.is_floating_point()), n
    for n, t in d.teachers.items():  # frozen teachers untouched, eval mode, no grad
        assert not t.training and all(not p.requires_grad for p in t.parameters())
        assert all(torch.equal(v, t.state_dict()[k]) for k, v in teachers[n].items()), n
    ids = {id(p) for t in d.teachers.values() for p in t.parameters()}
    assert not ids & {id(p) for p in d.parameters()}
    assert d.global_step == 3 and out.epoch == 2  # counted: steps_per_epoch=2
    assert isinstance(d.epoch_end(), dict)


def test_kd_loss_is_the_authors_arithmetic_and_backward_equals_loss_backward():
    s, t = mlp(seed=0), mlp(32, seed=1)
    d = Distiller(s, [t], "kd", temperature=4.0, ce_weight=0.1, kd_weight=0.9)
    out = d(X, Y)
    with torch.no_grad():
        zt = t(X)
    zs = s(X)
    ref = 0.1 * F.cross_entropy(zs, Y) + 0.9 * kd_loss(zs, zt, 4.0)
    torch.testing.assert_close(out.loss, ref, rtol=0, atol=0)
    out.loss.backward()
    g1 = [p.grad.clone() for p in s.parameters()]
    s.zero_grad()
    d.backward(d(X, Y))
    assert all(torch.equal(a, p.grad) for a, p in zip(g1, s.parameters()))
    assert "student" in d.optimizer_groups() and "teacher0" not in d.optimizer_groups()


def test_teachers_stay_frozen_and_out_of_state_unless_asked():
    t = mlp(32, seed=1)
    d = Distiller(mlp(), [t], "kd")
    d.train()
    assert not t.training and d.student.training
    keys = list(d.state_dict())
    assert keys and all(not k.startswith("teacher") for k in keys) and "_extra_state" in keys
    d2 = Distiller(mlp(), [mlp(32, seed=1)], "kd", checkpoint_teachers=True)
    d3 = Distiller(mlp(), [mlp(32, seed=5)], "kd", checkpoint_teachers=True)
    d3.load_state_dict(d2.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(d2.teachers["teacher0"].parameters(),
                                                 d3.teachers["teacher0"].parameters()))
    d.to(torch.float64)  # .to() reaches the teachers
    assert next(t.parameters()).dtype == torch.float64


@pytest.mark.parametrize("method", ["dtkd", "unic", "switokd", "fitnet"])
def test_state_dict_resumes_exactly(method):
    """4 steps straight == 2 steps, save/load into a fresh Distiller (and optimisers), 2 steps."""
    a = build(method)
    run_steps(a, 4)
    b = build(method)
    _, opts = run_steps(b, 2)
    state = copy.deepcopy(b.state_dict())
    ostate = {n: copy.deepcopy(o.state_dict()) for n, o in opts.items()}
    c = build(method)
    c.load_state_dict(state)
    opts_c = c.build_optimizers({"lr": 0.05, "epochs": 2})
    for n, o in opts_c.items():
        o.load_state_dict(ostate[n])
    assert c.global_step == 2
    run_steps(c, 2, opts_c)
    assert a.epoch_end() == c.epoch_end()  # the signal reductions continued too
    for k, v in a.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, c.state_dict()[k]), k


def test_gradient_balance_needs_the_distillers_backward():
    d = Distiller(mlp(), [mlp(32, seed=1)], "kd", balance={"name": "gradient", "over": "logits"})
    assert d.needs_own_backward and not Distiller(mlp(), [mlp(32, seed=1)], "kd").needs_own_backward
    out = d(X, Y)
    float(out.loss.detach())  # reading it (logging) is fine
    with pytest.raises(DistillerError, match=r"call distiller\.backward\(out\)"):
        out.loss.backward()
    assert all(p.grad is None for p in d.parameters())  # nothing applied
    sig = d.backward(out)
    assert "balance/student/lambda" in sig and "balance/student/lambda" in out.signals
    assert all(p.grad is not None for p in d.student.parameters())


def test_switokd_expert_mode_steps_only_the_learners_that_step(monkeypatch):
    d = build("switokd")
    monkeypatch.setattr(d.method, "_decide", lambda z, y: torch.tensor([[1.0, 0.0, 0.5, 0.1, 0.9, 1.0]]))
    opts = d.build_optimizers({"lr": 0.05, "epochs": 2})
    teacher = [p.detach().clone() for p in d.learners["teacher0"].parameters()]
    out = d(X, Y)
    assert out.stepping == ["student"]
    for o in opts.values():
        o.zero_grad(set_to_none=True)
    d.backward(out)
    with pytest.raises(DistillerError, match="one optimiser"):
        d.step(torch.optim.SGD(d.parameters(), lr=0.1), out)
    d.step(opts, out)
    # the paused teacher's weights did not move (its BN statistics did: its forward runs in train mode)
    assert all(torch.equal(a, b) for a, b in zip(teacher, d.learners["teacher0"].parameters()))


# -- bad input --------------------------------------------------------------------------------------------
def test_teacher_that_is_the_student_is_refused():
    s = mlp()
    with pytest.raises(DistillerError, match="shares parameters with 'student'"):
        Distiller(s, [s], "kd")
    with pytest.raises(DistillerError, match="shares parameters"):
        Distiller(s, [nn.Sequential(s, nn.Identity())], "kd")


def test_optimiser_holding_a_teacher_is_refused():
    t = mlp(32, seed=1)
    d = Distiller(mlp(), [t], "kd")
    opt = torch.optim.SGD(list(d.parameters()) + list(t.parameters()), lr=0.1)
    out = d(X, Y)
    out.loss.backward()
    with pytest.raises(DistillerError, match="frozen teacher"):
        d.step(opt, out)


def test_feature_method_without_taps_names_the_option():
    with pytest.raises(DistillerError, match="student_tap"):  # an MLP has no tap_blocks
        Distiller(mlp(), [cnn("cnn_small")], "fitnet", example_input=X)
    with pytest.raises(DistillerError, match="example_input"):
        Distiller(cnn(), [cnn("cnn_small")], "fitnet")
    with pytest.raises(DistillerError, match="no submodule named 'nope'"):
        Distiller(cnn(), [cnn("cnn_small")], "afd", example_input=X, student_taps=["nope"])


def test_missing_epoch_information_is_explained():
    d = Distiller(mlp(), [mlp(32, seed=1)], "dtkd")
    with pytest.raises(DistillerError, match="reads the epoch.*set_epoch"):
        d(X, Y)
    d.set_epoch(1)
    assert d(X, Y).epoch == 1
    assert d(X, Y, epoch=3).epoch == 3
    with pytest.raises(DistillerError, match="epochs= and steps_per_epoch="):
        Distiller(cnn(), [cnn("cnn_small")], "unic", example_input=X)


def test_bad_method_options_and_names():
    with pytest.raises(DistillerError, match="method.temperature"):
        Distiller(mlp(), [mlp(32, seed=1)], "kd", temperature=-1)
    with pytest.raises(DistillerError, match="unknown method 'kdd'"):
        Distiller(mlp(), [mlp(32, seed=1)], "kdd")
    with pytest.raises(DistillerError, match="at least one frozen teacher"):
        Distiller(mlp(), [], "kd")
    with pytest.raises(DistillerError, match="checkpoint"):  # a zoo-name teacher without weights
        Distiller(cnn(), ["cnn_small"], "kd", example_input=X)


def test_zoo_names_and_from_config():
    d = Distiller(cnn(), ["cnn_tiny"], "dml", example_input=X)  # online: built from the zoo, trains
    assert d.learner_names == ["student", "teacher0"] and not d.teachers
    cfg = {"student": {"arch": "cnn_tiny"}, "teachers": [{"arch": "cnn_small", "random_init": True}],
           "method": {"name": "dtkd", "warmup_epochs": 5}, "balance": {"name": "gradient", "over": "logits"},
           "optim": {"epochs": 3, "lr": 0.2}}
    d = Distiller.from_config(cfg, example_input=X, num_classes=10, steps_per_epoch=4)
    assert d.method.params.warmup_epochs == 5 and d.balancer.name == "gradient"
    assert d.build_optimizers()["student"].param_groups[0]["lr"] == 0.2
    with pytest.raises(DistillerError, match="num_classes"):
        Distiller.from_config(cfg)


# -- mixed precision, compile ------------------------------------------------------------------------------
def test_autocast_and_gradscaler():
    d = build("dtkd")
    scaler = torch.amp.GradScaler("cpu")
    opts = d.build_optimizers({"lr": 0.05, "epochs": 2})
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = d(X, Y)
        assert all(v.dtype == torch.float32 for v in out.logits.values())
        assert out.loss.dtype == torch.float32  # the method ran in float32
        for o in opts.values():
            o.zero_grad()
        d.backward(out, scaler=scaler)
        d.step(opts, out, scaler=scaler)
    assert all(torch.isfinite(p).all() for p in d.parameters())


def test_compiled_student_gives_the_eager_numbers():
    pytest.importorskip("torch._dynamo")
    eager = build("fitnet")
    teacher = cnn("cnn_small", seed=10)  # the order of build(): the regressor's init follows the student's seed
    compiled_student = torch.compile(cnn(), backend="aot_eager")
    comp = Distiller(compiled_student, [teacher], "fitnet", example_input=X, epochs=2, steps_per_epoch=2)
    assert comp.student is compiled_student._orig_mod  # saved and optimised unwrapped
    a, _ = run_steps(eager, 2)
    b, _ = run_steps(comp, 2)
    torch.testing.assert_close(a[0].loss, b[0].loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[1].loss, b[1].loss, rtol=1e-4, atol=1e-5)


# -- DDP (gloo, CPU) -------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, store: str, results: dict) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        per = X.shape[0] // world
        x, y = X[rank * per:(rank + 1) * per], Y[rank * per:(rank + 1) * per]
        torch.manual_seed(rank)  # different initial weights per rank: DDP and the broadcast equalise them
        d = Distiller(mlp(seed=rank), [mlp(32, seed=1)], "kd")
        prepare_distributed(d)
        opt = torch.optim.SGD(d.parameters(), lr=0.1)
        for _ in range(3):
            out = d(x, y)
            opt.zero_grad()
            d.backward(out)
            d.step(opt, out)
        f = Distiller(cnn(seed=rank), [cnn("cnn_small", seed=3)], "fitnet", example_input=X)
        prepare_distributed(f)
        fo = torch.optim.SGD(f.parameters(), lr=0.1)
        for _ in range(2):
            out = f(x, y)
            fo.zero_grad()
            f.backward(out)
            f.step(fo, out)
        results[rank] = {
            "student": [p.detach().clone() for p in d.student.parameters()],
            "wrapped": type(d.forward_nets["student"]).__name__, "teacher": type(d.forward_nets["teacher0"]).__name__,
            "regressor": [p.detach().clone() for p in f.method.parameters()],
        }
    finally:
        tdist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32", reason="needs gloo (POSIX)")
@pytest.mark.parametrize("world", [1, 2])
def test_prepare_distributed_matches_one_process(world, tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(world, str(tmp_path / "store"), results), nprocs=world, join=True)
        res = dict(results)
    # single process, full batch, rank 0's initial weights
    d = Distiller(mlp(seed=0), [mlp(32, seed=1)], "kd")
    opt = torch.optim.SGD(d.parameters(), lr=0.1)
    for _ in range(3):
        out = d(X, Y)
        opt.zero_grad()
        d.backward(out)
        d.step(opt, out)
    for r in range(world):
        for a, b in zip(res[r]["student"], d.student.parameters()):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
        assert res[r]["teacher"] != "DistributedDataParallel"
    if world == 2:
        assert res[0]["wrapped"] == "DistributedDataParallel"
        assert all(torch.equal(a, b) for a, b in zip(res[0]["regressor"], res[1]["regressor"]))
    assert os.environ.get("RANK") is None


def test_precomputed_teacher_logits_replace_the_teacher_forward():
    t = mlp(32, seed=1)
    d = Distiller(mlp(), [t], "kd")
    live = d(X, Y)
    calls = []
    t.register_forward_hook(lambda *a: calls.append(1))
    replayed = d(X, Y, teacher_logits={"teacher0": live.logits["teacher0"]})
    assert not calls
    torch.testing.assert_close(replayed.loss, live.loss, rtol=0, atol=0)
