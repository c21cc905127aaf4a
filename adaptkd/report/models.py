"""The models of a report: who is evaluated and measured (teachers, students, peers), re-evaluation on the
test split, FLOPs / size / CPU latency and throughput, and the student-teacher agreement."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptkd.report.runs import RunData

__all__ = [
    "ModelEntry",
    "agreement_pairs",
    "collect_models",
    "data_key",
    "evaluate_models",
    "load_model",
    "measure_models",
    "top1",
    "top5",
]


@dataclass
class ModelEntry:
    key: tuple[str, ...]
    label: str
    role: str  # teacher | student | peer
    arch: str
    run: RunData
    name: str
    weights: str  # "run" (a learner in the run's checkpoint), "file" (a teacher checkpoint), "none"
    source: str  # checkpoint path, or "" when unknown
    num_classes: int
    in_channels: int
    image_size: int
    data_key: str
    card: dict[str, Any] = field(default_factory=dict)
    card_source: str = "summary.json"
    summary_acc: float | None = None
    summary_top5: float | None = None
    eval: dict[str, Any] | None = None
    note: str = ""
    model: Any = None
    teacher_of: list[str] = field(default_factory=list)

    @property
    def evaluation(self) -> dict[str, Any]:
        """``eval`` of a model known to be evaluated (``ValueError`` otherwise)."""
        if self.eval is None:
            raise ValueError(f"model {self.label!r} was not evaluated")
        return self.eval


def _resolve_ckpt(path: str, run_dir: Path) -> Path | None:
    """A teacher checkpoint path as written in a run's config: as given, else relative to the run's ancestors."""
    p = Path(os.path.expanduser(path))
    if p.is_file():
        return p
    if not p.is_absolute():
        for anc in [run_dir, *run_dir.resolve().parents]:
            cand = anc / p
            if cand.is_file():
                return cand
    return None


def data_key(cfg: dict[str, Any]) -> str:
    d = cfg.get("data", {})
    return json.dumps({k: d.get(k) for k in ("name", "root", "image_size", "num_classes", "train_size", "test_size",
                                             "data_seed")}, sort_keys=True)


def collect_models(runs: list[RunData], which: str) -> list[ModelEntry]:
    from adaptkd.export import run_checkpoint_path

    def checkpoint_of(run: RunData) -> str:
        try:
            return str(run_checkpoint_path(run.path, which).resolve())
        except Exception:  # noqa: BLE001 - no checkpoint yet: entries still come from config/summary
            return ""

    shown = {str(r.path.resolve()): checkpoint_of(r) for r in runs}  # run folder -> the checkpoint reported
    entries: dict[tuple[str, ...], ModelEntry] = {}
    order: list[tuple[str, ...]] = []
    for run in runs:
        summ = run.summary
        meta_shape = _shape_from_run(run)
        ck_path = shown[str(run.path.resolve())]
        for name, role, net in run.networks():
            trainable = role != "teacher" or bool(net.get("trainable"))
            arch = str(net.get("arch", "?"))
            if trainable:
                key = (ck_path, name) if ck_path else ("run", str(run.path), name)
                weights, source = ("run", ck_path) if ck_path else ("none", "")
                card = dict(summ.get("learners", {}).get(name, {}))
            else:
                ck = net.get("checkpoint")
                resolved = _resolve_ckpt(ck, run.path) if ck else None
                if resolved is not None:
                    key = (_same_model(resolved.resolve(), shown), "student")
                    weights, source = "file", str(resolved)
                else:
                    key = ("missing", str(run.path), name)
                    weights, source = "none", str(ck or "")
                card = dict(summ.get("teachers", {}).get(name, {}))
            label = run.label if name == "student" else f"{run.label}/{name}"
            if key in entries:
                e = entries[key]
                if role == "teacher":
                    e.role = "teacher"
                    e.teacher_of.append(run.label)
                if not e.card.get("latency_b1") and card.get("latency_b1"):
                    e.card = card
                continue
            e = ModelEntry(key=key, label=label, role="teacher" if role == "teacher" else role, arch=arch, run=run,
                           name=name, weights=weights, source=source, num_classes=meta_shape[0],
                           in_channels=meta_shape[1], image_size=meta_shape[2], data_key=data_key(run.config),
                           card=card, summary_acc=card.get("final_acc"), summary_top5=card.get("final_top5"))
            if role == "teacher":
                e.teacher_of.append(run.label)
            if weights == "none":
                e.note = ("random init" if net.get("random_init") else
                          f"checkpoint {source!r} not found" if source else "no checkpoint")
            entries[key] = e
            order.append(key)
    return [entries[k] for k in order]


def _same_model(ckpt: Path, shown: dict[str, str]) -> str:
    """A teacher checkpoint inside a reported run folder that is byte-identical to the checkpoint reported
    for that run (``last.pt`` = ``best.pt`` without a validation split) is that run's model: one entry."""
    import filecmp

    owner = shown.get(str(ckpt.parent))
    if owner and owner != str(ckpt) and Path(owner).is_file() and filecmp.cmp(owner, ckpt, shallow=False):
        return owner
    return str(ckpt)


