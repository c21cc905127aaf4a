"""Evaluation under ``torch.inference_mode``: top-1, top-5, loss, per-class accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate_model", "predict"]


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
    """The network ``name`` of a run folder (``best.pt``/``last.pt``) or checkpoint file, and the checkpoint."""
    import os
    from pathlib import Path

    from adaptkd.engine.checkpoint import FORMAT, CheckpointError, load_checkpoint, load_into
    from adaptkd.models import build_model

    p = Path(os.path.expanduser(path))
    if p.is_dir():
        cand = p / f"{which}.pt"
        p = cand if cand.exists() else p / "last.pt"
    ckpt = load_checkpoint(p)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not an adaptkd run checkpoint (it has no architecture metadata)")
    meta = ckpt["meta"]
    if name not in ckpt["models"]:
        raise CheckpointError(f"{str(p)!r} holds networks {sorted(ckpt['models'])}, not {name!r}")
    args = dict(meta.get("args", {}).get(name, {}))
    if meta.get("in_channels", 3) != 3:
        args.setdefault("in_channels", meta["in_channels"])
    model = build_model(meta["arch"][name], meta["num_classes"], **args)
    load_into(model, ckpt["models"][name], source=str(p), arch=meta["arch"][name])
    model.eval()
    return model, ckpt


def evaluate(run: str, *, which: str = "best", device: str = "cpu") -> dict:
    """Evaluate every learner of a run (folder or checkpoint) on its dataset's test split."""
    from adaptkd.config import load_config
    from adaptkd.data import Augment, data_from_config

    model, ckpt = load_run_model(run, which=which)
    cfg = load_config(ckpt["config"], check=False)
    d = cfg.data
    data = data_from_config(d, download=False)
    aug = Augment(data.mean, data.std, train=False)
    out = {"epoch": ckpt["epoch"], "checkpoint": which, "networks": {}}
    for name in ckpt["models"]:
        m = model if name == "student" else load_run_model(run, name, which=which)[0]
        out["networks"][name] = evaluate_model(m, data.test.x, data.test.y, aug, batch_size=d.eval_batch_size,
                                               device=device, num_classes=data.num_classes)
    return out
