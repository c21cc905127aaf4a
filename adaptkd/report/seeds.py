"""Runs of the same configuration that differ only in their seed: grouped, so the report shows the spread.

Two runs belong to one group when their configs are equal once the seed and the bookkeeping of the run
folder (``run.seed``, ``run.out``, ``run.overwrite``, ``run.resume``, ``run.progress``) are set aside.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adaptkd.report.models import ModelEntry
from adaptkd.report.runs import RunData

__all__ = ["ModelRow", "SeedGroup", "mean_std", "model_rows", "seed_groups"]

_NOT_CONFIG = ("seed", "out", "overwrite", "resume", "progress")


@dataclass
class SeedGroup:
    """``runs`` of one configuration (one run when it has no repeats); ``label`` names the group."""

    label: str
    runs: list[RunData]

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("run", {}).get("seed") for r in self.runs]

    @property
    def repeated(self) -> bool:
        return len(self.runs) > 1


def _config_key(run: RunData) -> str:
    cfg = dict(run.config)
    cfg["run"] = {k: v for k, v in (cfg.get("run") or {}).items() if k not in _NOT_CONFIG}
    return json.dumps(cfg, sort_keys=True, default=str)


def _group_label(runs: list[RunData]) -> str:
    if len(runs) == 1:
        return runs[0].label
    prefix = os.path.commonprefix([r.label for r in runs])  # "kd-s0", "kd-s1" -> "kd"; "a/seed0", "a/seed1" -> "a"
    prefix = re.sub(r"([-_/. ]+(seed|s))?[-_/. ]*$", "", prefix)
    return prefix or runs[0].method


def seed_groups(runs: list[RunData]) -> list[SeedGroup]:
    """The runs grouped by configuration, groups in the order of their first run."""
    by_key: dict[str, list[RunData]] = {}
    for r in runs:
        by_key.setdefault(_config_key(r), []).append(r)
    groups = [SeedGroup(_group_label(rs), rs) for rs in by_key.values()]
    labels = [g.label for g in groups]
    for g in groups:  # two different configurations must not share a label
        if labels.count(g.label) > 1 and g.repeated:
            g.label = f"{g.label} ({g.runs[0].label}…)"
    return groups


def mean_std(values: list[float | None]) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation (n − 1; 0 for one value) and count of the finite values; None if none."""
    fin = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not fin:
        return None
    m = sum(fin) / len(fin)
    sd = math.sqrt(sum((v - m) ** 2 for v in fin) / (len(fin) - 1)) if len(fin) > 1 else 0.0
    return m, sd, len(fin)


@dataclass
class ModelRow:
    """One model of a figure: a single evaluated network, or the same network over a group of seeds."""

    label: str
    role: str
    arch: str
    entries: list[ModelEntry]

    def stats(self, value: Callable[[ModelEntry], float | None]) -> tuple[float, float, int] | None:
        return mean_std([value(e) for e in self.entries])


def model_rows(models: list[ModelEntry], groups: list[SeedGroup]) -> list[ModelRow]:
    """``models`` with each network of a repeated configuration merged over its seeds (first-seen order)."""
    group_of = {id(r): g for g in groups for r in g.runs}
    rows: dict[tuple[Any, ...], ModelRow] = {}
    for m in models:
        g = group_of.get(id(m.run))
        if g is None or not g.repeated or m.weights == "file":  # a frozen teacher file is one model
            rows[("model", id(m))] = ModelRow(m.label, m.role, m.arch, [m])
            continue
        key = ("group", id(g), m.name, m.role)
        if key not in rows:
            name = "" if m.name == "student" else f"/{m.name}"
            rows[key] = ModelRow(f"{g.label}{name} ({len(g.runs)} seeds)", m.role, m.arch, [])
        rows[key].entries.append(m)
    return list(rows.values())
