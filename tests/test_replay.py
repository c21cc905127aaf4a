"""Teacher replay: cached teacher logits and augmentation parameters stand in for a live teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch

from adaptkd.config import ConfigError, load_config
from adaptkd.data import Augment
from adaptkd.engine.checkpoint import CheckpointError
from adaptkd.engine.logger import read_metrics
from adaptkd.engine.trainer import Trainer
from adaptkd.losses import kd_loss
from adaptkd.replay import build_cache, cache_file, decode_topk, encode_topk
from tests.helpers import crash_at_step, tiny_config

#: fp16 storage: logits round to 11 significant bits; a step's losses stay within this relative error
FP16_LOSS_RTOL = 2e-3


def kd_config(tmp_path, teacher_ckpt, method="kd", *, dtype="fp32", topk=None, teachers=1, **over):
    cfg = tiny_config(tmp_path / f"run-{method}-{dtype}-{topk}-{teachers}", method,
                      teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}] * teachers, **over)
    cfg["data"]["flip"] = True  # both augmentation parameters in play
    cfg["teachers_cache"] = {"path": str(tmp_path / "cache"), "dtype": dtype, "topk": topk}
    return cfg


def live(cfg: dict, out) -> dict:
    return {**{k: v for k, v in cfg.items() if k != "teachers_cache"}, "run": {**cfg["run"], "out": str(out)}}


def untimed(path) -> list[dict]:
    def keep(k: str) -> bool:
        return not (k.startswith("time/") or k.endswith("per_s"))

    return [{k: v for k, v in r.items() if keep(k)} for r in read_metrics(path)]


def test_draw_then_apply_is_the_augmentation():
    aug = Augment([0.5, 0.4, 0.3], [0.2, 0.3, 0.4], crop_padding=3, flip=True)
    x = torch.randint(0, 256, (7, 3, 9, 9), dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    params = aug.draw(7, "cpu", g2)
    assert params.shape == (7, 3) and int(params[:, :2].max()) <= 6 and set(params[:, 2].tolist()) <= {0, 1}
    assert torch.equal(aug(x, g1), aug.apply(x, params))
    assert torch.equal(g1.get_state(), g2.get_state())  # the same random stream is consumed
    assert aug.eval().draw(7, "cpu") is None and not aug.random


def test_replayed_run_equals_live_run_fp32(tmp_path, teacher_ckpt):
    cfg = kd_config(tmp_path, teacher_ckpt)
    made = build_cache(load_config(cfg), log=lambda s: None)
    assert made["views"] == 2 * 6 * 32
    rep = Trainer(cfg)
    assert rep.replay is not None
    calls, in_epoch = [], []
    rep.networks["teacher0"].register_forward_hook(lambda *a: calls.append(bool(in_epoch)))
    train_epoch = rep.train_epoch

    def counted(*a, **k):
        in_epoch.append(1)
        try:
            return train_epoch(*a, **k)
        finally:
            in_epoch.clear()

    rep.train_epoch = counted
    rep.fit()
    assert calls and not any(calls)  # the teacher ran for the final evaluation only, never in a training step
    Trainer(live(cfg, tmp_path / "live")).fit()
    a, b = untimed(tmp_path / "live" / "metrics.jsonl"), untimed(rep.out / "metrics.jsonl")
    assert a == b  # every loss, accuracy and weight of every step record and epoch: identical


@pytest.mark.parametrize("method,teachers", [("kd", 1), ("dkd", 1), ("dtkd", 1), ("compose", 1), ("kd", 2)])
def test_replayed_step_equals_live_step(tmp_path, teacher_ckpt, method, teachers):
    over = {}
    if method == "compose":
        over["method__terms"] = [{"loss": "dtkd", "weight": 3.0}, {"loss": "dkd", "beta": 8}, {"loss": "ce"}]
    for dtype, rtol in (("fp32", 1e-6), ("fp16", FP16_LOSS_RTOL)):
        cfg = kd_config(tmp_path / dtype, teacher_ckpt, method, dtype=dtype, teachers=teachers, **over)
        build_cache(load_config(cfg), log=lambda s: None)
        rep, ref = Trainer(cfg), Trainer(live(cfg, tmp_path / dtype / "live"))
        for tr in (rep, ref):
            tr.networks["student"].train()
        xb, yb = next(iter(__import__("adaptkd.data", fromlist=["iterate_batches"]).iterate_batches(
            rep.data.train, 32, shuffle=True, seed=0, epoch=1)))
        rep.replay.start_epoch(1)
        out_r, _ = rep.train_step(xb, yb, 1, 0.0, rep.replay.batch(1, 0, xb.shape[0]))
        out_l, _ = ref.train_step(xb, yb, 1, 0.0)
        for term, v in out_l.losses["student"].items():
            r, v = float(out_r.losses["student"][term].detach()), float(v.detach())
            assert abs(r - v) <= rtol * abs(v) + 1e-12, (dtype, term, r, v)


def test_fp16_run_ends_within_tolerance(tmp_path, teacher_ckpt):
    cfg = kd_config(tmp_path, teacher_ckpt, dtype="fp16")
    build_cache(load_config(cfg), log=lambda s: None)
    rep_dir = tmp_path / "rep"
    rep = Trainer(live(cfg, rep_dir) | {"teachers_cache": cfg["teachers_cache"]}).fit()
    ref = Trainer(live(cfg, tmp_path / "live")).fit()
    def epochs(p):
        return [r for r in read_metrics(p) if r["kind"] == "epoch"]

    for a, b in zip(epochs(tmp_path / "live" / "metrics.jsonl"), epochs(rep_dir / "metrics.jsonl"), strict=True):
        for key in ("train/student/kd", "train/student/ce"):
            assert math.isclose(a[key], b[key], rel_tol=FP16_LOSS_RTOL), (key, a[key], b[key])
    assert abs(rep["final_acc"] - ref["final_acc"]) <= 1.0  # at most a few test images of 359 flip


def test_resume_with_replay_is_exact(tmp_path, teacher_ckpt):
    from tests.helpers import crash_after_epoch

    cfg = kd_config(tmp_path, teacher_ckpt, optim__epochs=3)
    build_cache(load_config(cfg), log=lambda s: None)
    full = Trainer({**cfg, "run": {**cfg["run"], "out": str(tmp_path / "full")}}).fit()
    crash_after_epoch(Trainer(cfg), 1)
    resumed = Trainer(load_config(cfg), resume=True).fit()
    assert resumed["final_acc"] == full["final_acc"]
    assert untimed(tmp_path / "full" / "metrics.jsonl") == untimed(f"{cfg['run']['out']}/metrics.jsonl")


def test_resume_mid_epoch_with_replay_is_exact(tmp_path, teacher_ckpt):
    cfg = kd_config(tmp_path, teacher_ckpt, run__checkpoint_every_steps=4)
    build_cache(load_config(cfg), log=lambda s: None)
    full = Trainer({**cfg, "run": {**cfg["run"], "out": str(tmp_path / "full")}}).fit()
    crashed = Trainer(cfg)
    crash_at_step(crashed, 10)  # epoch 2 of 6 steps: the checkpoint at step 8 is inside it
    ck = torch.load(f"{cfg['run']['out']}/last.pt", weights_only=False)
    assert ck["in_epoch"]["epoch"] == 2 and ck["in_epoch"]["step"] == 2
    resumed = Trainer(load_config(cfg), resume=True).fit()
    assert resumed["final_acc"] == full["final_acc"] and resumed["steps"] == full["steps"] == 12
    assert untimed(tmp_path / "full" / "metrics.jsonl") == untimed(f"{cfg['run']['out']}/metrics.jsonl")


@pytest.mark.parametrize("method", ["fitnet", "afd", "unic", "dml"])
def test_uncacheable_methods_are_refused_by_name(tmp_path, teacher_ckpt, method):
    cfg = kd_config(tmp_path, teacher_ckpt, method)
    if method == "dml":
        cfg["teachers"] = [{"arch": "cnn_small", "trainable": True}]
    with pytest.raises(ConfigError, match=rf"teachers_cache`: method {method!r}|teachers_cache`: needs"):
        load_config(cfg)


def test_more_epochs_than_cached_is_refused(tmp_path, teacher_ckpt):
    cfg = kd_config(tmp_path, teacher_ckpt)
    build_cache(load_config(cfg), log=lambda s: None)
    cfg["optim"]["epochs"] = 3
    with pytest.raises(ConfigError, match=r"optim.epochs`: 3 epochs, but the teacher cache .* holds 2; a cache is"):
        Trainer(cfg)
    cfg["teachers_cache"]["epochs"] = 2
    with pytest.raises(ConfigError, match=r"teachers_cache.epochs`: 2 cached epochs for optim.epochs=3"):
        load_config(cfg)


def test_mismatch_missing_and_truncated_caches_are_refused(tmp_path, teacher_ckpt):
    cfg = kd_config(tmp_path, teacher_ckpt)
    with pytest.raises(CheckpointError, match="does not exist; build it with `adaptkd cache-teacher"):
        Trainer(cfg)
    build_cache(load_config(cfg), log=lambda s: None)
    other = json.loads(json.dumps(cfg))
    other["data"]["batch_size"] = 16
    with pytest.raises(ConfigError, match=r"data.batch_size: the cache has 32, this run has 16"):
        Trainer(other)
    other = json.loads(json.dumps(cfg))
    other["run"]["seed"] = 1
    with pytest.raises(ConfigError, match=r"run.seed: the cache has 0, this run has 1"):
        Trainer(other)
    other = json.loads(json.dumps(cfg))
    other["teachers"] = [{"arch": "cnn_small", "random_init": True}]
    with pytest.raises(ConfigError, match=r"teachers.0.weights_sha256: the cache's teacher 'teacher0' has other"):
        Trainer(other)
    path = cache_file(cfg["teachers_cache"]["path"], 0, 1)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="is truncated or damaged"):
        Trainer(cfg)
    path.write_bytes(b"garbage!" + data[8:])
    with pytest.raises(CheckpointError, match="not an adaptkd teacher cache"):
        Trainer(cfg)


def test_topk_encoding_is_the_stated_approximation(teacher_ckpt, tmp_path):
    torch.manual_seed(0)
    logits = torch.randn(64, 2, 10) * 3
    values, indices, rest = encode_topk(logits, 4)
    full = decode_topk(values, indices, rest, 10)
    p, q = logits.softmax(-1), full.softmax(-1)
    top = p.gather(-1, indices)
    assert torch.allclose(q.gather(-1, indices), top, atol=1e-6)  # top-k probabilities exact at T=1
    assert torch.allclose(full.logsumexp(-1), logits.logsumexp(-1), atol=1e-5)  # the rest's mass exact
    tail = q.scatter(-1, indices, 0.0)
    assert torch.allclose(tail.max(-1).values * 6, 1 - top.sum(-1), atol=1e-6)  # spread evenly
    # the KD loss at T=4 with a (briefly trained, so flat) digits teacher: the error the approximation
    # costs is large for a small k (docs/replay.md), 8 of 10 classes keeps it within 3 %
    cfg = kd_config(tmp_path, teacher_ckpt, dtype="fp32", topk=8)
    build_cache(load_config(cfg), log=lambda s: None)
    rep = Trainer(cfg)
    rep.replay.start_epoch(1)
    batch = rep.replay.batch(1, 0, 32)
    xb = rep.data.train.x[rep.replay.file.rows("index", 0, 32).long()]
    x = rep.train_aug.apply(xb, batch.params)
    with torch.no_grad():
        t = rep.networks["teacher0"](x)
        s = rep.networks["student"].eval()(x)
    exact, approx = kd_loss(s, t, 4.0), kd_loss(s, batch.logits["teacher0"], 4.0)
    assert torch.equal(batch.logits["teacher0"].topk(8).indices.sort().values, t.topk(8).indices.sort().values)
    assert abs(float(approx) - float(exact)) <= 0.03 * float(exact)
    errors = [float((kd_loss(s, decode_topk(*encode_topk(t, k), 10), 4.0) - exact).abs()) for k in (1, 3, 5, 8)]
    assert errors == sorted(errors, reverse=True)  # more classes kept, less error


def test_topk_must_be_below_the_classes(tmp_path, teacher_ckpt):
    cfg = kd_config(tmp_path, teacher_ckpt, topk=10)
    with pytest.raises(ConfigError, match=r"teachers_cache.topk`: 10 is not below the 10 classes"):
        build_cache(load_config(cfg), log=lambda s: None)


def test_cli_cache_teacher(tmp_path, teacher_ckpt, capsys):
    import yaml

    from adaptkd.cli import main

    cfg = kd_config(tmp_path, teacher_ckpt, dtype="fp16", optim__epochs=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["cache-teacher", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    file = cache_file(cfg["teachers_cache"]["path"], 0, 1)
    assert summary["path"] == str(file) and summary["bytes"] == file.stat().st_size
    # 6 steps x 32 views x (4 B index + 3x2 B params + 10x2 B logits) plus the header
    assert 192 * 30 < summary["bytes"] < 192 * 30 + 8192


@pytest.mark.parametrize("data", [{"cache": "none"}, {"augment": "imagenet", "flip": True}])
def test_streamed_pipeline_replays_its_views_exactly(tmp_path, teacher_ckpt, data):
    """Streamed batches come from DataLoader workers; their geometry (the random-resized-crop box
    with augment=imagenet) is a function of (seed, epoch, index), the on-device flip is replayed."""
    cfg = kd_config(tmp_path, teacher_ckpt, optim__epochs=1)
    cfg["data"].update(workers=0, **data)
    build_cache(load_config(cfg), log=lambda s: None)
    rep = Trainer(cfg)
    assert rep.data is None and rep.replay is not None  # streamed: no in-memory bundle
    rep.fit()
    Trainer(live(cfg, tmp_path / "live")).fit()
    assert untimed(tmp_path / "live" / "metrics.jsonl") == untimed(rep.out / "metrics.jsonl")
    header = rep.replay.file.header
    assert header["data.pipeline"] == "stream"
    assert header["data.geometry"]["kind"] == ("random_resized_crop" if "augment" in data else "center")


def test_replayed_views_feed_a_hand_written_loop_exactly(tmp_path, teacher_ckpt):
    """``ReplayedViews``: per step the very view a live run trains on, its labels and the teacher's
    logits for that view (fp32: bit for bit), ready for ``Distiller(x, y, teacher_logits=...)``."""
    from adaptkd import Distiller
    from adaptkd.replay import ReplayedViews

    cfg = kd_config(tmp_path, teacher_ckpt)
    build_cache(load_config(cfg), log=lambda s: None)
    views = ReplayedViews(cfg)
    ref = Trainer(live(cfg, tmp_path / "live"))  # draws its views from the run's own generator, as training does
    teacher = ref.networks["teacher0"]
    assert len(views) == ref.steps_per_epoch == 6 and views.teacher_names == ["teacher0"]
    d = cfg["data"]
    for epoch in (1, 2):
        batches = ref.pipe.train_batches(epoch, batch_size=d["batch_size"], seed=0, drop_last=True,
                                         stop=ref.steps_per_epoch)
        got = list(views.epoch(epoch))
        assert len(got) == 6
        for (x, y, logits), (xb, yb) in zip(got, batches):
            assert torch.equal(x, ref.train_view(xb, ref.gen)) and torch.equal(y, yb)
            with torch.no_grad():
                assert torch.equal(logits["teacher0"], teacher(x).float())
    x, y, logits = next(iter(views.epoch(1)))  # a hand-written loop's step: no teacher forward, the same loss
    distiller = Distiller(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), [teacher], "kd")
    replayed, live_out = distiller(x, y, teacher_logits=logits), distiller(x, y)
    torch.testing.assert_close(replayed.loss, live_out.loss, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"epoch 3: the teacher cache .* holds epochs 1\.\.2"):
        next(iter(views.epoch(3)))
    views.close()
    other = json.loads(json.dumps(cfg))
    other["data"]["batch_size"] = 16
    with pytest.raises(ConfigError, match=r"data.batch_size: the cache has 32, this run has 16"):
        ReplayedViews(other)
    with pytest.raises(ConfigError, match="set teachers_cache.path .* to read a cache"):
        ReplayedViews(live(cfg, tmp_path / "x"))


def test_a_random_init_teacher_is_cached_with_the_weights_its_run_builds(tmp_path):
    """`adaptkd cache-teacher` then `adaptkd train` of one config with a random-init teacher: the cache
    builder seeds and builds the networks as the run does, so the run accepts the cache."""
    cfg = tiny_config(tmp_path / "run", "kd", teachers=[{"arch": "cnn_small", "random_init": True}])
    cfg["teachers_cache"] = {"path": str(tmp_path / "cache"), "dtype": "fp32"}
    build_cache(load_config(cfg), log=lambda s: None)
    rep = Trainer(cfg, log=lambda s: None)
    ref = Trainer(live(cfg, tmp_path / "live"), log=lambda s: None)
    want, got = ref.networks["teacher0"].state_dict(), rep.networks["teacher0"].state_dict()
    assert rep.replay is not None and all(torch.equal(want[k], got[k]) for k in want)
