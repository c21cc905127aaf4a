"""One path: a ~25-line hand-written loop around the Distiller and ``adaptkd train`` give identical numbers.

Same config, same seed, CPU: every epoch's test accuracy and mean training loss terms, and the
final weights of every learner, are equal bit for bit, for kd, dtkd, unic, switokd and kd with
gradient balancing. The loop below is what ``examples/own_loop.py`` shows, with the engine's data
order (``iterate_batches``), augmentation stream and learning-rate schedule.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from adaptkd.cli import main as cli
from adaptkd.config import load_config
from adaptkd.data import Augment, data_from_config, iterate_batches, num_batches
from adaptkd.distiller import Distiller
from adaptkd.engine.checkpoint import load_checkpoint
from adaptkd.engine.evaluate import evaluate_model
from adaptkd.engine.logger import read_metrics
from adaptkd.engine.optim import set_lr
from tests.helpers import tiny_config


def own_loop(cfg) -> tuple[list[dict], Distiller]:
    """Train ``cfg`` with a plain loop; per epoch: test accuracy and mean loss terms."""
    d, rc = cfg.data, cfg.run
    torch.manual_seed(rc.seed)
    data = data_from_config(d)
    steps = min(num_batches(len(data.train), d.batch_size, drop_last=d.drop_last), rc.max_steps_per_epoch or 10**9)
    eval_aug = Augment(data.mean, data.std, train=False)
    distiller = Distiller.from_config(cfg, data=data)
    opts, cfgs = distiller.build_optimizers(), distiller.optim_configs()
    aug = Augment(data.mean, data.std, crop_padding=d.crop_padding, flip=d.flip, train=True)
    gen = torch.Generator().manual_seed(rc.seed * 1000003)
    history = []
    for epoch in range(1, cfg.optim.epochs + 1):
        distiller.train()
        sums: dict[str, torch.Tensor] = {}
        batches = iterate_batches(data.train, d.batch_size, shuffle=True, seed=rc.seed, epoch=epoch,
                                  drop_last=d.drop_last)
        for i, (xb, yb) in zip(range(steps), batches):
            out = distiller(aug(xb, gen), yb, epoch=epoch)
            for opt in opts.values():
                opt.zero_grad(set_to_none=True)
            distiller.backward(out)
            for name in out.stepping:
                set_lr(opts[name], cfgs[name], epoch, i / steps)
            distiller.step(opts, out)
            for learner, terms in out.terms.items():
                for term, v in terms.items():
                    key = f"train/{learner}/{term}"
                    sums[key] = sums[key] + v.detach() if key in sums else v.detach().clone()
        distiller.epoch_end(epoch)
        acc = evaluate_model(distiller.student, data.test.x, data.test.y, eval_aug)["top1"]
        history.append({"test/acc/student": acc, **{k: float(v) / steps for k, v in sums.items()}})
    return history, distiller


CASES = {
    "kd": {},
    "dtkd": {"method__warmup_epochs": 2},
    "unic": {},
    "switokd": {},
    "kd+gradient": {"balance": {"name": "gradient", "over": "logits"}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_written_loop_equals_adaptkd_train(case, tmp_path, teacher_ckpt):
    method = case.split("+")[0]
    if method == "switokd":
        teachers = [{"arch": "cnn_tiny", "trainable": True}]
    elif method == "unic":
        teachers = [{"arch": "cnn_small", "checkpoint": teacher_ckpt}] * 2
    else:
        teachers = [{"arch": "cnn_small", "checkpoint": teacher_ckpt}]
    over = {k: v for k, v in CASES[case].items() if "__" in k}
    raw = tiny_config(tmp_path / "run", method, teachers=teachers, **over)
    raw.update({k: v for k, v in CASES[case].items() if "__" not in k})
    raw["run"]["threads"] = 1
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli(["train", str(path)]) in (0, None)
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")

    history, distiller = own_loop(load_config(raw))
    assert len(history) == len(epochs) == 2
    for mine, theirs in zip(history, epochs):
        for k, v in mine.items():
            assert v == theirs[k], (case, k, v, theirs[k])
    for name, net in distiller.learners.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, ckpt["models"][name][k]), (case, name, k)
    for k, v in distiller.method.state_dict().items():
        assert torch.equal(v, ckpt["method"][k]), (case, k)
