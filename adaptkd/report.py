"""Report card of one run, or a comparison of several: what a deployment engineer acts on.

``build_report(runs, out)`` writes one self-contained HTML page (``report.html``; no scripts,
no external resources) with its PNG figures beside it, the same content as Markdown
(``report.md``: tables, and every figure as text sparklines) and a manifest (``report.json``).
:func:`print_report` shows the Markdown content on a terminal with rich.

What the page holds:

* models — teacher(s) vs student(s): top-1/top-5 on the test split (re-evaluated from the
  checkpoint the export would ship, ``best.pt`` by default), parameters, checkpoint size, FLOPs
  per image (``torch.utils.flop_counter``), CPU latency at batch 1 and throughput at batch 64
  (``torch.utils.benchmark``, median of many runs, threads stated), and per student the ratios
  to its teacher;
* per-class accuracy (datasets with ≤ 20 classes);
* agreement between each student's and each teacher's predictions on the test split;
* training curves (accuracy, loss terms, learning rate, throughput, varying loss weights);
* a plot of every numeric signal the run logged to ``metrics.jsonl``: dedicated figures for the
  known families (DTKD temperatures, gradient balancing λ/a/b/c, SwitOKD gap/threshold/mode,
  UNIC per-teacher losses/kept fractions, RTK influence per teacher layer) and generic panels
  for every other signal, so a newly added method's signals appear without touching this file.

Several runs give one comparison page: one table, overlaid curves and signals.

Files are written only inside the output folder (``<run>/report`` for one run, ``out`` for a
comparison); file names are generated and checked, a symbolic link planted where a file or the
folder goes is refused, and a default folder that resolves outside its run is refused.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adaptkd.engine.trainer import RunFolderError

__all__ = [
    "ReportError",
    "RunData",
    "Report",
    "Series",
    "load_run",
    "build_report",
    "print_report",
    "signal_keys",
    "sparkline",
]

MAX_PER_CLASS = 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
_BARS = "▁▂▃▄▅▆▇█"


class ReportError(RunFolderError):
    """A run folder that cannot be read, or an output path that is unsafe to write."""


# ----------------------------------------------------------------------------------------------
# Reading runs


@dataclass
class RunData:
    """One run folder: its resolved config, ``summary.json`` (may be empty) and metrics records."""

    path: Path
    label: str
    config: dict[str, Any]
    summary: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def method(self) -> str:
        return str(self.config.get("method", {}).get("name", "?"))

    def networks(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(name, role, net_config)`` for student, teachers and peers, in config order."""
        out = [(self.config.get("student", {}).get("name") or "student", "student", self.config.get("student", {}))]
        for i, t in enumerate(self.config.get("teachers") or []):
            out.append((t.get("name") or f"teacher{i}", "teacher", t))
        for i, p in enumerate(self.config.get("peers") or []):
            out.append((p.get("name") or f"peer{i}", "peer", p))
        return out


