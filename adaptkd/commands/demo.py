"""``adaptkd demo`` — the main job on bundled data, no download.

Trains a teacher (method ``ce``), then three students from scratch — ``ce`` (alone), ``kd`` and
``dkd`` — prints the comparison (accuracy, parameters, size and CPU latency per model) and writes
the report card of all four runs to ``<out>/report/report.html`` (see ``adaptkd report``).
The recipe is ``adaptkd/recipes/demo.yaml`` (a normal config; every key can be overridden).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

STUDENT_METHODS = ("ce", "kd", "dkd")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="train a teacher and ce/kd/dkd students on bundled data; print the comparison",
                       description=__doc__)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--methods", default=",".join(STUDENT_METHODS), help="student methods, comma-separated")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every run (e.g. run.seed=1)")
    p.set_defaults(func=run)
    return p


def demo_recipe() -> dict[str, Any]:
    """The embedded demo recipe: {"common": ..., "teacher": ..., "student": ..., "methods": ...}."""
    text = resources.files("adaptkd.recipes").joinpath("demo.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def student_config(recipe: dict[str, Any], method: str, teacher_arch: str, teacher_checkpoint: str) -> dict[str, Any]:
    """The raw config of one student run of a recipe (``common`` + ``student`` + ``methods[method]``),
    distilled from the given teacher checkpoint unless ``method`` is ``ce``."""
    from adaptkd.config import merge_config

    raw = merge_config(merge_config(recipe["common"], recipe["student"]), recipe.get("methods", {}).get(method, {}))
    raw["method"] = {**raw.get("method", {}), "name": method}
    if method != "ce":
        raw["teachers"] = [{"arch": teacher_arch, "checkpoint": teacher_checkpoint}]
    return raw


def run(args: argparse.Namespace) -> int:
    from adaptkd.config import load_config, merge_config
    from adaptkd.engine.trainer import Trainer

    recipe = demo_recipe()
    out = Path(args.out)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    quick = ["optim.epochs=1", "run.max_steps_per_epoch=3", "run.latency=false"] if args.quick else []
    over = quick + list(args.overrides) + ["run.overwrite=true"]
    t_start = time.perf_counter()

    teacher_cfg = load_config(merge_config(recipe["common"], recipe["teacher"]), over + [f"run.out={out / 'teacher'}"])
    print(f"[1/{1 + len(methods)}] teacher {teacher_cfg.student.arch} on {teacher_cfg.data.name} "
          f"({teacher_cfg.optim.epochs} epochs)")
    teacher = Trainer(teacher_cfg).fit()
    rows = [("teacher (ce)", teacher_cfg.student.arch, teacher["learners"]["student"])]
    runs = {"teacher": str(out / "teacher")}
    for i, method in enumerate(methods):
        raw = student_config(recipe, method, teacher_cfg.student.arch, str(out / "teacher" / "best.pt"))
        cfg = load_config(raw, over + [f"run.out={out / method}"])
        print(f"[{i + 2}/{1 + len(methods)}] student {cfg.student.arch} with {method} ({cfg.optim.epochs} epochs)")
        res = Trainer(cfg).fit()
        rows.append((f"student ({method})", cfg.student.arch, res["learners"]["student"]))
        runs[method] = str(out / method)
    elapsed = time.perf_counter() - t_start
    table = comparison_table(rows)
    from rich.console import Console

    Console().print(table)
    print(f"demo finished in {elapsed:.0f}s; runs in {out}/")
    (out / "demo.json").write_text(json.dumps({"runs": runs, "elapsed_s": elapsed, "rows": [
        {"model": r[0], "arch": r[1], **{k: v for k, v in r[2].items()}} for r in rows]}, indent=2))
    from adaptkd.report import build_report

    rep = build_report(list(runs.values()), out / "report", title="adaptkd demo: teacher vs ce / kd / dkd students")
    print(f"report card (accuracy, size, latency, agreement, curves, signals): {rep.html}")
    print(f"  text version: {rep.markdown}; open the HTML in a browser or run: adaptkd report {' '.join(runs.values())}"
          f" --out {out / 'report'}")
    return 0


def comparison_table(rows):
    from rich.table import Table

    t = Table(title="adaptkd demo: teacher vs students (test split)")
    for col in ("model", "arch", "top-1 %", "vs ce", "params", "size KB", "CPU b1 ms"):
        t.add_column(col, justify="right" if col not in ("model", "arch") else "left", no_wrap=True)
    ce = next((s["final_acc"] for label, _, s in rows if label == "student (ce)"), None)
    for label, arch, s in rows:
        lat = s.get("latency_b1", {}).get("median_ms")
        delta = f"{s['final_acc'] - ce:+.2f}" if ce is not None and label != "student (ce)" else "-"
        t.add_row(label, arch, f"{s['final_acc']:.2f}", delta, f"{s['params']:,}", f"{s['size_bytes'] / 1024:.1f}",
                  f"{lat:.3f}" if lat is not None else "-")
    return t
