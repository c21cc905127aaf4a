"""Optimisers and the learning-rate schedule (set per iteration, no host sync)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from adaptkd.config import OptimConfig

__all__ = ["build_optimizer", "lr_factor", "set_lr"]


def _groups(params: Iterable[nn.Parameter], cfg: OptimConfig) -> list[dict]:
    params = [p for p in params if p.requires_grad]
    if not cfg.no_decay_1d:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = _groups(params, cfg)
    if cfg.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    elif cfg.name == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    else:
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    for g in opt.param_groups:
        g["initial_lr"] = cfg.lr
    return opt


def lr_factor(cfg: OptimConfig, epoch: int, frac: float) -> float:
    """Multiplier of the base lr at ``epoch`` (from 1) and fraction ``frac`` ∈ [0,1) of it.

    ``step``: γ^(number of milestones strictly below ``epoch``) — the mdistiller rule (epochs 1..150
    at full lr for milestone 150). ``cosine``: half-cosine from 1 to ``min_lr/lr`` over all epochs,
    per iteration. Linear warm-up over ``warmup_epochs`` (per iteration) multiplies either.
    """
    t = (epoch - 1) + frac  # epochs elapsed
    if cfg.schedule == "step":
        f = cfg.gamma ** sum(1 for m in cfg.milestones if m < epoch)
    elif cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-12)
        progress = min(max((t - cfg.warmup_epochs) / span, 0.0), 1.0)
        floor = cfg.min_lr / cfg.lr
        f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        f = 1.0
    if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
        f *= t / cfg.warmup_epochs
    return f


def set_lr(opt: torch.optim.Optimizer, cfg: OptimConfig, epoch: int, frac: float) -> float:
    lr = cfg.lr * lr_factor(cfg, epoch, frac)
    for g in opt.param_groups:
        g["lr"] = lr
    return lr
