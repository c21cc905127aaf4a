"""UNIC multi-teacher distillation: losses against float64 references written from the spec, the
standardiser, teacher dropping, the ladder, heterogeneous teachers, and tiny end-to-end runs."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from adaptkd.config import ConfigError, load_config
from adaptkd.engine.checkpoint import load_checkpoint
from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import Trainer
from adaptkd.losses import standardize, teacher_drop_weights, unic_token_loss
from adaptkd.losses.tokens import unic_pair_loss
from adaptkd.methods import StepIn
from adaptkd.methods._unic_parts import Ladder, gathered_moments, tokens_of
from adaptkd.methods.unic import unic_momentum
from tests.helpers import tiny_config

D64 = torch.float64
VIT8 = {"arch": "vit_tiny", "args": {"img_size": 8, "patch_size": 2, "depth": 2}}
TEACHERS = [{"arch": "cnn_small", "random_init": True},
            {"arch": "vit_small", "random_init": True, "args": {"img_size": 8, "patch_size": 4, "depth": 2}}]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models run faster without threading on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vit_trainer(tmp_path_factory):
    """A ViT student with a CNN and a ViT teacher (not trained; read-only use)."""
    return Trainer(unic_cfg(tmp_path_factory.mktemp("unic") / "r"))


def close(a, b, rel=1e-9):
    a, b = torch.as_tensor(a, dtype=D64), torch.as_tensor(b, dtype=D64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item() if a.numel() else 0.0
    assert err <= rel, err


# ---------------------------------------------------------------------------- float64 references
def ref_token(s, t):
    """One token's loss, written out: 0.5·(1 − s·t / (max(|s|, eps)·max(|t|, eps))) + 0.5·mean smoothL1."""
    eps = 1e-8
    cos = sum(a * b for a,
              b in zip(s, t)) / (max(math.sqrt(sum(a * a for a in s)), eps) * max(math.sqrt(sum(b * b for b in t)),
                                                                                  eps))
    sl1 = sum(0.5 * (a - b) ** 2 if abs(a - b) < 1.0 else abs(a - b) - 0.5 for a, b in zip(s, t)) / len(s)
    return 0.5 * (1.0 - cos) + 0.5 * sl1


def ref_image_loss(st, tt):
    """[1+N][D] nested lists -> mean(cls loss, mean patch loss)."""
    cls = ref_token(st[0], tt[0])
    patch = sum(ref_token(a, b) for a, b in zip(st[1:], tt[1:])) / (len(st) - 1)
    return 0.5 * (cls + patch)


def ref_drop(losses, draws, p, normalize):
    k, b = len(losses), len(losses[0])
    keep = [[0.0] * b for _ in range(k)]
    for j in range(b):
        col = [losses[i][j] for i in range(k)]
        best = col.index(max(col))  # first on ties
        for i in range(k):
            keep[i][j] = 1.0 if (i == best or not draws[i][j] < p) else 0.0
    if normalize == "global":
        tot = sum(map(sum, keep))
        return [[v / tot for v in row] for row in keep]
    per = [sum(keep[i][j] for i in range(k)) for j in range(b)]
    return [[keep[i][j] / (b * per[j]) for j in range(b)] for i in range(k)]


def ref_standardize(x, mean, std, m):
    dims = tuple(range(x.dim() - 1))
    n = x.numel() // x.shape[-1]
    bm = x.sum(dims, keepdim=True) / n
    bs = (((x - bm) ** 2).sum(dims, keepdim=True) / (n - 1)).sqrt() + 1e-6
    y = (x - mean) / (std + 1e-6)
    return y, (1 - m) * mean + m * bm, (1 - m) * std + m * bs


# ---------------------------------------------------------------------------- token loss
def test_token_loss_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, 6, generator=g, dtype=D64) * 1.5  # both smooth-L1 regimes
    t = torch.randn(3, 5, 6, generator=g, dtype=D64)
    got = unic_token_loss(s, t)
    assert got.shape == (3,)
    close(got, [ref_image_loss(s[i].tolist(), t[i].tolist()) for i in range(3)])
    # degenerate tokens: a zero student token (cosine 0, the eps clamp) stays finite and exact
    s[0, 0] = 0.0
    close(unic_token_loss(s, t)[0], ref_image_loss(s[0].tolist(), t[0].tolist()))


