"""The end of a run: the final evaluation and what ``summary.json`` holds."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from torch import nn

from adaptkd.engine.checkpoint import load_checkpoint, load_into
from adaptkd.engine.evaluate import evaluate_batches
from adaptkd.engine.rundir import write_summary

if TYPE_CHECKING:
    from adaptkd.engine.trainer import Trainer

__all__ = ["best_checkpoint_test_acc", "run_summary"]


def run_summary(tr: Trainer) -> dict[str, Any]:
    """Evaluate every network of ``tr`` on the test split and write ``summary.json`` (rank 0): per learner
    and teacher its accuracy and model card; ``best_acc``: the test top-1 of ``best.pt``'s student.
    Ends the data workers."""
    from adaptkd.engine.measure import model_card

    ev = tr.evaluate()
    summary: dict[str, Any] = {
        "method": tr.cfg.method.name,
        "dataset": tr.pipe.name,
        "num_classes": tr.num_classes,
        "epochs": tr.epoch,
        "steps": tr.global_step,
        "best_acc": ev["student"]["top1"],
        "best_epoch": tr.best_epoch,
        "selection": "validation" if tr.pipe.n_val else "last epoch (no validation split)",
        "learners": {},
        "teachers": {},
    }
    if tr.pipe.n_val:
        summary["best_val_acc"] = tr.best_acc
        summary["best_acc"] = best_checkpoint_test_acc(tr)
    shape = (tr.pipe.in_channels, tr.pipe.image_size, tr.pipe.image_size)
    for name in tr.learners:
        card = model_card(tr.networks[name], shape, latency=tr.cfg.run.latency and tr.dist.is_main)
        summary["learners"][name] = {"arch": tr.net_cfgs[name].arch, "final_acc": ev[name]["top1"],
                                     "final_top5": ev[name]["top5"], **card}
    for name in tr.frozen:
        net, spec = tr.networks[name], tr.teacher_inputs.specs[name]
        m = {"top1": None, "top5": None}
        if getattr(net, "has_logits", True):  # a backbone has no accuracy
            m = evaluate_batches(net, tr.pipe.test_batches(tr.cfg.data.eval_batch_size),
                                 nn.Sequential(tr.eval_aug, tr.teacher_inputs.view(name)),
                                 device=tr.device, num_classes=tr.num_classes, autocast_ctx=tr.autocast)
        card = model_card(net, (len(spec.mean), *spec.size), latency=tr.cfg.run.latency and tr.dist.is_main)
        summary["teachers"][name] = {"arch": tr.net_cfgs[name].arch, "final_acc": m["top1"], "final_top5": m["top5"],
                                     "input": spec.describe(), **card}
    summary["final_acc"] = summary["learners"]["student"]["final_acc"]
    if tr.dist.is_main:
        write_summary(tr.out, summary)
    tr.pipe.close()  # data worker processes end with the run (a later evaluate() starts new ones)
    return summary


def best_checkpoint_test_acc(tr: Trainer) -> float:
    """Test top-1 of the student in ``best.pt`` (the best validation epoch)."""
    path = tr.out / "best.pt"
    if tr.best_epoch == tr.epoch or not path.is_file():
        return float(tr.evaluate()["student"]["top1"])
    net = copy.deepcopy(tr.networks["student"])
    load_into(net, load_checkpoint(path, map_location=tr.device)["models"]["student"], source=str(path),
              arch=tr.net_cfgs["student"].arch)
    m = evaluate_batches(net, tr.pipe.test_batches(tr.cfg.data.eval_batch_size), tr.eval_aug,
                         device=tr.device, num_classes=tr.num_classes, autocast_ctx=tr.autocast)
    return float(m["top1"])

# ------------------------------------------------------------------------------------------