def load_run(path: str | os.PathLike[str], label: str | None = None) -> RunData:
    """Read a run folder; :class:`ReportError` when it is not one."""
    from adaptkd.engine.logger import read_metrics

    p = Path(os.path.expanduser(str(path)))
    if not p.is_dir():
        raise ReportError(f"run folder {str(path)!r} does not exist")
    cfg_path = p / "config.yaml"
    if not cfg_path.is_file():
        raise ReportError(f"{str(path)!r} is not an adaptkd run folder (it has no config.yaml)")
    try:
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReportError(f"{str(cfg_path)!r} is not valid YAML: {exc}") from None
    summary: dict[str, Any] = {}
    if (p / "summary.json").is_file():
        try:
            summary = json.loads((p / "summary.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ReportError(f"{str(p / 'summary.json')!r} is not valid JSON: {exc}") from None
    records = read_metrics(p / "metrics.jsonl")
    return RunData(path=p, label=label or p.name or str(p), config=config, summary=summary, records=records)


def _labels(paths: list[Path]) -> list[str]:
    """Short unique labels: folder names, with parents added until they differ."""
    parts = [list(p.resolve().parts) for p in paths]
    depth = 1
    while True:
        labels = ["/".join(pp[-depth:]) for pp in parts]
        if len(set(labels)) == len(labels) or depth > max(len(pp) for pp in parts):
            return labels
        depth += 1


# ----------------------------------------------------------------------------------------------
# Metrics series


@dataclass
class Series:
    """One plotted line: ``label``, x positions (in epochs) and values (NaN for gaps)."""

    label: str
    x: list[float]
    y: list[float]


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _value(v: Any) -> float | list[float] | None:
    """A number, a list of numbers (nested lists flattened), NaN for JSON null; None when not numeric."""
    if v is None:
        return float("nan")
    n = _num(v)
    if n is not None:
        return n
    if not isinstance(v, list) or not v:
        return None
    flat: list[float] = []
    for item in v:
        for sub in item if isinstance(item, list) else [item]:
            s = _num(sub)
            if s is None and sub is not None:
                return None
            flat.append(float("nan") if s is None else s)
    return flat


class Timeline:
    """Fractional-epoch x positions of a run's records (step records fall between epoch ends)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.ends: dict[int, int] = {}
        last_in_epoch: dict[int, int] = {}
        for r in records:
            e, s = r.get("epoch"), r.get("step")
            if not isinstance(e, int) or not isinstance(s, int):
                continue
            if r.get("kind") == "epoch":
                self.ends[e] = s
            else:
                last_in_epoch[e] = max(last_in_epoch.get(e, 0), s)
        diffs = sorted(self.ends[e] - self.ends[e - 1] for e in self.ends if e - 1 in self.ends)
        if diffs:
            self.spe = max(diffs[len(diffs) // 2], 1)
        elif 1 in self.ends:
            self.spe = max(self.ends[1], 1)
        else:
            self.spe = max(last_in_epoch.get(1, 1), 1)

    def x(self, rec: dict[str, Any]) -> float:
        e = int(rec.get("epoch", 0))
        if rec.get("kind") == "epoch":
            return float(e)
        s = int(rec.get("step", 0))
        start = self.ends.get(e - 1, (e - 1) * self.spe if e > 1 else 0)
        end = self.ends.get(e, start + self.spe)
        span = max(end - start, 1)
        return (e - 1) + min(max((s - start) / span, 0.0), 1.0)


_STEP_STANDARD = re.compile(r"^(kind|epoch|step|images_per_s|loss/.*|weight/.*|lr/.*)$")
_EPOCH_STANDARD = re.compile(r"^(kind|epoch|step|lr|images_per_s|nonfinite_skipped|test/.*|time/.*|best/.*|lr/.*|"
                             r"train/acc/.*|train/loss/.*)$")


@dataclass
class RunSeries:
    """A run's numeric series by level: ``step[key]`` / ``epoch[key]`` = (xs, values)."""

    step: dict[str, tuple[list[float], list[Any]]]
    epoch: dict[str, tuple[list[float], list[Any]]]
    signals: list[str]  # signal keys (step keys first), every one plotted somewhere
    epoch_means: dict[str, str]  # step signal key -> the epoch key holding its per-epoch summary

    def get(self, key: str) -> tuple[list[float], list[Any]] | None:
        return self.step.get(key) or self.epoch.get(key)


def run_series(run: RunData) -> RunSeries:
    tl = Timeline(run.records)
    step: dict[str, tuple[list[float], list[Any]]] = {}
    epoch: dict[str, tuple[list[float], list[Any]]] = {}
    for r in run.records:
        target = epoch if r.get("kind") == "epoch" else step
        x = tl.x(r)
        for k, v in r.items():
            if k in ("kind", "epoch", "step"):
                continue
            val = _value(v)
            if val is None:
                continue
            xs, ys = target.setdefault(k, ([], []))
            xs.append(x)
            ys.append(val)
    loss_terms = {k[len("loss/"):] for k in step if k.startswith("loss/")}
    sig_step = [k for k in step if not _STEP_STANDARD.match(k)]
    epoch_means: dict[str, str] = {}
    sig_epoch = []
    step_sigs = set(sig_step)
    for k in epoch:
        if _EPOCH_STANDARD.match(k) or (k.startswith("train/") and k[len("train/"):] in loss_terms):
            continue
        # A per-epoch summary of a step signal K: ``train/K`` (engine), ``K_mean``, ``K_epoch`` (methods).
        cands = [k[len("train/"):] if k.startswith("train/") else "", k[:-len("_mean")] if k.endswith("_mean") else "",
                 k[:-len("_epoch")] if k.endswith("_epoch") else ""]
        base = next((c for c in cands if c and c in step_sigs and c not in epoch_means), None)
        if base is not None:
            epoch_means[base] = k
            continue
        sig_epoch.append(k)
    return RunSeries(step=step, epoch=epoch, signals=sig_step + sig_epoch, epoch_means=epoch_means)


def signal_keys(run: RunData) -> list[str]:
    """Every adaptive-signal key the run logged (step-level and per-epoch method summaries)."""
    rs = run_series(run)
    return rs.signals + list(rs.epoch_means.values())


def sparkline(values: list[float], width: int = 36) -> str:
    """Unicode sparkline of ``values`` (mean-pooled to ``width`` cells; blank for NaN)."""
    vals = [float(v) for v in values]
    if not vals:
        return ""
    n = len(vals)
    if n > width:
        cells = []
        for i in range(width):
            seg = [v for v in vals[i * n // width:(i + 1) * n // width] if math.isfinite(v)]
            cells.append(sum(seg) / len(seg) if seg else float("nan"))
        vals = cells
    fin = [v for v in vals if math.isfinite(v)]
    if not fin:
        return " " * len(vals)
    lo, hi = min(fin), max(fin)
    if hi - lo <= 1e-12 * max(abs(hi), 1.0):
        return "".join(_BARS[3] if math.isfinite(v) else " " for v in vals)
    return "".join(_BARS[min(int((v - lo) / (hi - lo) * len(_BARS)), len(_BARS) - 1)] if math.isfinite(v) else " "
                   for v in vals)


# ----------------------------------------------------------------------------------------------
# Document blocks (rendered to HTML, Markdown and the terminal)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class FigureBlock:
    file: str
    title: str
    caption: str
    series: list[Series]
    keys: list[str]


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # Table | FigureBlock | str (a note)


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, the Markdown, figures and the signal keys covered."""

    title: str
    out: Path
    html: Path
    markdown: Path
    manifest: Path
    sections: list[Section]
    figures: list[Path]
    signals: dict[str, list[str]]  # run label -> signal keys found
    plotted: dict[str, list[str]]  # run label -> signal keys plotted
    notes: list[str]


# ----------------------------------------------------------------------------------------------
# Safe output


class _Writer:
    """Writes only plain files with generated names directly inside ``out`` (temp file + rename)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.root = out.resolve()
        self.written: list[str] = []

    def path(self, name: str) -> Path:
        if not _SAFE_NAME.match(name) or ".." in name:
            raise ReportError(f"refusing to write {name!r}: not a plain file name")
        target = self.out / name
        if target.is_symlink():
            raise ReportError(f"{str(target)!r} is a symbolic link; refusing to write through it")
        if target.resolve().parent != self.root:
            raise ReportError(f"{str(target)!r} resolves outside the report folder {str(self.out)!r}; refusing")
        return target

    def bytes(self, name: str, data: bytes) -> Path:
        target = self.path(name)
        tmp = self.out / f".{name}.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        self.written.append(name)
        return target

    def text(self, name: str, text: str) -> Path:
        return self.bytes(name, text.encode("utf-8"))


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"
    return s[:80]


def _prepare_out(runs: list[RunData], out: str | os.PathLike[str] | None) -> Path:
    if out is None:
        if len(runs) != 1:
            raise ReportError("a comparison of several runs needs --out DIR (the folder for the comparison page)")
        run_root = runs[0].path.resolve()
        target = runs[0].path / "report"
        if target.is_symlink() or not (target.resolve() == run_root / "report"):
            raise ReportError(f"{str(target)!r} is a symbolic link or resolves outside its run folder; refusing to write there")
    else:
        target = Path(os.path.expanduser(str(out)))
        if target.is_symlink():
            raise ReportError(f"output folder {str(out)!r} is a symbolic link; refusing to write through it")
        if target.exists() and not target.is_dir():
            raise ReportError(f"output {str(out)!r} exists and is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # created concurrently
        raise ReportError(f"output folder {str(target)!r} is a symbolic link; refusing to write through it")
    return target


# ----------------------------------------------------------------------------------------------
# Models: who is evaluated and measured


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


def _data_key(cfg: dict[str, Any]) -> str:
    d = cfg.get("data", {})
    return json.dumps({k: d.get(k) for k in ("name", "root", "image_size", "num_classes", "train_size", "test_size",
                                             "data_seed")}, sort_keys=True)


def _collect_models(runs: list[RunData], which: str) -> list[ModelEntry]:
    from adaptkd.export import run_checkpoint_path

    entries: dict[tuple[str, ...], ModelEntry] = {}
    order: list[tuple[str, ...]] = []
    for run in runs:
        summ = run.summary
        meta_shape = _shape_from_run(run)
        try:
            ck_path = str(run_checkpoint_path(run.path, which).resolve())
        except Exception:  # noqa: BLE001 - no checkpoint yet: entries still come from config/summary
            ck_path = ""
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
                    key = (str(resolved.resolve()), "student")
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
                           in_channels=meta_shape[1], image_size=meta_shape[2], data_key=_data_key(run.config),
                           card=card, summary_acc=card.get("final_acc"), summary_top5=card.get("final_top5"))
            if role == "teacher":
                e.teacher_of.append(run.label)
            if weights == "none":
                e.note = ("random init" if net.get("random_init") else
                          f"checkpoint {source!r} not found" if source else "no checkpoint")
            entries[key] = e
            order.append(key)
    return [entries[k] for k in order]


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
        from adaptkd.config import load_config
        from adaptkd.data import build_data

        key = _data_key(run.config)
        if key not in self.cache:
            d = load_config(run.config, check=False).data
            self.cache[key] = build_data(d.name, root=d.root, image_size=d.image_size, num_classes=d.num_classes,
                                         train_size=d.train_size, test_size=d.test_size, data_seed=d.data_seed)
        return self.cache[key]


def _load_model(e: ModelEntry, which: str, networks: dict[str, Any] | None):
    from adaptkd.engine.checkpoint import load_into, load_state_dict_for
    from adaptkd.export import build_arch, rebuild_network

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
        if e.in_channels != 3 and not e.arch.startswith(("timm:", "torchvision:")):
            args.setdefault("in_channels", e.in_channels)
        model = build_arch(e.arch, args, e.num_classes, e.in_channels, what=f"network {e.name!r} of {e.run.label!r}")
        state = load_state_dict_for(e.source, arch=e.arch, num_classes=e.num_classes)
        load_into(model, state, source=e.source, arch=e.arch)
        e.model = model.eval()
    else:
        raise FileNotFoundError(e.note or "no weights")
    return e.model


def _expected_errors() -> tuple[type[BaseException], ...]:
    from adaptkd.commands.common import user_errors

    return user_errors() + (FileNotFoundError, OSError)


def _evaluate(models: list[ModelEntry], which: str, device: str, networks, notes: list[str]) -> None:
    from adaptkd.data import Augment
    from adaptkd.engine.evaluate import metrics_from_logits, predict

    data = _DataCache()
    for e in models:
        if e.weights == "none" and not (networks and e.name in networks):
            continue  # e.note already says why (random init, checkpoint not found)
        try:
            bundle = data.get(e.run)
            model = _load_model(e, which, networks)
            aug = Augment(bundle.mean, bundle.std, train=False).to(device)
            bs = int(e.run.config.get("data", {}).get("eval_batch_size", 256) or 256)
            logits = predict(model.to(device), bundle.test.x, aug, batch_size=bs, device=device)
            model.cpu()
            m = metrics_from_logits(logits, bundle.test.y, bundle.num_classes)
            m["pred"] = logits.argmax(1)
            m["y"] = bundle.test.y.long().cpu()
            m["class_names"] = list(getattr(bundle, "class_names", []) or [])
            e.eval = m
        except _expected_errors() as exc:
            e.note = (e.note + "; " if e.note else "") + f"not evaluated: {str(exc).splitlines()[0]}"
            notes.append(f"{e.label}: {e.note}")


def _measure(models: list[ModelEntry], which: str, networks, threads: int | None, remeasure: bool) -> None:
    """Fill missing card entries; latency/throughput of all models that need it are timed together,
    interleaved (one block of each model per round), so the rows of the table are comparable."""
    import torch

    from adaptkd.engine.measure import checkpoint_size_bytes, cpu_latency_interleaved, flops_per_image

    timed: dict[str, list[ModelEntry]] = {"latency_b1": [], "throughput_b64": []}
    for e in models:
        need = [k for k in ("params", "size_bytes", "flops", "latency_b1", "throughput_b64") if e.card.get(k) is None]
        if remeasure:  # timings of one session on one machine: comparable across the rows
            need += [k for k in ("latency_b1", "throughput_b64") if k not in need]
        if not need:
            continue
        try:
            model = _load_model(e, which, networks)
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
        for k in timed:
            if k in need:
                timed[k].append(e)
    for key, batch, th in (("latency_b1", 1, 1), ("throughput_b64", 64, threads or torch.get_num_threads())):
        group = timed[key]
        if not group:
            continue
        res = cpu_latency_interleaved([e.model for e in group], [(e.in_channels, e.image_size, e.image_size)
                                                                 for e in group], batch=batch, threads=th)
        for e, r in zip(group, res):
            e.card[key] = r
            e.card_source = "measured by this report"


# ----------------------------------------------------------------------------------------------
# Formatting


def _fmt_count(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def _fmt_bytes(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}"


def _fmt_num(v: float) -> str:
    if not math.isfinite(v):
        return "nan"
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.3g}"
    return f"{v:.4g}"


def _top1(e: ModelEntry) -> float | None:
    return e.eval["top1"] if e.eval else e.summary_acc


def _top5(e: ModelEntry) -> float | None:
    return e.eval["top5"] if e.eval else e.summary_top5


# ----------------------------------------------------------------------------------------------
# Figures


_RC = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9,
       "axes.titlesize": 10, "legend.fontsize": 8, "legend.frameon": False, "axes.titleweight": "bold"}


def _color(i: int) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]
    return palette[i % len(palette)]


class _Fig:
    """A matplotlib figure (object API, Agg canvas; pyplot's global state is never touched) that
    records every series it draws for the text summary."""

    def __init__(self, title: str, panels: int, *, ncols: int = 3, w: float = 4.3, h: float = 3.0) -> None:
        from matplotlib.figure import Figure

        self.ncols = max(1, min(ncols, panels))
        nrows = max(1, math.ceil(panels / self.ncols))
        self.fig = Figure(figsize=(w * self.ncols, h * nrows), dpi=100, layout="constrained")
        self.axes = list(self.fig.subplots(nrows, self.ncols, squeeze=False).ravel())
        for ax in self.axes[panels:]:
            ax.set_visible(False)
        self.fig.suptitle(title, fontsize=11, fontweight="bold")
        self.title = title
        self.series: list[Series] = []
        self.keys: set[str] = set()

    def line(self, ax, xs, ys, label: str, panel: str, *, key: str | None = None, legend: bool = True, **kw) -> None:
        ys = [float("nan") if y is None else float(y) for y in ys]
        ax.plot(xs, ys, label=label if legend else "_nolegend_", **kw)
        self.series.append(Series(f"{panel}: {label}" if panel else label, list(map(float, xs)), ys))
        if key:
            self.keys.add(key)

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def _finish_ax(ax, title: str, xlabel: str = "epoch", ylabel: str = "", legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    handles, labels = ax.get_legend_handles_labels()
    if legend and handles:
        ax.legend(loc="best", ncol=1 if len(handles) <= 5 else 2)


def _maybe_log(ax, values: list[float]) -> None:
    fin = [v for v in values if math.isfinite(v)]
    if fin and min(fin) > 0 and max(fin) / min(fin) > 30:
        ax.set_yscale("log")


def _render(fig: _Fig, w: _Writer, name: str, caption: str, figures: list[Path]) -> FigureBlock:
    from matplotlib import rc_context

    with rc_context(_RC):
        data = fig.png()
    path = w.bytes(name, data)
    figures.append(path)
    return FigureBlock(file=name, title=fig.title, caption=caption, series=fig.series, keys=sorted(fig.keys))


def _new_fig(title: str, panels: int, **kw) -> _Fig:
    from matplotlib import rc_context

    with rc_context(_RC):
        return _Fig(title, panels, **kw)


def _styled(fn):
    """Run a figure-drawing function inside the report's matplotlib style."""
    from matplotlib import rc_context

    def wrapper(*a, **k):
        with rc_context(_RC):
            return fn(*a, **k)

    return wrapper


@_styled
def _fig_accuracy(models: list[ModelEntry]) -> _Fig:
    f = _new_fig("Accuracy on the test split", 1, ncols=1, w=max(4.6, 0.9 * len(models) + 2.0), h=3.4)
    ax = f.axes[0]
    xs = list(range(len(models)))
    t1 = [_top1(m) for m in models]
    t5 = [_top5(m) for m in models]
    colors = ["#555555" if m.role == "teacher" else _color(i) for i, m in enumerate(models)]
    ax.bar([x - 0.2 for x in xs], [v if v is not None else 0 for v in t1], width=0.4, color=colors, label="top-1")
    ax.bar([x + 0.2 for x in xs], [v if v is not None else 0 for v in t5], width=0.4, color=colors, alpha=0.45,
           hatch="//", label="top-5")
    for x, v in zip(xs, t1):
        if v is not None:
            ax.annotate(f"{v:.1f}", (x - 0.2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [f"{m.label}\n({m.role}, {m.arch})" for m in models], fontsize=8)
    lo = min([v for v in t1 if v is not None] or [0])
    ax.set_ylim(max(0.0, lo - 15), 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("top-1 (solid) and top-5 (hatched); teachers in grey")
    return f


@_styled
def _fig_per_class(models: list[ModelEntry]) -> _Fig:
    ev = [m for m in models if m.eval]
    nc = len(ev[0].eval["per_class"])
    names = ev[0].eval.get("class_names") or [str(c) for c in range(nc)]
    f = _new_fig("Per-class accuracy (test split)", 1, ncols=1, w=max(6.0, 0.55 * nc * max(1, len(ev)) / 2 + 3), h=3.4)
    ax = f.axes[0]
    width = 0.8 / len(ev)
    for i, m in enumerate(ev):
        pc = m.eval["per_class"]
        xs = [c + (i - (len(ev) - 1) / 2) * width for c in range(nc)]
        color = "#555555" if m.role == "teacher" else _color(i)
        ax.bar(xs, [0 if not math.isfinite(v) else v for v in pc], width=width, color=color, label=m.label,
               alpha=0.6 if m.role == "teacher" else 1.0)
    ax.set_xticks(range(nc), names[:nc], fontsize=8, rotation=0 if nc <= 12 else 45)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower right", ncol=min(len(ev), 4))
    return f


@_styled
def _fig_tradeoff(models: list[ModelEntry]) -> _Fig | None:
    pts = []
    for i, m in enumerate(models):
        acc = _top1(m)
        lat = (m.card.get("latency_b1") or {}).get("median_ms")
        flops = m.card.get("flops")
        if acc is not None and (lat or flops):
            pts.append((m, i, acc, lat, flops))
    if not pts:
        return None
    use_lat = all(p[3] for p in pts)
    f = _new_fig("Accuracy vs cost", 1, ncols=1, w=6.0, h=3.6)
    ax = f.axes[0]
    for m, i, acc, lat, flops in pts:
        x = lat if use_lat else flops
        size = 30 + 200 * (m.card.get("params", 0) or 0) / max(max((p[0].card.get("params", 0) or 0) for p in pts), 1)
        ax.scatter([x], [acc], s=size, color="#555555" if m.role == "teacher" else _color(i), alpha=0.8,
                   edgecolors="black", linewidths=0.5)
        ax.annotate(m.label, (x, acc), xytext=(6, 4), textcoords="offset points", fontsize=8)
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    xs = [p[3] if use_lat else p[4] for p in pts]
    if max(xs) / max(min(xs), 1e-12) < 8:  # within ~1 decade: label the minor ticks too
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("CPU latency at batch 1 (ms, 1 thread, log scale)" if use_lat else "FLOPs per image (log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("up and left is better; marker area ∝ parameters")
    return f


@_styled
def _fig_agreement(pairs: list[dict[str, Any]]) -> _Fig:
    f = _new_fig("Student–teacher agreement on the test split", 1, ncols=1, w=7.5, h=0.45 * len(pairs) + 1.8)
    ax = f.axes[0]
    parts = [("agree, both right", "#2ca02c"), ("agree, both wrong", "#98df8a"), ("disagree, teacher right", "#d62728"),
             ("disagree, student right", "#1f77b4"), ("disagree, both wrong", "#c7c7c7")]
    keys = ["agree_right", "agree_wrong", "teacher_only", "student_only", "disagree_wrong"]
    labels = [f"{p['student']} vs {p['teacher']}" for p in pairs]
    left = [0.0] * len(pairs)
    for (name, color), k in zip(parts, keys):
        vals = [p[k] for p in pairs]
        ax.barh(range(len(pairs)), vals, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, vals)]
    labels = [f"{lab}\n{p['agree']:.1f}% same prediction" for lab, p in zip(labels, pairs)]
    ax.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of test images")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    return f


def _pairs(models: list[ModelEntry]) -> list[dict[str, Any]]:
    import torch

    out = []
    teachers = [m for m in models if m.role == "teacher" and m.eval]
    for s in models:
        if s.role != "student" or not s.eval:
            continue
        peers = [m for m in models if m.role == "peer" and m.eval and m.run is s.run]  # online KD: mutual teachers
        for t in teachers + peers:
            if t is s or t.data_key != s.data_key or s.eval["pred"].shape != t.eval["pred"].shape:
                continue
            ps, pt, y = s.eval["pred"], t.eval["pred"], s.eval["y"]
            n = max(int(y.numel()), 1)
            agree = ps == pt
            sr, tr = ps == y, pt == y

            def pct(mask: torch.Tensor) -> float:
                return 100.0 * int(mask.sum()) / n

            out.append({"student": s.label, "teacher": t.label, "agree": pct(agree), "agree_right": pct(agree & sr),
                        "agree_wrong": pct(agree & ~sr), "teacher_only": pct(~agree & tr & ~sr),
                        "student_only": pct(~agree & sr & ~tr), "disagree_wrong": pct(~agree & ~sr & ~tr),
                        "n": int(y.numel()), "own_teacher": s.run.label in t.teacher_of or t.run is s.run})
    return out


# -- training curves -----------------------------------------------------------------------------


def _learner_names(run: RunData) -> list[str]:
    return [n for n, role, net in run.networks() if role != "teacher" or net.get("trainable")]


@_styled
def _fig_curves(runs: list[RunData], rss: list[RunSeries], models: list[ModelEntry]) -> _Fig:
    compare = len(runs) > 1
    varying_w: list[tuple[int, str]] = []
    for ri, rs in enumerate(rss):
        for k, (_, ys) in rs.step.items():
            if k.startswith("weight/") and len({y for y in ys if isinstance(y, float)}) > 1:
                varying_w.append((ri, k))
    panels = 4 + (1 if varying_w else 0)
    f = _new_fig("Training curves" + (" (overlaid)" if compare else ""), panels, ncols=3 if panels > 4 else 2,
                 w=4.6, h=3.0)
    ax_acc, ax_loss, ax_lr, ax_ips = f.axes[:4]
    loss_vals: list[float] = []
    for ri, (run, rs) in enumerate(zip(runs, rss)):
        learners = ["student"] if compare else _learner_names(run)
        for li, name in enumerate(learners):
            color = _color(ri if compare else li)
            lab = run.label if compare else name
            for key, style, suffix in ((f"test/acc/{name}", "-", "test"), (f"train/acc/{name}", ":", "train")):
                if key in rs.epoch:
                    xs, ys = rs.epoch[key]
                    f.line(ax_acc, xs, ys, f"{lab} {suffix}", "accuracy %", key=key, color=color, linestyle=style,
                           marker="o" if len(xs) < 15 else None, markersize=3)
            if compare:
                key = f"loss/{name}"
                if key in rs.step:
                    xs, ys = rs.step[key]
                    f.line(ax_loss, xs, ys, lab, "total loss", key=key, color=color)
                    loss_vals += ys
            else:
                terms = [k for k in rs.step if k.startswith(f"loss/{name}/")]
                for ti, key in enumerate(terms):
                    xs, ys = rs.step[key]
                    f.line(ax_loss, xs, ys, key[len("loss/"):], "loss", key=key, color=_color(li * 3 + ti + 1),
                           linewidth=1.0)
                    loss_vals += ys
                if f"loss/{name}" in rs.step:
                    xs, ys = rs.step[f"loss/{name}"]
                    f.line(ax_loss, xs, ys, f"{name} total (weighted)", "loss", key=f"loss/{name}", color="black",
                           linewidth=1.6)
                    loss_vals += ys
            if f"lr/{name}" in rs.step:
                xs, ys = rs.step[f"lr/{name}"]
                f.line(ax_lr, xs, ys, lab, "learning rate", key=f"lr/{name}", color=color)
        if "images_per_s" in rs.step:
            xs, ys = rs.step["images_per_s"]
            f.line(ax_ips, xs, ys, run.label if compare else "train", "images/s", key="images_per_s",
                   color=_color(ri), linewidth=1.0)
    for m in models:
        if m.role == "teacher" and _top1(m) is not None and (m.weights == "file" or compare):
            ax_acc.axhline(_top1(m), color="#555555", linestyle="--", linewidth=1)
            name = m.label if "teacher" in m.label else f"teacher {m.label}"
            ax_acc.annotate(f"{name} {_top1(m):.1f}", (0, _top1(m)), xycoords=("axes fraction", "data"),
                            xytext=(2, 2), textcoords="offset points", fontsize=7, color="#555555")
    _finish_ax(ax_acc, "accuracy (test solid, train dotted)", ylabel="%")
    _maybe_log(ax_loss, [v for v in loss_vals if isinstance(v, float)])
    _finish_ax(ax_loss, "training loss" if not compare else "total training loss (weighted)")
    _finish_ax(ax_lr, "learning rate")
    _finish_ax(ax_ips, "training throughput (images/s)")
    if varying_w:
        ax_w = f.axes[4]
        for j, (ri, k) in enumerate(varying_w):
            xs, ys = rss[ri].step[k]
            f.line(ax_w, xs, ys, (f"{runs[ri].label} " if compare else "") + k[len("weight/"):], "loss weight",
                   key=k, color=_color(j))
        _finish_ax(ax_w, "loss weights that change during training")
    return f


# -- adaptive signals ------------------------------------------------------------------------------


def _scalar_series(rs: RunSeries, key: str) -> tuple[list[float], list[float]] | None:
    got = rs.step.get(key) or rs.epoch.get(key)
    if not got:
        return None
    xs, ys = got
    if any(isinstance(y, list) for y in ys):
        return None
    return xs, [float(y) for y in ys]


def _line_key(f: _Fig, ax, rs: RunSeries, key: str, label: str, panel: str, **kw) -> bool:
    """Plot signal ``key`` (and, as dots, its per-epoch summary when the run logged one)."""
    got = _scalar_series(rs, key)
    if got is None:
        return False
    f.line(ax, got[0], got[1], label, panel, key=key, **kw)
    mean_key = rs.epoch_means.get(key)
    if mean_key and mean_key in rs.epoch:
        xs, ys = rs.epoch[mean_key]
        color = ax.get_lines()[-1].get_color()
        f.line(ax, xs, ys, f"{label} (per epoch)", panel, key=mean_key, color=color, linestyle="none", marker="o",
               markersize=3, legend=False)
    return True


@_styled
def _fig_dtkd(run: RunData, rs: RunSeries, prefix: str) -> _Fig:
    f = _new_fig(f"DTKD temperatures — {run.label}" + (f" ({prefix.rstrip('/')})" if prefix.strip("/") else ""), 2,
                 ncols=2, w=5.0)
    ax_t, ax_g = f.axes
    for who, color in (("student", "#1f77b4"), ("teacher", "#d62728")):
        lo, hi = _scalar_series(rs, f"{prefix}{who}_T_min"), _scalar_series(rs, f"{prefix}{who}_T_max")
        if lo and hi and len(lo[0]) == len(hi[0]):
            ax_t.fill_between(lo[0], lo[1], hi[1], color=color, alpha=0.18, linewidth=0, label=f"{who} min–max")
        for stat in ("min", "max"):
            _line_key(f, ax_t, rs, f"{prefix}{who}_T_{stat}", f"{who} T {stat}", "temperature", color=color,
                      linewidth=0.6, alpha=0.6, legend=False)
        _line_key(f, ax_t, rs, f"{prefix}{who}_T_mean", f"{who} T mean", "temperature", color=color, linewidth=1.6)
    base = _method_option(run, "temperature") if prefix.strip("/") == run.method else None
    if isinstance(base, (int, float)):
        ax_t.axhline(base, color="black", linestyle="--", linewidth=0.8, label=f"base T = {base:g}")
    _finish_ax(ax_t, "per-sample temperatures: mean and min–max band")
    _line_key(f, ax_g, rs, f"{prefix}guarded", "guarded samples", "guarded", color="#9467bd")
    _finish_ax(ax_g, "samples using the fallback T (m_s + m_t ≤ 0)", ylabel="count per logged step")
    return f


def _method_option(run: RunData, name: str) -> Any:
    """A method option as the run used it (the config's value, else the method's default)."""
    opts = {k: v for k, v in run.config.get("method", {}).items() if k != "name"}
    if name in opts:
        return opts[name]
    try:
        from adaptkd.methods import method_class

        return getattr(method_class(run.method).Params.model_validate(opts), name, None)
    except Exception:  # noqa: BLE001 - a method this install does not know: no reference line
        return None


@_styled
def _fig_balance(run: RunData, rs: RunSeries, learner: str) -> _Fig:
    p = f"balance/{learner}/"
    extra = [k for k in rs.step if k.startswith(p) and k[len(p):] in ("lambda_rho", "lambda_psi", "renorm")]
    f = _new_fig(f"Dynamic balancing — {run.label} ({learner})", 3 + (1 if extra else 0), ncols=2, w=5.0)
    ax_l, ax_n, ax_c = f.axes[:3]
    lo, hi = _scalar_series(rs, p + "lambda_lo"), _scalar_series(rs, p + "lambda_hi")
    if lo and hi and len(lo[0]) == len(hi[0]):
        ax_l.fill_between(lo[0], lo[1], hi[1], color="#1f77b4", alpha=0.15, linewidth=0, label="allowed [λ_lo, λ_hi]")
    for stat in ("lambda_lo", "lambda_hi"):
        _line_key(f, ax_l, rs, p + stat, stat.replace("lambda", "λ"), "λ", color="#1f77b4", linewidth=0.5, alpha=0.5,
                  legend=False)
    _line_key(f, ax_l, rs, p + "lambda", "λ (distillation share)", "λ", color="#1f77b4", linewidth=1.6)
    ax_l.set_ylim(-0.02, 1.02)
    _finish_ax(ax_l, "λ: weight of distillation vs task")
    _line_key(f, ax_n, rs, p + "a", "a = ‖g_task‖", "gradient norm", color="#2ca02c")
    _line_key(f, ax_n, rs, p + "b", "b = ‖g_distill‖", "gradient norm", color="#d62728")
    got = _scalar_series(rs, p + "a")
    _maybe_log(ax_n, (got[1] if got else []) + ((_scalar_series(rs, p + "b") or ([], []))[1]))
    _finish_ax(ax_n, "gradient norms")
    _line_key(f, ax_c, rs, p + "c", "c = cos(g_task, g_distill)", "cosine", color="#9467bd")
    ax_c.axhline(0, color="black", linewidth=0.6)
    ax_c.set_ylim(-1.05, 1.05)
    _finish_ax(ax_c, "gradient cosine")
    if extra:
        ax_e = f.axes[3]
        for i, k in enumerate(extra):
            _line_key(f, ax_e, rs, k, k[len(p):], "controller", color=_color(i + 4))
        _finish_ax(ax_e, "controller state")
    return f


@_styled
def _fig_switokd(run: RunData, rs: RunSeries, pair: str) -> _Fig:
    p = f"switokd/{pair}/"
    f = _new_fig(f"SwitOKD — {run.label} (pair {pair})", 3, ncols=3, w=4.4)
    ax_g, ax_d, ax_m = f.axes
    _line_key(f, ax_g, rs, p + "gap", "gap G", "gap", color="#1f77b4", linewidth=1.4)
    _line_key(f, ax_g, rs, p + "threshold", "threshold δ", "gap", color="#d62728", linewidth=1.2)
    ex = _scalar_series(rs, p + "expert")
    if ex:
        f.keys.add(p + "expert")
        f.series.append(Series("mode: expert (1) / learning (0) at logged steps", ex[0], ex[1]))
        xs, ys = ex
        span = (xs[1] - xs[0]) / 2 if len(xs) > 1 else 0.5
        first = True
        for x, y in zip(xs, ys):
            if y > 0.5:
                ax_g.axvspan(x - span, x + span, color="#ff7f0e", alpha=0.15, linewidth=0,
                             label="expert mode (logged step)" if first else None)
                first = False
        if rs.epoch_means.get(p + "expert"):
            f.keys.add(rs.epoch_means[p + "expert"])
    _finish_ax(ax_g, "gap G vs threshold δ (expert iff G > δ and t < s)")
    _line_key(f, ax_d, rs, p + "t_dist", "t = ‖p_t − y‖₁", "distances", color="#555555")
    _line_key(f, ax_d, rs, p + "s_dist", "s = ‖p_s − y‖₁", "distances", color="#1f77b4")
    _line_key(f, ax_d, rs, p + "epsilon", "ε = exp(−t/(t+s))", "distances", color="#2ca02c", linestyle="--")
    _finish_ax(ax_d, "label distances and ε")
    drew = _line_key(f, ax_m, rs, p + "expert_frac", "expert-mode fraction", "per epoch", color="#ff7f0e", marker="o",
                     markersize=3)
    teacher = pair.split("-")[0] if "-" in pair else None
    for k in rs.epoch:
        if k.startswith("switokd/") and k.endswith("/paused_frac") and (teacher is None or f"/{teacher}/" in k):
            drew |= _line_key(f, ax_m, rs, k, f"{k.split('/')[1]} paused", "per epoch", color="#555555", marker="s",
                              markersize=3)
    ax_m.set_ylim(-0.02, 1.02)
    _finish_ax(ax_m, "fraction of steps per epoch" if drew else "per-epoch mode fractions (none logged)")
    return f


@_styled
def _fig_unic(run: RunData, rs: RunSeries) -> _Fig:
    teachers = sorted({k.split("/", 2)[2] for k in rs.step if k.startswith(("unic/loss/", "unic/kept/", "unic/coeff/"))})
    f = _new_fig(f"UNIC multi-teacher — {run.label}", 4, ncols=2, w=5.0)
    ax_l, ax_k, ax_c, ax_m = f.axes
    for i, t in enumerate(teachers):
        c = _color(i)
        _line_key(f, ax_l, rs, f"unic/loss/{t}", t, "loss", color=c)
        _line_key(f, ax_k, rs, f"unic/kept/{t}", t, "kept", color=c, linewidth=0.8, alpha=0.7)
        _line_key(f, ax_c, rs, f"unic/coeff/{t}", t, "coefficient", color=c)
        for what, ax in (("loss", ax_l), ("kept", ax_k)):
            _line_key(f, ax, rs, f"unic/epoch_{what}/{t}", f"{t} (epoch mean)", what, color=c, marker="o",
                      markersize=3, linestyle="--")
    _finish_ax(ax_l, "per-teacher distillation loss")
    ax_k.set_ylim(-0.02, 1.02)
    _finish_ax(ax_k, "per-teacher kept fraction (teacher dropping)")
    _finish_ax(ax_c, "per-teacher loss coefficient (Σ weights)")
    _line_key(f, ax_m, rs, "unic/momentum", "m", "momentum", color="#555555")
    _finish_ax(ax_m, "standardiser momentum (weight on the new batch)")
    return f


@_styled
def _fig_rtk(run: RunData, rs: RunSeries) -> _Fig:
    f = _new_fig(f"RTK representative keys — {run.label}", 3, ncols=3, w=4.6)
    ax_h, ax_k, ax_e = f.axes
    taps = [k[len("rtk/kept/"):] for k in rs.epoch if k.startswith("rtk/kept/")]
    infl = rs.step.get("rtk/influence")
    if infl and infl[1]:
        xs, ys = infl
        rows = [y if isinstance(y, list) else [y] for y in ys]
        width = max(len(r) for r in rows)
        grid = [[(r[j] if j < len(r) else float("nan")) for r in rows] for j in range(width)]
        x0, x1 = (xs[0], xs[-1]) if len(xs) > 1 else (xs[0] - 0.5, xs[0] + 0.5)
        im = ax_h.imshow(grid, aspect="auto", origin="lower", extent=(x0, x1, -0.5, width - 0.5), cmap="viridis",
                         interpolation="nearest")
        f.fig.colorbar(im, ax=ax_h, shrink=0.8)
        names = taps if len(taps) == width else [str(j) for j in range(width)]
        ax_h.set_yticks(range(width), names, fontsize=7)
        for j in range(width):
            f.series.append(Series(f"influence: {names[j]}", list(xs), grid[j]))
        f.keys.add("rtk/influence")
        if rs.epoch_means.get("rtk/influence"):
            f.keys.add(rs.epoch_means["rtk/influence"])
    ax_h.set_title("influence per teacher layer")
    ax_h.set_xlabel("epoch")
    ax_h.grid(False)
    if not _line_key(f, ax_k, rs, "rtk/kept_fraction", "all keys", "kept", color="#1f77b4", linewidth=0.8):
        _line_key(f, ax_k, rs, "rtk/kept_fraction_epoch", "all keys (per epoch)", "kept", color="#1f77b4", marker="o")
    for i, t in enumerate(taps):
        _line_key(f, ax_k, rs, f"rtk/kept/{t}", t, "kept", color=_color(i + 2), linestyle="--", marker=".")
    ax_k.set_ylim(-0.02, 1.02)
    _finish_ax(ax_k, "kept-key fraction")
    _line_key(f, ax_e, rs, "rtk/attention_entropy", "entropy", "attention", color="#9467bd")
    _finish_ax(ax_e, "attention entropy (nats)")
    return f


def _group_of(key: str) -> str:
    k = key[len("train/"):] if key.startswith("train/") else key
    return k.rsplit("/", 1)[0] if "/" in k else "signals"


@_styled
def _fig_generic(group: str, keys: list[str], runs: list[RunData], rss: list[RunSeries]) -> _Fig:
    compare = len(runs) > 1
    f = _new_fig(f"Signals: {group}" + (" (overlaid)" if compare else f" — {runs[0].label}"), len(keys), ncols=3,
                 w=4.3, h=2.8)
    for ax, key in zip(f.axes, keys):
        for ri, (run, rs) in enumerate(zip(runs, rss)):
            got = rs.get(key)
            if not got:
                continue
            xs, ys = got
            base = run.label if compare else ""
            if any(isinstance(y, list) for y in ys):
                rows = [y if isinstance(y, list) else [y] for y in ys]
                width = max(len(r) for r in rows)
                if width <= 8:
                    for j in range(width):
                        f.line(ax, xs, [r[j] if j < len(r) else float("nan") for r in rows], f"{base} [{j}]".strip(),
                               key, key=key, color=_color(ri * 8 + j) if not compare else _color(ri),
                               alpha=1.0 if not compare else 0.4 + 0.6 * (j + 1) / width, linewidth=1.0)
                else:
                    means = [sum(v for v in r if math.isfinite(v)) / max(sum(1 for v in r if math.isfinite(v)), 1)
                             for r in rows]
                    f.line(ax, xs, means, f"{base} mean of {width}".strip(), key, key=key, color=_color(ri))
            else:
                level_epoch = key in rs.epoch and key not in rs.step
                f.line(ax, xs, ys, base or ("per epoch" if level_epoch else "per logged step"), key, key=key,
                       color=_color(ri), marker="o" if level_epoch or len(xs) < 12 else None, markersize=3)
            mean_key = rs.epoch_means.get(key)
            if mean_key:
                mx, my = rs.epoch[mean_key]
                f.line(ax, mx, my, f"{base} per epoch".strip(), key, key=mean_key, color=_color(ri),
                       linestyle="none", marker="o", markersize=3, legend=False)
        short = key[len(group) + 1:] if key.startswith(group + "/") else key
        _finish_ax(ax, short or key, legend=compare or len(ax.get_lines()) > 1)
    return f


def _signal_figures(runs: list[RunData], rss: list[RunSeries], w: _Writer, figures: list[Path]) -> tuple[list[FigureBlock], dict[str, list[str]]]:
    blocks: list[FigureBlock] = []
    plotted: dict[str, set[str]] = {r.label: set() for r in runs}
    for run, rs in zip(runs, rss):
        specs: list[tuple[str, Any, str]] = []
        for k in rs.step:
            m = re.match(r"^(.*?)student_T_mean$", k)
            if m and (m.group(1) == "" or m.group(1).endswith("/")):
                specs.append((f"dtkd-{m.group(1)}", lambda p=m.group(1): _fig_dtkd(run, rs, p),
                              "Per-sample DTKD temperatures of student and teacher over training (mean line, min–max "
                              "band at each logged step; dots: per-epoch mean/min/max) and how many samples fell back "
                              "to the base T."))
        learners = sorted({k.split("/")[1] for k in rs.step if k.startswith("balance/") and k.count("/") == 2})
        for ln in learners:
            specs.append((f"balance-{ln}", lambda ln=ln: _fig_balance(run, rs, ln),
                          "Gradient-based balancing: λ (share of the distillation gradient) within its allowed band, "
                          "the task and distillation gradient norms a and b, and their cosine c."))
        pairs = sorted({k.split("/")[1] for k in list(rs.step) + list(rs.epoch)
                        if k.startswith("switokd/") and (k.endswith("/gap") or k.endswith("/expert_frac"))})
        for pr in pairs:
            specs.append((f"switokd-{pr}", lambda pr=pr: _fig_switokd(run, rs, pr),
                          "SwitOKD: the gap G against the threshold δ (shaded: steps logged in expert mode, when the "
                          "teacher pauses), the label distances t and s with ε, and per epoch the fraction of steps "
                          "in expert mode and of steps the teacher was paused."))
        if any(k.startswith("unic/") for k in rs.step):
            specs.append(("unic", lambda: _fig_unic(run, rs),
                          "UNIC: per-teacher loss, the fraction of images on which each teacher was kept by teacher "
                          "dropping, each teacher's loss coefficient, and the standardiser momentum."))
        if any(k.startswith("rtk/") for k in list(rs.step) + list(rs.epoch)):
            specs.append(("rtk", lambda: _fig_rtk(run, rs),
                          "RTK: influence of each teacher layer over training (heatmap), the fraction of teacher keys "
                          "kept, and the attention entropy."))
        for name, make, caption in specs:
            fig = make()
            prefix = _slug(run.label) + "-" if len(runs) > 1 else ""
            blocks.append(_render(fig, w, f"signal-{prefix}{_slug(name)}.png", caption, figures))
            plotted[run.label] |= set(fig.keys)
    # Generic panels for every signal not drawn above (overlaid across runs).
    left: dict[str, list[str]] = {}
    for run, rs in zip(runs, rss):
        for k in rs.signals:
            if k not in plotted[run.label]:
                g = _group_of(k)
                if k not in left.setdefault(g, []):
                    left[g].append(k)
    for g, keys in left.items():
        for i in range(0, len(keys), 6):
            chunk = keys[i:i + 6]
            fig = _fig_generic(g, chunk, runs, rss)
            suffix = f"-{i // 6 + 1}" if len(keys) > 6 else ""
            blocks.append(_render(fig, w, f"signal-{_slug(g)}{suffix}.png",
                                  "Every logged value of these signals (dots: the per-epoch summary, where the run logged one).", figures))
            for run, rs in zip(runs, rss):
                plotted[run.label] |= {k for k in chunk if rs.get(k)} | {rs.epoch_means[k] for k in chunk
                                                                        if k in rs.epoch_means}
    return blocks, {k: sorted(v) for k, v in plotted.items()}


# ----------------------------------------------------------------------------------------------
# Tables


def _runs_table(runs: list[RunData], rss: list[RunSeries]) -> Table:
    rows = []
    for run, rs in zip(runs, rss):
        s = run.summary
        st = run.config.get("student", {})
        t_names = ", ".join(str(t.get("arch")) for t in run.config.get("teachers") or []) or "-"
        epoch_t = rs.epoch.get("time/epoch_s")
        ips = rs.epoch.get("images_per_s")
        rows.append([run.label, run.method, str(run.config.get("balance", {}).get("name", "fixed")), str(st.get("arch")),
                     t_names, str(run.config.get("data", {}).get("name", "?")), str(s.get("epochs", "-")),
                     _fmt(s.get("best_acc")), _fmt(s.get("final_acc")),
                     f"{sum(epoch_t[1]):.0f}" if epoch_t else "-",
                     f"{sum(ips[1]) / len(ips[1]):,.0f}" if ips else "-"])
    return Table("Runs", ["run", "method", "balance", "student", "teachers", "data", "epochs", "best top-1 %",
                          "final top-1 %", "train time s", "train images/s"], rows,
                 "best/final top-1: as recorded during training (summary.json).")


def _models_table(models: list[ModelEntry], which: str) -> Table:
    rows = []
    for m in models:
        lat = m.card.get("latency_b1") or {}
        thr = m.card.get("throughput_b64") or {}
        acc_src = "" if m.eval else (" †" if m.summary_acc is not None else "")
        rows.append([
            m.label, m.role, m.arch, _fmt(_top1(m)) + acc_src, _fmt(_top5(m)) + acc_src, _fmt_count(m.card.get("params")),
            _fmt_bytes(m.card.get("size_bytes")), _fmt_count(m.card.get("flops")),
            f"{lat['median_ms']:.3f} ms ({lat.get('threads', '?')} thr)" if lat.get("median_ms") else "-",
            f"{thr['images_per_s']:,.0f} img/s ({thr.get('threads', '?')} thr)" if thr.get("images_per_s") else "-",
            m.note or "",
        ])
    sources = sorted({m.card_source for m in models if m.card.get("latency_b1")})
    cap = (f"top-1/top-5: re-evaluated on the whole test split from {which}.pt for learners and the configured "
           "checkpoint for frozen teachers († = not re-evaluated: final value from summary.json). size: bytes of "
           "torch.save(state_dict). FLOPs per image: torch.utils.flop_counter (a multiply-add counts 2). CPU latency "
           "at batch 1 and throughput at batch 64: torch.utils.benchmark, median of ≥ 10 timed blocks, threads "
           "stated; summary.json: measured at the end of training (blocked_autorange), this report: all models "
           f"timed together in interleaved rounds (source: {', '.join(sources) or 'not measured'}).")
    return Table("Models: teacher vs student", ["model", "role", "arch", "top-1 %", "top-5 %", "params", "size",
                                                "FLOPs/image", "CPU latency b1", "CPU throughput b64", "note"], rows, cap)


def _ratio_table(models: list[ModelEntry]) -> Table | None:
    teachers = [m for m in models if m.role == "teacher"]
    if not teachers:
        return None
    rows = []
    for s in models:
        if s.role == "teacher":
            continue
        own = [t for t in teachers if s.run.label in t.teacher_of] or teachers[:1]
        t = own[0]
        ts, tt = _top1(s), _top1(t)

        def ratio(a: Any, b: Any) -> str:
            return f"{a / b:.1f}×" if a and b else "-"

        lt = (t.card.get("latency_b1") or {}).get("median_ms")
        ls = (s.card.get("latency_b1") or {}).get("median_ms")
        rows.append([s.label, t.label, f"{ts - tt:+.2f}" if ts is not None and tt is not None else "-",
                     ratio(t.card.get("params"), s.card.get("params")), ratio(t.card.get("size_bytes"), s.card.get("size_bytes")),
                     ratio(t.card.get("flops"), s.card.get("flops")), ratio(lt, ls)])
    if not rows:
        return None
    return Table("Student vs teacher", ["student", "teacher", "Δ top-1 (points)", "× fewer params", "× smaller file",
                                        "× fewer FLOPs", "× faster (b1)"], rows,
                 "Ratios are teacher / student: how much the student saves; Δ top-1 is student − teacher.")


def _per_class_table(models: list[ModelEntry]) -> Table:
    ev = [m for m in models if m.eval]
    nc = len(ev[0].eval["per_class"])
    names = ev[0].eval.get("class_names") or [str(c) for c in range(nc)]
    counts = [int((ev[0].eval["y"] == c).sum()) for c in range(nc)]
    rows = [[str(names[c]) if c < len(names) else str(c), str(counts[c])] + [_fmt(m.eval["per_class"][c], 1) for m in ev]
            for c in range(nc)]
    return Table("Per-class accuracy %", ["class", "images"] + [m.label for m in ev], rows)


def _agreement_table(pairs: list[dict[str, Any]]) -> Table:
    rows = [[p["student"], p["teacher"] + ("" if p["own_teacher"] else " (not its teacher)"), _fmt(p["agree"]),
             _fmt(p["agree_right"]), _fmt(p["teacher_only"]), _fmt(p["student_only"]), _fmt(p["disagree_wrong"]),
             str(p["n"])] for p in pairs]
    return Table("Agreement with the teacher", ["student", "teacher", "same prediction %", "both right %",
                                                "only teacher right %", "only student right %",
                                                "disagree, both wrong %", "images"], rows,
                 "Top-1 predictions on the test split. A student that disagrees mostly where the teacher is right has "
                 "room to learn more from it.")


# ----------------------------------------------------------------------------------------------
# Rendering


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;color:#222;
padding:0 16px;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:14px 0 6px}.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
.cap{color:#555;font-size:12px;max-width:1100px}figure{display:inline-block;vertical-align:top;margin:12px 18px 22px 0;
max-width:100%}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:12px;max-width:640px}.note{background:#fff8e1;padding:6px 10px;font-size:13px}
details{font-size:12px;color:#444}code{font-size:12px}
"""


def _html(report_title: str, meta: list[str], sections: list[Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(report_title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{e(report_title)}</h1>"]
    out += [f'<div class="meta">{e(m)}</div>' for m in meta]
    for sec in sections:
        out.append(f"<h2>{e(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, Table):
                out.append(f"<h3>{e(b.title)}</h3><table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in b.columns)
                           + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows]
                out.append("</tbody></table>")
                if b.caption:
                    out.append(f'<div class="cap">{e(b.caption)}</div>')
            elif isinstance(b, FigureBlock):
                out.append(f'<figure><img src="{e(b.file)}" alt="{e(b.title)}" loading="eager">'
                           f"<figcaption><b>{e(b.title)}.</b> {e(b.caption)}</figcaption>")
                if b.series:
                    out.append("<details><summary>numbers</summary><table><tr><th>series</th><th>trend</th><th>first</th>"
                               "<th>min</th><th>max</th><th>last</th></tr>")
                    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in _series_row(s)) + "</tr>" for s in b.series]
                    out.append("</table></details>")
                out.append("</figure>")
            else:
                out.append(f'<p class="note">{e(str(b))}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _series_row(s: Series) -> list[str]:
    fin = [v for v in s.y if math.isfinite(v)]
    if not fin:
        return [s.label, "", "-", "-", "-", "-"]
    first = next(v for v in s.y if math.isfinite(v))
    last = next(v for v in reversed(s.y) if math.isfinite(v))
    return [s.label, sparkline(s.y), _fmt_num(first), _fmt_num(min(fin)), _fmt_num(max(fin)), _fmt_num(last)]


def _md_cell(c: str) -> str:
    return str(c).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return out


def _markdown(report_title: str, meta: list[str], sections: list[Section]) -> str:
    out = [f"# {report_title}", ""] + [f"{m}  " for m in meta] + [""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Table):
                out += [f"### {b.title}", ""] + _md_table(b.columns, b.rows) + [""]
                if b.caption:
                    out += [f"_{b.caption}_", ""]
            elif isinstance(b, FigureBlock):
                out += [f"### {b.title}", "", f"![{b.title}]({b.file})", "", f"_{b.caption}_", ""]
                if b.series:
                    out += _md_table(["series", "trend", "first", "min", "max", "last"], [_series_row(s) for s in b.series])
                    out.append("")
            else:
                out += [f"> {b}", ""]
    return "\n".join(out)


def print_report(report: Report, console: Any = None) -> None:
    """The report's tables and figures (as sparkline tables) on a terminal, with rich."""
    from rich import box
    from rich.console import Console
    from rich.table import Table as RTable

    con = console or Console()
    con.rule(f"[bold]{report.title}")
    for sec in report.sections:
        con.print(f"\n[bold underline]{sec.title}[/]")
        for b in sec.blocks:
            if isinstance(b, Table):
                t = RTable(title=b.title, caption=b.caption or None, box=box.SIMPLE_HEAVY, title_justify="left")
                for i, c in enumerate(b.columns):
                    t.add_column(c, justify="left" if i == 0 else "right", overflow="fold")
                for r in b.rows:
                    t.add_row(*[str(c) for c in r])
                con.print(t)
            elif isinstance(b, FigureBlock) and not b.series:
                con.print(f"[dim]figure: {b.title} ({b.file}); its numbers are in the tables[/]")
            elif isinstance(b, FigureBlock):
                t = RTable(title=f"{b.title}  [dim]({b.file})[/]", box=box.SIMPLE, title_justify="left")
                for i, c in enumerate(["series", "trend", "first", "min", "max", "last"]):
                    t.add_column(c, justify="left" if i < 2 else "right", overflow="fold")
                for s in b.series:
                    t.add_row(*_series_row(s))
                con.print(t)
            else:
                con.print(f"[yellow]{b}[/]")
    con.print(f"\nreport: {report.html}  (markdown: {report.markdown})")


# ----------------------------------------------------------------------------------------------
# Entry point


def build_report(
    runs: list[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    which: str = "best",
    evaluate: bool = True,
    measure: bool | str = "auto",
    device: str = "cpu",
    networks: dict[str, Any] | None = None,
    title: str | None = None,
    threads: int | None = None,
) -> Report:
    """Write the report of ``runs`` (one run folder, or several for a comparison) and return it.

    Args:
        out: output folder; default ``<run>/report`` for one run (required for several).
        which: checkpoint the learners are re-evaluated from (``best`` or ``last``).
        evaluate: re-evaluate every network on the test split (per-class accuracy, agreement);
            otherwise accuracy comes from ``summary.json``.
        measure: ``"missing"`` (or True): measure FLOPs/latency/throughput the run did not record
            (``run.latency=false``); ``"all"``: re-measure latency and throughput of every model
            now, in one session, so the rows are comparable (runs measured at different times on
            a busy machine are not); ``"none"`` (or False); ``"auto"`` (default): ``"all"`` for
            a comparison of several runs, ``"missing"`` for one run.
        device: where the evaluation runs (latency is always measured on the CPU).
        threads: CPU threads for the batch-64 throughput this report measures (default: torch's
            setting; batch-1 latency always uses 1 thread). Values recorded by the run are kept.
        networks: ``{network name: nn.Module}`` for networks that cannot be rebuilt from the
            checkpoint (custom modules passed to :func:`adaptkd.train`); one run only.
    """
    t0 = time.perf_counter()
    paths = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    if not paths:
        raise ReportError("no run folder given")
    if which not in ("best", "last"):
        raise ReportError(f"which must be 'best' or 'last', got {which!r}")
    if networks and len(paths) != 1:
        raise ReportError("networks= is supported for a report of one run only")
    resolved = [Path(os.path.expanduser(str(p))) for p in paths]
    run_list = [load_run(p, lab) for p, lab in zip(resolved, _labels(resolved))]
    out_dir = _prepare_out(run_list, out)
    w = _Writer(out_dir)
    old = _old_files(out_dir)
    notes: list[str] = []
    import torch

    models = _collect_models(run_list, which)
    if evaluate:
        _evaluate(models, which, device, networks, notes)
    mode = {True: "missing", False: "none"}.get(measure, measure) if isinstance(measure, bool) else measure
    if mode == "auto":
        mode = "all" if len(run_list) > 1 else "missing"
    if mode not in ("missing", "all", "none"):
        raise ReportError(f"measure must be 'auto', 'missing', 'all' or 'none', got {measure!r}")
    if mode != "none":
        _measure(models, which, networks, threads, remeasure=mode == "all")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if any(m.card_source != "summary.json" for m in models) and load > (os.cpu_count() or 1):
            notes.append(f"the machine was busy while the report timed the models (load average {load:.1f} on "
                         f"{os.cpu_count()} CPUs): absolute latencies are inflated and noisy; the models were timed "
                         "in interleaved rounds, so their ratios are the figures to trust")
    rss = [run_series(r) for r in run_list]
    figures: list[Path] = []
    sections: list[Section] = []

    sec = Section("Summary")
    sec.blocks.append(_runs_table(run_list, rss))
    sec.blocks.append(_models_table(models, which))
    ratio = _ratio_table(models)
    if ratio:
        sec.blocks.append(ratio)
    if any(_top1(m) is not None for m in models):
        sec.blocks.append(_render(_fig_accuracy(models), w, "accuracy.png",
                                  "Top-1 and top-5 accuracy of every model on the test split.", figures))
    trade = _fig_tradeoff(models)
    if trade is not None:
        sec.blocks.append(_render(trade, w, "tradeoff.png", "What each model costs for its accuracy.", figures))
    sections.append(sec)

    ev = [m for m in models if m.eval]
    if ev and len(ev[0].eval["per_class"]) <= MAX_PER_CLASS and len({m.data_key for m in ev}) == 1:
        sec = Section("Per-class accuracy")
        sec.blocks.append(_render(_fig_per_class(models), w, "per_class.png",
                                  "Accuracy per class: where the student falls behind its teacher.", figures))
        sec.blocks.append(_per_class_table(models))
        sections.append(sec)
    elif ev and len(ev[0].eval["per_class"]) > MAX_PER_CLASS:
        notes.append(f"per-class accuracy is shown for datasets of at most {MAX_PER_CLASS} classes")

    pairs = _pairs(models)
    if pairs:
        sec = Section("Agreement between student and teacher")
        sec.blocks.append(_render(_fig_agreement(pairs), w, "agreement.png",
                                  "How often each student predicts what the teacher predicts, split by who is right.",
                                  figures))
        sec.blocks.append(_agreement_table(pairs))
        sections.append(sec)

    sec = Section("Training")
    if any(r.records for r in run_list):
        sec.blocks.append(_render(_fig_curves(run_list, rss, models), w, "curves.png",
                                  "Accuracy per epoch, loss terms and learning rate per logged step, training throughput"
                                  " and any loss weight that changes (warm-ups, balancers).", figures))
    else:
        sec.blocks.append("no metrics.jsonl records: the run has not logged anything yet")
    sections.append(sec)

    sec = Section("Adaptive signals")
    sig_blocks, plotted = _signal_figures(run_list, rss, w, figures)
    found = {r.label: sorted(set(rs.signals) | set(rs.epoch_means.values())) for r, rs in zip(run_list, rss)}
    if sig_blocks:
        sec.blocks += sig_blocks
    else:
        sec.blocks.append("this run logged no adaptive signals (its method has fixed weights and no adaptive state)"
                          if len(run_list) == 1 else "these runs logged no adaptive signals")
    sections.append(sec)
    missing = {lab: sorted(set(found[lab]) - set(plotted.get(lab, []))) for lab in found}
    for lab, keys in missing.items():
        if keys:
            notes.append(f"{lab}: signals not plotted: {', '.join(keys)}")
    if notes:
        sections[0].blocks.insert(0, "Notes: " + " | ".join(notes))

    report_title = title or ("adaptkd report — " + (run_list[0].label if len(run_list) == 1
                                                     else f"comparison of {len(run_list)} runs"))
    meta = [f"runs: {', '.join(f'{r.label} ({r.method})' for r in run_list)}",
            f"generated {time.strftime('%Y-%m-%d %H:%M')} by adaptkd with torch {torch.__version__} on "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"]
    html_path = w.text("report.html", _html(report_title, meta, sections))
    md_path = w.text("report.md", _markdown(report_title, meta, sections))
    manifest = {
        "title": report_title, "runs": [str(r.path) for r in run_list],
        "figures": [{"file": b.file, "title": b.title, "keys": b.keys} for s in sections for b in s.blocks
                    if isinstance(b, FigureBlock)],
        "signals": found, "plotted": plotted, "notes": notes, "seconds": round(time.perf_counter() - t0, 2),
        "models": [{"label": m.label, "role": m.role, "arch": m.arch, "top1": _top1(m), "top5": _top5(m),
                    "evaluated": m.eval is not None, **{k: m.card.get(k) for k in ("params", "size_bytes", "flops",
                                                                                   "latency_b1", "throughput_b64")}}
                   for m in models],
        "agreement": pairs,
    }
    man_path = w.text("report.json", json.dumps(manifest, indent=2, default=str))
    for name in old - set(w.written):
        stale = out_dir / name
        if _SAFE_NAME.match(name) and stale.is_file() and not stale.is_symlink():
            stale.unlink()
    return Report(title=report_title, out=out_dir, html=html_path, markdown=md_path, manifest=man_path,
                  sections=sections, figures=figures, signals=found, plotted=plotted, notes=notes)


def _old_files(out_dir: Path) -> set[str]:
    """Files a previous report in this folder wrote (from its manifest), to remove the stale ones."""
    man = out_dir / "report.json"
    if not man.is_file() or man.is_symlink():
        return set()
    try:
        data = json.loads(man.read_text(encoding="utf-8"))
        return {f["file"] for f in data.get("figures", []) if isinstance(f, dict) and isinstance(f.get("file"), str)}
    except (json.JSONDecodeError, OSError, TypeError):
        return set()