def test_token_loss_properties_and_errors():
    t = torch.randn(2, 4, 8, dtype=D64)
    assert unic_token_loss(t.clone(), t).abs().max() < 1e-12  # identical tokens: no loss
    # class and patch widths may differ (CNN teacher: pooled feature vs positions)
    sc, sp, tc, tp = (torch.randn(*shape, dtype=D64) for shape in [(2, 3), (2, 4, 5), (2, 3), (2, 4, 5)])
    want = [0.5 * ref_token(sc[i].tolist(), tc[i].tolist())
            + 0.5 * sum(ref_token(a, b) for a, b in zip(sp[i].tolist(), tp[i].tolist())) / 4 for i in range(2)]
    close(unic_pair_loss(sc, sp, tc, tp), want)
    with pytest.raises(ValueError, match="differ"):
        unic_token_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="N >= 1"):
        unic_token_loss(torch.randn(2, 1, 4), torch.randn(2, 1, 4))


# ---------------------------------------------------------------------------- teacher dropping
@pytest.mark.parametrize("normalize", ["global", "per_image"])
def test_drop_weights_match_reference_with_ties_and_draws_at_p(normalize):
    g = torch.Generator().manual_seed(1)
    losses = torch.rand(3, 12, generator=g, dtype=D64)
    losses[:, 0] = 0.7  # a three-way tie: teacher 0 protected
    losses[1, 1] = losses[2, 1] = 2.0  # tie for the max between 1 and 2: teacher 1 protected
    draws = torch.rand(3, 12, generator=g, dtype=D64)
    draws[:, 2] = 0.5  # exactly p: kept (strict u < p drops)
    draws[:, 3] = 0.4999999999
    w = teacher_drop_weights(losses, draws, 0.5, normalize)
    close(w, ref_drop(losses.tolist(), draws.tolist(), 0.5, normalize))
    assert w[0, 0] > 0 and w[1, 1] > 0
    assert (w[:, 2] > 0).all()
    assert ((w[:, 3] > 0).sum() == 1)
    close(w.sum(), 1.0, rel=1e-12)


def test_drop_weights_are_detached_and_limits():
    losses = torch.rand(4, 9, dtype=D64, requires_grad=True)
    draws = torch.rand(4, 9, dtype=D64)
    w = teacher_drop_weights(losses * 2, draws, 0.5)
    assert not w.requires_grad and w.grad_fn is None
    # p = 0: every teacher kept -> the plain mean; p = 1: the mean of each image's maximum
    close((teacher_drop_weights(losses, draws, 0.0) * losses).sum().detach(), losses.mean().detach())
    close((teacher_drop_weights(losses, draws, 1.0) * losses).sum().detach(), losses.max(0).values.mean().detach())
    close((teacher_drop_weights(losses, draws, 1.0, "per_image") * losses).sum().detach(),
          losses.max(0).values.mean().detach())


def test_drop_weights_global_vs_per_image_example():
    # the spec's example: 4 images, 2 teachers; image 0 keeps both, the others one
    losses = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]], dtype=D64)
    draws = torch.tensor([[0.0] * 4, [0.9, 0.1, 0.1, 0.1]], dtype=D64)
    w = teacher_drop_weights(losses, draws, 0.5)
    close(w.sum(0), [0.4, 0.2, 0.2, 0.2])
    close(teacher_drop_weights(losses, draws, 0.5, "per_image").sum(0), [0.25] * 4)
    with pytest.raises(ValueError, match="p must"):
        teacher_drop_weights(losses, draws, 1.5)
    with pytest.raises(ValueError, match="normalize"):
        teacher_drop_weights(losses, draws, 0.5, "mean")
    with pytest.raises(ValueError, match="draws"):
        teacher_drop_weights(losses, draws[:, :2], 0.5)


