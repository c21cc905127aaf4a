"""Evaluation under ``torch.inference_mode``: top-1, top-5, loss, per-class accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate_batches", "evaluate_model", "predict", "predict_batches"]


@torch.inference_mode()
def predict(model: nn.Module, x_uint8: torch.Tensor, augment: nn.Module, *, batch_size: int = 256,
            device: torch.device | str = "cpu", autocast_ctx=None) -> torch.Tensor:
    """Logits [N, C] (float32, CPU) of ``model`` on a uint8 image tensor, in eval mode."""
    was = model.training
    model.eval()
    outs = []
    try:
        for i in range(0, x_uint8.shape[0], batch_size):
            xb = augment(x_uint8[i : i + batch_size].to(device, non_blocking=True))
            if autocast_ctx is not None:
                with autocast_ctx():
                    out = model(xb)
            else:
                out = model(xb)
            outs.append(out.float().cpu())
    finally:
        model.train(was)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate_model(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, augment: nn.Module, *,
                   batch_size: int = 256, device: torch.device | str = "cpu", num_classes: int | None = None,
                   autocast_ctx=None) -> dict:
    """Accuracy figures of ``model`` on a split: {"top1", "top5", "loss", "per_class", "n"} (percentages)."""
    logits = predict(model, x_uint8, augment, batch_size=batch_size, device=device, autocast_ctx=autocast_ctx)
    return metrics_from_logits(logits, y, num_classes)


@torch.inference_mode()
def predict_batches(model: nn.Module, batches, augment: nn.Module, *, device: torch.device | str = "cpu",
                    autocast_ctx=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, classes]`` (float32, CPU) and labels ``[N]`` over an iterable of uint8 batches
    ``(x [B, C, H, W], y [B])``, in eval mode: a streamed split is never held whole."""
    was = model.training
    model.eval()
    outs, ys = [], []
    try:
        for xb, yb in batches:
            x = augment(xb.to(device, non_blocking=True))
            if autocast_ctx is not None:
                with autocast_ctx():
                    out = model(x)
            else:
                out = model(x)
            outs.append(out.float().cpu())
            ys.append(yb)
    finally:
        model.train(was)
    logits = torch.cat(outs) if outs else torch.empty(0)
    return logits, (torch.cat(ys) if ys else torch.empty(0, dtype=torch.int64))


def evaluate_batches(model: nn.Module, batches, augment: nn.Module, *, device: torch.device | str = "cpu",
                     num_classes: int | None = None, autocast_ctx=None) -> dict:
    """:func:`evaluate_model` over an iterable of uint8 batches (see :func:`predict_batches`)."""
    logits, y = predict_batches(model, batches, augment, device=device, autocast_ctx=autocast_ctx)
    return metrics_from_logits(logits, y, num_classes)


def metrics_from_logits(logits: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> dict:
    y = y.long().cpu()
    n = int(y.numel())
    c = logits.shape[1]
    pred = logits.argmax(1)
    top1 = (pred == y).float().mean().item() * 100 if n else 0.0
    k = min(5, c)
    topk = logits.topk(k, dim=1).indices
    top5 = (topk == y[:, None]).any(1).float().mean().item() * 100 if n else 0.0
    loss = F.cross_entropy(logits, y).item() if n else 0.0
    nc = num_classes or c
    per_class = []
    for cls in range(nc):
        m = y == cls
        per_class.append((pred[m] == cls).float().mean().item() * 100 if m.any() else float("nan"))
    return {"top1": top1, "top5": top5, "loss": loss, "per_class": per_class, "n": n}


def load_run_model(path: str, name: str = "student", *, which: str = "best") -> tuple[nn.Module, dict]:
    """The network ``name`` of a run folder (``best.pt``/``last.pt``) or checkpoint file, and the checkpoint.

    A view of :func:`adaptkd.engine.rundir.load_model` (which returns a summary of the checkpoint instead)."""
    from adaptkd.engine.rundir import load_model, read_checkpoint

    model, _ = load_model(path, name, which=which)
    return model, read_checkpoint(path, which)[1]


def evaluate(run: str, *, which: str = "best", device: str = "cpu", data=None) -> dict:
    """Evaluate every learner of a run (folder or checkpoint) on its dataset's test split (streamed
    when the run streamed). ``data``: the data a run trained from Python was given (``data.name:
    python``); without it such a run is refused by name."""
    from adaptkd.data import Augment, test_pipeline

    model, ckpt = load_run_model(run, which=which)
    pipe = test_pipeline(ckpt["config"], dataset=data)
    d = ckpt["config"].get("data", {})
    aug = Augment(pipe.mean, pipe.std, train=False)
    out = {"epoch": ckpt["epoch"], "checkpoint": which, "networks": {}}
    try:
        for name in ckpt["models"]:
            m = model if name == "student" else load_run_model(run, name, which=which)[0]
            out["networks"][name] = evaluate_batches(m, pipe.test_batches(int(d.get("eval_batch_size", 256))), aug,
                                                     device=device, num_classes=pipe.num_classes)
    finally:
        pipe.close()
    return out
