"""What one epoch adds up, and the reductions of logged values across ranks.

:class:`EpochTotals` keeps an epoch's running sums on the device (no host read per step): each loss
term and scalar balancer signal summed over the steps that count, correct predictions per learner,
images seen and used. A step skipped for non-finite values (``run.nonfinite: skip``) counts in the
images seen only. :meth:`EpochTotals.summary` turns them into the epoch's ``train/...`` means with
one reduction across ranks. :func:`step_values` and :func:`epoch_end_values` are the values logged
at the logging interval and at the end of an epoch, averaged over ranks under DDP; :func:`step_record`
and :func:`epoch_record` are the ``metrics.jsonl`` records written there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from adaptkd.methods import StepOut

if TYPE_CHECKING:
    from adaptkd.engine.trainer import Trainer

__all__ = ["EpochTotals", "epoch_end_values", "epoch_record", "step_record", "step_values", "sum_across_ranks"]


class EpochTotals:
    """Running sums of one epoch, on ``device``.

    ``sums[learner/term]``: the sum over used steps of each (scalar) loss term, and of each scalar
    balancer signal; ``correct[learner]``: correct top-1 predictions over used steps; ``seen``:
    images of every step; ``used_steps`` / ``used_seen``: steps / images that count in the means.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.correct: dict[str, Tensor] = {}
        self.seen = 0
        self.used_steps = 0
        self.used_seen = 0

    def add(self, out: StepOut, signals: dict[str, Tensor], y: Tensor) -> None:
        """A step that counts: its loss terms, scalar signals and correct predictions (labels ``y`` [B])."""
        sums, correct = self.sums, self.correct
        for learner, terms in out.losses.items():
            for term, v in terms.items():
                key = f"{learner}/{term}"
                sums[key] = sums[key] + v.detach() if key in sums else v.detach().clone()
        for k, v in signals.items():
            if v.dim() == 0:
                sums[k] = sums[k] + v if k in sums else v.clone()
        for learner, lg in out.logits.items():
            c = (lg.detach().argmax(1) == y).sum()
            correct[learner] = correct[learner] + c if learner in correct else c
        self.used_steps += 1
        self.used_seen += y.shape[0]

    def state_dict(self) -> dict[str, Any]:
        """The running sums on the CPU (the in-epoch checkpoint's fields)."""
        return {"seen": self.seen, "used_steps": self.used_steps, "used_seen": self.used_seen,
                "sums": {k: v.detach().cpu() for k, v in self.sums.items()},
                "correct": {k: v.detach().cpu() for k, v in self.correct.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.used_steps, self.used_seen = state["seen"], state["used_steps"], state["used_seen"]
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.correct = {k: v.to(self.device) for k, v in state["correct"].items()}

    def summary(self, world_size: int, distributed: bool) -> tuple[dict[str, float], float]:
        """``({"train/<learner>/<term>": mean over used steps of all ranks, "train/acc/<learner>": top-1 in %,
        ...}, images seen by all ranks)``; one host read (one all-reduce under DDP)."""
        values = {**self.sums, **{f"__correct/{k}": v for k, v in self.correct.items()},
                  "__used_seen": torch.tensor(float(self.used_seen), device=self.device)}
        reduced = sum_across_ranks(values, torch.tensor([float(self.seen)], device=self.device), distributed)
        total_seen = reduced.pop("__seen")
        used_total = reduced.pop("__used_seen")
        summary: dict[str, float] = {}
        for k, v in reduced.items():
            if k.startswith("__correct/"):
                summary[f"train/acc/{k.split('/', 1)[1]}"] = 100.0 * v / max(used_total, 1)
            else:
                summary[f"train/{k}"] = v / max(self.used_steps * world_size, 1)
        return summary, total_seen


def sum_across_ranks(values: dict[str, Tensor], extra: Tensor, distributed: bool) -> dict[str, float]:
    """Each scalar of ``values`` and the one-element ``extra`` (as ``"__seen"``) summed over the ranks, as floats."""
    keys = list(values)
    stacked = torch.stack([values[k].float().reshape(()) for k in keys]) if keys else extra.new_zeros(0)
    flat = torch.cat([stacked, extra])
    if distributed:
        import torch.distributed as tdist

        tdist.all_reduce(flat)
    vals = flat.tolist()
    out = {k: vals[i] for i, k in enumerate(keys)}
    out["__seen"] = vals[-1]
    return out


def step_values(out: StepOut, signals: dict[str, Tensor], hidden: Any, distributed: bool) -> dict[str, Any]:
    """Loss terms (``loss/<learner>/<term>``), balancer signals and the method's shown signals of one
    step as Python numbers; ``hidden(name)`` says which method signals stay out of the log. Under DDP
    each is the mean over ranks (one all-reduce)."""
    items = [(f"loss/{learner}/{term}", v) for learner, terms in out.losses.items() for term, v in terms.items()]
    shown = {k: v for k, v in out.signals.items() if not hidden(k)}
    items += list({**signals, **shown}.items())
    if not items:
        return {}
    if distributed:
        from adaptkd.engine.distributed import mean_across_ranks

        flat = mean_across_ranks(torch.cat([v.detach().float().reshape(-1) for _, v in items]))
        vals, i = flat.tolist(), 0
        res: dict[str, Any] = {}
        for k, v in items:
            n = v.numel()
            res[k] = vals[i] if n == 1 and v.dim() == 0 else vals[i : i + n]
            i += n
        return res
    return {k: (v.detach().float().item() if v.numel() == 1 else v.detach().float().cpu().tolist()) for k, v in items}


def epoch_end_values(vals: dict[str, Any], method_name: str, distributed: bool,
                     device: torch.device) -> dict[str, Any]:
    """A method's epoch summary ``vals``; under DDP its numbers are averaged over ranks (every rank must
    return the same fields)."""
    if not distributed:
        return vals
    from adaptkd.engine.distributed import gather_objects, mean_across_ranks

    keys = [k for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len({tuple(k) for k in gather_objects(keys)}) != 1:
        raise RuntimeError(f"method {method_name!r} returned different epoch summaries on different ranks")
    if keys:
        mean = mean_across_ranks(torch.tensor([float(vals[k]) for k in keys], dtype=torch.float64,
                                              device=device)).tolist()
        vals = {**vals, **dict(zip(keys, mean))}
    return vals


def step_record(tr: Trainer, epoch: int, out: StepOut, signals: dict[str, Tensor]) -> dict[str, Any]:
    """The record of the step ``tr`` just made (at the logging interval): its loss terms and signals
    (:func:`step_values`), each learner's term weights and learning rate; one host read."""
    rec: dict[str, Any] = {"kind": "step", "epoch": epoch, "step": tr.global_step}
    rec.update(step_values(out, signals, tr.method.spec.is_hidden, tr.dist.enabled))
    for learner, w in out.weights.items():
        for term, val in w.items():
            rec[f"weight/{learner}/{term}"] = float(val)
    for name in tr.learners:
        rec[f"lr/{name}"] = tr.optims[name].param_groups[0]["lr"]
    return rec


def epoch_record(tr: Trainer, epoch: int, train: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The record of ``epoch`` (just trained; ``train``: its :meth:`EpochTotals.summary` and timing) and whether
    its state is the best so far (``best.pt``); the method's epoch summary, the evaluation when due, the learning
    rates. Updates ``tr.best_acc`` / ``tr.best_epoch``.

    With a validation split, it is scored each epoch and chooses ``best.pt``; the test split is scored once, at
    the end of the run. Without one, the test split is scored each epoch for the curves only and ``best.pt`` is
    simply the latest epoch: nothing is selected on test."""
    rec: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": tr.global_step, **train}
    ends = tr.method.epoch_summary(tr.meter.summary())
    rec.update(epoch_end_values(ends, tr.cfg.method.name, tr.dist.enabled, tr.device))
    split = "val" if tr.pipe.n_val else "test"
    if epoch % tr.cfg.run.eval_every == 0 or epoch == tr.cfg.optim.epochs:
        for name, m in tr.evaluate(split).items():
            rec[f"{split}/acc/{name}"] = m["top1"]
            rec[f"{split}/top5/{name}"] = m["top5"]
            rec[f"{split}/loss/{name}"] = m["loss"]
    for name in tr.learners:
        rec[f"lr/{name}"] = tr.optims[name].param_groups[0]["lr"]
    if split == "test":
        tr.best_epoch = epoch
        return rec, True
    acc = rec.get("val/acc/student", -1.0)
    best = acc > tr.best_acc
    if best:
        tr.best_acc, tr.best_epoch = acc, epoch
    rec["best/val_acc/student"] = tr.best_acc
    return rec, best