# ---------------------------------------------------------------------------- standardiser
@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 5)])
def test_standardize_sequence_matches_hand_computation(shape):
    g = torch.Generator().manual_seed(2)
    state_shape = (1,) * (len(shape) - 1) + (shape[-1],)
    mean, std = torch.zeros(state_shape, dtype=D64), torch.ones(state_shape, dtype=D64)
    rmean, rstd = mean.clone(), std.clone()
    steps = 5
    for i in range(steps):
        x = torch.randn(shape, generator=g, dtype=D64) * (1 + i) + i
        m = unic_momentum(i, steps)
        y, mean, std = standardize(x, mean, std, m)
        ry, rmean, rstd = ref_standardize(x, rmean, rstd, m)
        close(y, ry), close(mean, rmean), close(std, rstd)
        if i == 0:  # first step: targets unstandardised (state 0/1), state = the batch statistics
            close(y, x / (1 + 1e-6))
            close(mean, x.mean(tuple(range(x.dim() - 1)), keepdim=True))
    y, m2, s2 = standardize(x, mean, std, 0.0)  # eval: momentum 0 leaves the state unchanged
    assert torch.equal(m2, mean) and torch.equal(s2, std)
    with pytest.raises(ValueError, match="must be"):
        standardize(x, mean.squeeze(0), std, 0.5)


def test_momentum_schedule():
    n = 100
    assert unic_momentum(0, n) == 1.0
    close(unic_momentum(50, n), 0.001 + 0.5 * 0.999)
    close(unic_momentum(99, n), 0.001 + 0.5 * 0.999 * (1 + math.cos(math.pi * 99 / 100)))
    assert unic_momentum(500, n) == unic_momentum(99, n)
    vals = [unic_momentum(i, n) for i in range(n)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


def test_gathered_moments_over_ranks_equal_the_global_batch():
    """Two simulated ranks (threads, an in-place SUM all-reduce) with uneven batches."""
    x = torch.randn(10, 4, 7, dtype=D64) * 3 + 1
    parts = [x[:3], x[3:]]
    bar, slots, res = threading.Barrier(2), [None, None], [None, None]

    def reducer(rank):
        def reduce(t):
            slots[rank] = t.clone()
            bar.wait()
            total = slots[0] + slots[1]
            bar.wait()
            t.copy_(total)
        return reduce

    def run(rank):
        res[rank] = gathered_moments(parts[rank], reducer(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    flat = x.reshape(-1, 7)
    for mean, std, count in res:
        close(mean.reshape(-1), flat.mean(0))
        close(std.reshape(-1), flat.std(0) + 1e-6)
        assert count.item() == 40
    mean, std, count = gathered_moments(x)  # single process: local statistics
    close(mean.reshape(-1), flat.mean(0)), close(std.reshape(-1), flat.std(0) + 1e-6)


# ---------------------------------------------------------------------------- ladder
def test_ladder_is_the_sum_of_per_block_projectors():
    torch.manual_seed(0)
    lad = Ladder([6, 6, 8], [6, 6, 32], [5, 7]).double()
    assert [fc.out_features for fc in lad.fc1] == [12, 12, 64]  # two teachers side by side
    xs = [torch.randn(3, 4, d, dtype=D64) for d in (6, 6, 8)]
    with torch.no_grad():  # non-zero biases, so that every bias is checked too
        for prm in lad.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    outs = lad(xs)
    assert [tuple(o.shape) for o in outs] == [(3, 4, 5), (3, 4, 7)]
    for t in range(2):
        want = sum(lad.projector(t, k)(xs[k]) for k in range(3))
        close(outs[t], want, rel=1e-10)
        proj = lad.projector(t, 2)
        assert isinstance(proj[1], torch.nn.GELU) and proj[0].out_features == 32
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lad.parameters())


def test_tokens_of_cnn_maps_and_vit_tokens():
    fmap = torch.randn(2, 5, 4, 4)
    cls, patch = tokens_of(fmap, None, (2, 2))
    close(cls, fmap.mean((2, 3)), rel=1e-6)
    close(patch, F.adaptive_avg_pool2d(fmap, 2).flatten(2).transpose(1, 2), rel=1e-6)
    toks = torch.randn(2, 1 + 16, 3)
    cls, patch = tokens_of(toks, (4, 4), (2, 2))
    assert torch.equal(cls, toks[:, 0]) and patch.shape == (2, 4, 3)
    close(patch[:, 0], toks[:, [1, 2, 5, 6]].mean(1), rel=1e-6)  # top-left 2x2 patch tokens, row-major


# ---------------------------------------------------------------------------- the method
def unic_cfg(out, student=VIT8, teachers=TEACHERS, **method):
    cfg = tiny_config(out, "unic", teachers=teachers)
    cfg["student"] = dict(student)
    cfg["method"].update(method)
    cfg["optim"].update({"name": "adamw", "lr": 1e-3, "weight_decay": 0.03})
    cfg["run"]["max_steps_per_epoch"] = 3
    return cfg


def step_inputs(tr, n=16, step=0):
    x = tr.eval_aug(tr.data.train.x[:n].to(tr.device))
    logits, feats = tr.forward_all(x)
    return StepIn(x=x, y=tr.data.train.y[:n], epoch=1, step=step, logits=logits, feats=feats)


def test_heterogeneous_teachers_tokens_and_widths(vit_trainer):
    tr = vit_trainer
    m = tr.method
    assert m.blocks == ["blocks.0", "blocks.1"] and m.grid == (4, 4)
    assert m.t_tap == {"teacher0": "stages.2", "teacher1": "norm"}
    assert m.cls_ladder.out_dims == [64, 384] and m.patch_ladder.out_dims == [64, 384]
    assert m.cls_ladder.hidden_dims == [192, 4 * 192]
    inp = step_inputs(tr)
    cnn = tr.networks["teacher0"]
    with torch.no_grad():
        fmap = cnn.stages(inp.x)
    cls, patch = m.teacher_tokens("teacher0", inp)
    close(cls, cnn.pool(fmap).flatten(1), rel=1e-6)  # the pooled feature (head input)
    close(patch, F.adaptive_avg_pool2d(fmap, (4, 4)).flatten(2).transpose(1, 2), rel=1e-6)  # 2x2 -> 4x4
    cls, patch = m.teacher_tokens("teacher1", inp)  # ViT: final-norm tokens, 2x2 grid resized to 4x4
    assert cls.shape == (16, 384) and patch.shape == (16, 16, 384)
    # method parameters train with the student and never enter the student network
    assert set(tr.method.param_groups()) == {"student"}
    assert not any("ladder" in k for k in tr.networks["student"].state_dict())


def test_standardiser_state_through_the_method_and_eval(tmp_path):
    tr = Trainer(unic_cfg(tmp_path / "r", drop_prob=0.0))
    m = tr.method
    ref = {(n, k): (getattr(m, f"stats_{n}_{k}_mean").double().clone(),
                    getattr(m, f"stats_{n}_{k}_std").double().clone())
           for n in ("teacher0", "teacher1") for k in ("cls", "patch")}
    for step in range(3):
        inp = step_inputs(tr, step=step)
        mom = unic_momentum(step, m.total_steps)
        for n in ("teacher0", "teacher1"):
            for k, x in zip(("cls", "patch"), m.teacher_tokens(n, inp)):
                _, a, b = ref_standardize(x.double(), *ref[(n, k)], mom)
                ref[(n, k)] = (a, b)
        out = m(inp)
        close(out.signals["unic/momentum"], mom, rel=1e-6)
        for (n, k), (a, b) in ref.items():
            close(getattr(m, f"stats_{n}_{k}_mean"), a, rel=1e-4)
            close(getattr(m, f"stats_{n}_{k}_std"), b, rel=1e-4)
    before = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("stats_")}
    m.eval()
    out = m(step_inputs(tr, step=3))
    assert float(out.signals["unic/momentum"]) == 0.0
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items() if k.startswith("stats_"))
    # p = 0 keeps every teacher: the distillation term is the plain mean over teachers and images
    assert float(out.signals["unic/kept/teacher0"]) == float(out.signals["unic/kept/teacher1"]) == 1.0


