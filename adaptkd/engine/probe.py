"""Linear probe: a student's frozen features judged by a linear classifier fitted on them.

UNIC-style students are judged downstream by a logistic regression on their frozen features
(``docs/methods/unic.md``). Here the feature is the network's *penultimate* output — the input of its
classifier head (``head_name``): the pooled feature of a CNN, the final-norm class token of a ViT.

    from adaptkd.engine.probe import linear_probe
    res = linear_probe(student, data)          # data: a DataBundle (adaptkd.data.build_data)
    res["top1"]                                 # test accuracy (%) of the probe

The probe is multinomial logistic regression on z-scored features (train statistics), fitted
full-batch with L-BFGS; its L2 strength is chosen on a held-out part of the train split (seeded)
from a small grid, then the probe is refitted on the whole train split. Deterministic on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptkd.taps import FeatureTaps

__all__ = ["extract_features", "fit_logistic", "linear_probe"]


@torch.inference_mode()
def extract_features(model: nn.Module, x_uint8: Tensor, augment: nn.Module, *, head: str | None = None,
                     batch_size: int = 512, device: torch.device | str = "cpu") -> Tensor:
    """Penultimate features [N, F] (float32, on ``device``): the input of ``model``'s head, in eval mode.

    ``head`` defaults to the zoo attribute ``model.head_name``; ``augment`` is the eval-mode
    normalisation (``Augment(mean, std, train=False)``).
    """
    head = head or getattr(model, "head_name", None)
    if not head:
        raise ValueError("extract_features: the model has no `head_name`; pass head='module.path' of its classifier")
    was = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        with FeatureTaps(model, [head], capture="input", detach=True) as taps:
            for i in range(0, x_uint8.shape[0], batch_size):
                model(augment(x_uint8[i:i + batch_size].to(device, non_blocking=True)))
                out.append(taps.outputs[head].float().flatten(1))
    finally:
        model.train(was)
    return torch.cat(out)


def fit_logistic(x: Tensor, y: Tensor, num_classes: int, *, l2: float = 1e-4,
                 max_iter: int = 300) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression: minimise ``CE(xW + b, y) + ½·l2·‖W‖²`` with L-BFGS.

    Returns (W [F, C], b [C]). ``x`` should already be standardised.
    """
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"fit_logistic: expected x [N, F] and y [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    w = torch.zeros(x.shape[1], num_classes, device=x.device, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(num_classes, device=x.device, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)
    y = y.to(x.device)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _accuracy(x: Tensor, y: Tensor, w: Tensor, b: Tensor) -> float:
    return float(((x @ w + b).argmax(1) == y.to(x.device)).float().mean()) * 100.0


def linear_probe(model: nn.Module, data: Any, *, l2: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2),
                 val_fraction: float = 0.2, seed: int = 0, max_iter: int = 300, batch_size: int = 512,
                 device: torch.device | str | None = None, head: str | None = None) -> dict[str, Any]:
    """Test accuracy of a linear probe on ``model``'s frozen penultimate features.

    Args:
        model: the network (its classifier head is ignored; only its input is used).
        data: a :class:`adaptkd.data.DataBundle` (train and test splits, mean/std).
        l2: candidate L2 strengths; with more than one, each is fitted on ``1 − val_fraction`` of
            the train split and scored on the rest (a seeded permutation), and the best is refitted
            on the whole train split.
        seed: seeds the held-out split.

    Returns:
        {"top1": test accuracy %, "train_top1": %, "l2": chosen strength,
         "val_top1": {l2: held-out accuracy %}, "feature_dim": F, "n_train": N, "n_test": M}
    """
    from adaptkd.data import Augment

    if not l2:
        raise ValueError("linear_probe: l2 needs at least one value")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"linear_probe: val_fraction must be in (0, 1), got {val_fraction}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    aug = Augment(data.mean, data.std, train=False).to(dev)
    xtr = extract_features(model, data.train.x, aug, head=head, batch_size=batch_size, device=dev)
    xte = extract_features(model, data.test.x, aug, head=head, batch_size=batch_size, device=dev)
    ytr, yte = data.train.y.to(dev), data.test.y.to(dev)
    mu, sd = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    c = int(data.num_classes)
    val: dict[float, float] = {}
    best = float(l2[0])
    if len(l2) > 1:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(xtr.shape[0], generator=g).to(dev)
        n_val = max(1, int(round(val_fraction * xtr.shape[0])))
        vi, fi = perm[:n_val], perm[n_val:]
        for lam in l2:
            w, b = fit_logistic(xtr[fi], ytr[fi], c, l2=float(lam), max_iter=max_iter)
            val[float(lam)] = _accuracy(xtr[vi], ytr[vi], w, b)
        best = max(val, key=lambda k: (val[k], k))  # ties: the stronger regularisation
    w, b = fit_logistic(xtr, ytr, c, l2=best, max_iter=max_iter)
    return {"top1": _accuracy(xte, yte, w, b), "train_top1": _accuracy(xtr, ytr, w, b), "l2": best,
            "val_top1": val, "feature_dim": int(xtr.shape[1]), "n_train": int(xtr.shape[0]),
            "n_test": int(xte.shape[0])}
