"""adaptkd.lightning.DistillationModule with Lightning's Trainer on CPU: an offline, a multi-teacher and an
online method, signals in the logger, gradient balancing, and an exact checkpoint resume."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch", reason="PyTorch Lightning is not installed (extra `lightning`)")

from adaptkd.distiller import Distiller  # noqa: E402 - after the importorskip above
from adaptkd.lightning import DistillationModule  # noqa: E402 - after the importorskip above
from adaptkd.models import build_model  # noqa: E402 - after the importorskip above

G = torch.Generator().manual_seed(0)
XS = torch.randn(64, 1, 8, 8, generator=G)
YS = torch.randint(0, 10, (64,), generator=G)
OPTIM = {"name": "sgd", "lr": 0.05, "epochs": 2, "schedule": "cosine", "milestones": []}


def loader() -> DataLoader:
    return DataLoader(TensorDataset(XS, YS), batch_size=16, shuffle=False)


def net(arch: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 10, in_channels=1)


def distiller(method: str, **kw) -> Distiller:
    teachers = {"dtkd": 1, "unic": 2, "switokd": 1, "kd": 1}[method]
    ts = [net("cnn_small" if method != "switokd" else "cnn_tiny", 10 + i) for i in range(teachers)]
    return Distiller(net("cnn_tiny", 0), ts, method, example_input=XS[:4], epochs=2, steps_per_epoch=4, **kw)


def trainer(tmp_path, epochs: int, logger=False) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False,
                      enable_model_summary=False, logger=logger, default_root_dir=str(tmp_path),
                      enable_checkpointing=False, num_sanity_val_steps=0, deterministic=True)


def weights(module: DistillationModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.distiller.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("method,manual", [("dtkd", False), ("unic", False), ("switokd", True)])
def test_fit_then_resume_from_a_checkpoint_is_exact(method, manual, tmp_path):
    straight = DistillationModule(distiller(method), optim=OPTIM)
    assert straight.automatic_optimization is not manual
    trainer(tmp_path / "a", 2).fit(straight, loader(), loader())  # with validation: teachers stay in eval

    first = DistillationModule(distiller(method), optim=OPTIM)
    t1 = trainer(tmp_path / "b", 1)
    t1.fit(first, loader())
    ckpt = tmp_path / "b.ckpt"
    t1.save_checkpoint(ckpt)
    resumed = DistillationModule(distiller(method), optim=OPTIM)
    trainer(tmp_path / "c", 2).fit(resumed, loader(), ckpt_path=str(ckpt))

    assert resumed.distiller.global_step == straight.distiller.global_step == 8
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for t in straight.distiller.teachers.values():  # frozen teachers stayed in eval mode through validation
        assert not t.training


def test_lightning_equals_the_plain_loop():
    """One epoch of DTKD through Lightning == the same steps in a plain loop (same lr schedule)."""
    from adaptkd.engine.optim import set_lr

    module = DistillationModule(distiller("dtkd"), optim=OPTIM)
    pl.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
               logger=False, enable_checkpointing=False).fit(module, loader())
    d = distiller("dtkd")
    opt = d.build_optimizers(OPTIM)["student"]
    cfg = d.optim_configs(OPTIM)["student"]
    for i, (x, y) in enumerate(loader()):
        out = d(x, y, epoch=1)
        opt.zero_grad()
        out.loss.backward()
        set_lr(opt, cfg, 1, i / 4)
        opt.step()
    for k, v in weights(module).items():
        torch.testing.assert_close(v, d.state_dict()[k], rtol=0, atol=0, msg=k)


def test_signals_reach_the_logger_and_gradient_balance_is_manual(tmp_path):
    module = DistillationModule(distiller("kd", balance={"name": "gradient", "over": "logits"}), optim=OPTIM)
    assert not module.automatic_optimization
    logger = pl.loggers.CSVLogger(str(tmp_path), name="run")
    t = pl.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                   logger=logger, log_every_n_steps=1, enable_checkpointing=False)
    t.fit(module, loader(), loader())
    with open(logger.log_dir + "/metrics.csv") as f:
        cols = set(next(csv.reader(f)))
    assert {"train/loss/student/kd", "train/balance/student/lambda", "train/weight/student/kd",
            "val/acc", "train/loss_epoch"} <= cols

    module = DistillationModule(distiller("dtkd"), optim=OPTIM)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="dtkd")
    pl.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
               logger=logger, log_every_n_steps=1, enable_checkpointing=False).fit(module, loader())
    with open(logger.log_dir + "/metrics.csv") as f:
        cols = set(next(csv.reader(f)))
    assert {"train/dtkd/student_T_mean", "epoch/train/dtkd/teacher_T_mean"} <= cols


def test_users_own_optimiser():
    module = DistillationModule(distiller("dtkd"), optim=lambda d: torch.optim.Adam(d.parameters(), lr=1e-3))
    before = [p.detach().clone() for p in module.distiller.student.parameters()]
    pl.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
               logger=False, enable_checkpointing=False).fit(module, loader())
    assert any(not torch.equal(a, b) for a, b in zip(before, module.distiller.student.parameters()))


def test_a_teacher_cache_replays_through_lightning_exactly(tmp_path, teacher_ckpt):
    """``ReplayedViews.loader``: two epochs of a teacher cache's views through Lightning, no teacher forward,
    the same weights as Lightning fed the same views with a live teacher."""
    from adaptkd.config import load_config
    from adaptkd.engine.trainer import Trainer
    from adaptkd.replay import ReplayedViews, build_cache
    from tests.helpers import tiny_config

    cfg = tiny_config(tmp_path / "run", "kd", teachers=[{"arch": "cnn_small", "checkpoint": teacher_ckpt}],
                      data__flip=True)
    cfg["teachers_cache"] = {"path": str(tmp_path / "cache"), "dtype": "fp32"}
    build_cache(load_config(cfg), log=lambda s: None)
    views = ReplayedViews(cfg)
    teacher = Trainer({k: v for k, v in cfg.items() if k != "teachers_cache"}, log=lambda s: None).networks["teacher0"]
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))

    def module() -> DistillationModule:
        return DistillationModule(Distiller(net("cnn_tiny", 0), [teacher], "kd", steps_per_epoch=len(views)),
                                  optim=OPTIM)

    replayed = module()
    trainer(tmp_path / "r", 2).fit(replayed, views.loader(lambda: replayed.current_epoch + 1))
    assert not calls and replayed.distiller.global_step == 2 * len(views) == 12
    live = module()
    by_epoch = {e: [(x, y) for x, y, _ in views.epoch(e)] for e in (1, 2)}
    views.close()

    class LiveViews:
        def __iter__(self):
            return iter(by_epoch[live.current_epoch + 1])

        def __len__(self):
            return len(by_epoch[1])

    trainer(tmp_path / "l", 2).fit(live, LiveViews())
    assert calls  # the live teacher ran
    a, b = weights(replayed), weights(live)
    for k in a:
        assert torch.equal(a[k], b[k]), k