def test_cnn_student_stages_and_options(tmp_path):
    tr = Trainer(unic_cfg(tmp_path / "r", student={"arch": "cnn_tiny"}, student_blocks=[-1], ce_weight=0.0,
                          kd_weight=0.5))
    m = tr.method
    assert m.blocks == ["stages.2"] and m.grid == (2, 2)
    out = m(step_inputs(tr))
    assert set(out.losses["student"]) == {"unic", "kd"}
    out.losses["student"]["unic"].backward()
    assert all(p.grad is not None for p in m.parameters())
    assert all(p.grad is not None for p in tr.networks["student"].stages.parameters())


def test_bad_options_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="teacher_taps"):
        load_config(unic_cfg(tmp_path / "a", teacher_taps={"teacher7": "fc"}))
    with pytest.raises(ConfigError, match="drop_prob"):
        load_config(unic_cfg(tmp_path / "b", drop_prob=1.5))
    with pytest.raises(ConfigError, match="student_blocks"):
        Trainer(unic_cfg(tmp_path / "c", student_blocks=[5]))
    with pytest.raises(ConfigError, match="student_blocks"):
        Trainer(unic_cfg(tmp_path / "d", student_blocks=["blocks.9"]))
    with pytest.raises(ConfigError, match="teacher_taps"):
        Trainer(unic_cfg(tmp_path / "e", teacher_taps={"teacher0": "nope"}))


