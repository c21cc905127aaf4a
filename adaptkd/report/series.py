"""A run's ``metrics.jsonl`` as plotted series: x in fractional epochs, signal keys, per-epoch summaries."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from adaptkd.report.runs import RunData

__all__ = ["RunSeries", "Series", "Timeline", "run_series", "scalar_series", "signal_keys", "sparkline"]

BARS = "▁▂▃▄▅▆▇█"



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
        return "".join(BARS[3] if math.isfinite(v) else " " for v in vals)
    return "".join(BARS[min(int((v - lo) / (hi - lo) * len(BARS)), len(BARS) - 1)] if math.isfinite(v) else " "
                   for v in vals)




def scalar_series(rs: RunSeries, key: str) -> tuple[list[float], list[float]] | None:
    """``(xs, values)`` of a scalar signal (step level first); None when absent or list-valued."""
    got = rs.step.get(key) or rs.epoch.get(key)
    if not got:
        return None
    xs, ys = got
    if any(isinstance(y, list) for y in ys):
        return None
    return xs, [float(y) for y in ys]