def _shape_from_run(run: RunData) -> tuple[int, int, int]:
    """(num_classes, in_channels, image_size) from the run's checkpoint metadata or summary."""
    from adaptkd.engine.checkpoint import load_checkpoint

    for name in ("last.pt", "best.pt"):
        p = run.path / name
        if p.is_file():
            try:
                meta = load_checkpoint(p).get("meta", {})
                return int(meta.get("num_classes", 0)), int(meta.get("in_channels", 3)), int(meta.get("image_size", 32))
            except Exception:  # noqa: BLE001 - reported when the models are loaded
                break
    return int(run.summary.get("num_classes", 0)), 3, 32


class _DataCache:
    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}

    def get(self, run: RunData):
        """The run's test pipeline (in memory or streamed, as the run read it)."""
        from adaptkd.data import test_pipeline

        key = data_key(run.config)
        if key not in self.cache:
            self.cache[key] = test_pipeline(run.config)
        return self.cache[key]


def load_model(e: ModelEntry, which: str, networks: dict[str, Any] | None):
    from adaptkd.engine.checkpoint import load_into, load_state_dict_for
    from adaptkd.export import build_arch, rebuild_network
    from adaptkd.models.registry import needs_rgb

    if e.model is not None:
        return e.model
    if networks and e.name in networks:
        e.model = networks[e.name].eval()
        e.note = ""
        return e.model
    if e.weights == "run":
        e.model, _ = rebuild_network(e.run.path, e.name, which=which)
    elif e.weights == "file":
        cfg = dict(next(c for n, _, c in e.run.networks() if n == e.name))
        args = dict(cfg.get("args") or {})
        if e.in_channels != 3 and not needs_rgb(e.arch):
            args.setdefault("in_channels", e.in_channels)
        model = build_arch(e.arch, args, e.num_classes, e.in_channels, what=f"network {e.name!r} of {e.run.label!r}")
        state = load_state_dict_for(e.source, arch=e.arch, num_classes=e.num_classes)
        load_into(model, state, source=e.source, arch=e.arch)
        e.model = model.eval()
    else:
        raise FileNotFoundError(e.note or "no weights")
    return e.model


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this model cannot be evaluated/measured" (reported on the page, not raised)."""
    from adaptkd.errors import AdaptkdError

    return (AdaptkdError, FileNotFoundError, OSError)


def _teacher_view(e: ModelEntry, model, pipe, aug):
    """A teacher's evaluation input: the eval view converted to its input spec, as in training."""
    if e.role != "teacher":
        return aug
    from torch import nn

    from adaptkd.config import NetConfig
    from adaptkd.engine.views import data_spec, teacher_spec
    from adaptkd.models.inputs import InputView

    cfg = NetConfig.model_validate(dict(next(c for n, _, c in e.run.networks() if n == e.name)))
    view = InputView(data_spec(pipe), teacher_spec(cfg, model, pipe, field=e.name, name=e.name))
    return aug if view.identity else nn.Sequential(aug, view)