def test_end_to_end_signals_export_and_exact_resume(tmp_path):
    from tests.helpers import crash_after_epoch

    full_cfg = unic_cfg(tmp_path / "full")
    full_cfg["optim"]["epochs"] = 2
    full = Trainer(full_cfg)
    full.fit()
    part_cfg = unic_cfg(tmp_path / "part")
    part_cfg["optim"]["epochs"] = 2
    crash_after_epoch(Trainer(part_cfg), 1)
    resumed = Trainer(load_config(part_cfg), resume=True)
    resumed.fit()
    a, b = full.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # ladders + standardiser state
    assert torch.equal(full.method._gen.get_state(), resumed.method._gen.get_state())  # draw generator
    sa, sb = full.networks["student"].state_dict(), resumed.networks["student"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    recs = read_metrics(tmp_path / "full" / "metrics.jsonl")
    step = [r for r in recs if r["kind"] == "step"][0]
    for key in ("unic/loss/teacher0", "unic/kept/teacher1", "unic/coeff/teacher0", "unic/momentum",
                "loss/student/unic"):
        assert key in step, key
    ep = [r for r in recs if r["kind"] == "epoch"]
    assert 0 < ep[0]["unic/epoch_kept/teacher1"] <= 1
    ep_b = [r for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["unic/epoch_kept/teacher0"] for r in ep] == [r["unic/epoch_kept/teacher0"] for r in ep_b]
    ck = load_checkpoint(tmp_path / "full" / "last.pt")
    assert not any("ladder" in k or "stats_" in k for k in ck["models"]["student"])
    assert any(k.startswith("stats_teacher1_patch") for k in ck["method"]) and "drop_generator" in ck["method_extra"]


def test_draws_are_seeded_per_rank(vit_trainer):
    from adaptkd.methods import MethodContext, build_method

    tr = vit_trainer
    def draws(rank):
        ctx = MethodContext(networks=tr.networks, learners=["student"], frozen=["teacher0", "teacher1"], arches={},
                            num_classes=10, epochs=1, steps_per_epoch=4, sample_input=tr.ctx.sample_input, seed=3,
                            rank=rank)
        return torch.rand(5, generator=build_method("unic", {}, ctx)._gen)
    assert torch.equal(draws(0), draws(0)) and not torch.equal(draws(0), draws(1))
    assert torch.equal(draws(1), torch.rand(5, generator=torch.Generator().manual_seed(4)))  # seed + rank
    # under DDP a label-free student leaves its head without gradient: refused up front
    ctx = MethodContext(networks=tr.networks, learners=["student"], frozen=["teacher0", "teacher1"], arches={},
                        num_classes=10, epochs=1, steps_per_epoch=4, sample_input=tr.ctx.sample_input, world_size=2)
    with pytest.raises(ConfigError, match="ce_weight"):
        build_method("unic", {"ce_weight": 0.0}, ctx)


def test_linear_probe_runs_on_penultimate_features():
    from adaptkd.data import Augment, build_data
    from adaptkd.engine.probe import extract_features, linear_probe
    from adaptkd.models import build_model

    data = build_data("digits")
    torch.manual_seed(0)
    net = build_model("cnn_tiny", 10, in_channels=1)
    feats = extract_features(net, data.test.x[:8], Augment(data.mean, data.std, train=False))
    net.eval()
    with torch.no_grad():
        want = net.pool(net.stages(Augment(data.mean, data.std, train=False)(data.test.x[:8]))).flatten(1)
    close(feats, want, rel=1e-5)
    res = linear_probe(net, data, l2=(1e-3,), max_iter=60)
    assert res["feature_dim"] == 32 and res["n_test"] == len(data.test)
    assert 30 < res["top1"] <= 100  # random conv features of digits are far above chance (10 %)