def evaluate_models(models: list[ModelEntry], which: str, device: str, networks, notes: list[str]) -> None:
    from adaptkd.data import Augment
    from adaptkd.engine.evaluate import metrics_from_logits, predict_batches

    data = _DataCache()
    for e in models:
        if e.weights == "none" and not (networks and e.name in networks):
            continue  # e.note already says why (random init, checkpoint not found)
        try:
            pipe = data.get(e.run)
            model = load_model(e, which, networks)
            if not getattr(model, "has_logits", True):
                e.note = (e.note + "; " if e.note else "") + "a backbone: no accuracy"
                continue
            aug = _teacher_view(e, model, pipe, Augment(pipe.mean, pipe.std, train=False)).to(device)
            bs = int(e.run.config.get("data", {}).get("eval_batch_size", 256) or 256)
            logits, y = predict_batches(model.to(device), pipe.test_batches(bs), aug, device=device)
            model.cpu()
            m = metrics_from_logits(logits, y, pipe.num_classes)
            m["pred"] = logits.argmax(1)
            m["y"] = y.long().cpu()
            m["class_names"] = list(pipe.class_names)
            e.eval = m
        except _expected_errors() as exc:
            e.note = (e.note + "; " if e.note else "") + f"not evaluated: {str(exc).splitlines()[0]}"
            notes.append(f"{e.label}: {e.note}")


def measure_models(models: list[ModelEntry], which: str, networks, threads: int | None, remeasure: bool) -> None:
    """Fill missing card entries; latency/throughput of all models that need it are timed together,
    interleaved (one block of each model per round), so the rows of the table are comparable."""
    import torch

    from adaptkd.engine.measure import (
        checkpoint_size_bytes,
        cpu_latency_interleaved,
        flops_per_image,
    )

    timed: dict[str, list[ModelEntry]] = {"latency_b1": [], "throughput_b64": []}
    for e in models:
        need = [k for k in ("params", "size_bytes", "flops", "latency_b1", "throughput_b64") if e.card.get(k) is None]
        if remeasure:  # timings of one session on one machine: comparable across the rows
            need += [k for k in ("latency_b1", "throughput_b64") if k not in need]
        if not need:
            continue
        try:
            model = load_model(e, which, networks)
        except _expected_errors() as exc:
            e.note = e.note or f"not measured: {str(exc).splitlines()[0]}"
            continue
        shape = (e.in_channels, e.image_size, e.image_size)
        if "params" in need:
            e.card["params"] = sum(p.numel() for p in model.parameters())
        if "size_bytes" in need:
            e.card["size_bytes"] = checkpoint_size_bytes(model)
        if "flops" in need:
            e.card["flops"] = flops_per_image(model, shape)
        for k, group in timed.items():
            if k in need:
                group.append(e)
    for key, batch, th in (("latency_b1", 1, 1), ("throughput_b64", 64, threads or torch.get_num_threads())):
        group = timed[key]
        if not group:
            continue
        res = cpu_latency_interleaved([e.model for e in group], [(e.in_channels, e.image_size, e.image_size)
                                                                 for e in group], batch=batch, threads=th)
        for e, r in zip(group, res):
            e.card[key] = r
            e.card_source = "measured by this report"


def top1(e: ModelEntry) -> float | None:
    return e.eval["top1"] if e.eval else e.summary_acc


def top5(e: ModelEntry) -> float | None:
    return e.eval["top5"] if e.eval else e.summary_top5


def agreement_pairs(models: list[ModelEntry]) -> list[dict[str, Any]]:
    import torch

    out = []
    teachers = [m for m in models if m.role == "teacher" and m.eval]
    for s in models:
        if s.role != "student" or not s.eval:
            continue
        peers = [m for m in models if m.role == "peer" and m.eval and m.run is s.run]  # online KD: mutual teachers
        for t in teachers + peers:
            if t is s or t.data_key != s.data_key or s.evaluation["pred"].shape != t.evaluation["pred"].shape:
                continue
            ps, pt, y = s.evaluation["pred"], t.evaluation["pred"], s.evaluation["y"]
            n = max(int(y.numel()), 1)
            agree = ps == pt
            sr, tr = ps == y, pt == y

            def pct(mask: torch.Tensor, n: int = n) -> float:
                return 100.0 * int(mask.sum()) / n

            out.append({"student": s.label, "teacher": t.label, "agree": pct(agree), "agree_right": pct(agree & sr),
                        "agree_wrong": pct(agree & ~sr), "teacher_only": pct(~agree & tr & ~sr),
                        "student_only": pct(~agree & sr & ~tr), "disagree_wrong": pct(~agree & ~sr & ~tr),
                        "n": int(y.numel()), "own_teacher": s.run.label in t.teacher_of or t.run is s.run})
    return out
