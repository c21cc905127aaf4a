"""DTKD accuracy evidence on the synthetic benchmark (issue 3): two tables.

1. Methods: ce, kd, dkd, dtkd and dtkd+dkd (a ``compose`` config) for one teacher→student
   pair, mean ± std over seeds of the student's final and best test top-1.
2. Teacher depth (the DTKD README's bar chart at CPU scale): one small student (resnet8) from
   teachers of growing depth (resnet14 → resnet56), plain KD vs DTKD, with the teachers' own
   accuracy and the student trained alone.

Every run starts from ``--base`` (the calibrated synthetic recipe, ``benchmarks/synthetic.yaml``:
its data, optim and run sections); teachers are trained first with method ``ce`` and reused.
Finished runs (``summary.json`` present) are not run again, so an interrupted benchmark resumes.
Warm-ups: the CIFAR recipes warm the distillation terms up over 20 of 240 epochs; a short run
keeps that fraction (``--warmup`` to override).

    python benchmarks/dtkd_accuracy.py --base benchmarks/synthetic.yaml
    python benchmarks/dtkd_accuracy.py --base benchmarks/synthetic.yaml --epochs 5 --seeds 0 1 2 \\
        --depths resnet14 resnet20 resnet32 --set data.train_size=5000

Prints Markdown tables and writes them with the raw numbers to ``<out>/tables.md`` and
``<out>/results.json``. Single-threaded by default (``--threads``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptkd.config import apply_overrides  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402


def methods(warmup: float) -> dict[str, dict[str, Any]]:
    """The compared method sections (library defaults = the reference defaults)."""
    return {
        "ce": {"name": "ce"},
        "kd": {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9},
        "dkd": {"name": "dkd", "temperature": 4.0, "ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "warmup_epochs": warmup},
        "dtkd": {"name": "dtkd", "temperature": 4.0, "alpha": 3.0, "beta": 1.0, "ce_weight": 1.0, "warmup_epochs": warmup},
        "dtkd+dkd": {"name": "compose", "terms": [
            {"loss": "dtkd", "weight": 3.0, "warmup_epochs": warmup},
            {"loss": "dkd", "weight": 1.0, "beta": 8.0, "warmup_epochs": warmup},
            {"loss": "ce", "weight": 1.0}]},
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        base = yaml.safe_load(Path(args.base).read_text(encoding="utf-8"))
        base = apply_overrides(base, list(args.set))
        if args.epochs:
            base.setdefault("optim", {})["epochs"] = args.epochs
        base.setdefault("run", {}).update({"progress": False, "tensorboard": False, "latency": False})
        base.pop("teachers", None)
        base.pop("peers", None)
        self.base = base
        self.epochs = int(base.get("optim", {}).get("epochs", 240))
        self.warmup = args.warmup if args.warmup is not None else max(1.0, round(self.epochs * 20 / 240, 2))
        self.out = Path(args.out)
        self.results: dict[str, Any] = {"base": args.base, "overrides": list(args.set), "epochs": self.epochs,
                                        "warmup_epochs": self.warmup, "runs": {}}

    def run(self, name: str, student: str, method: dict, seed: int, teacher: str | None = None,
            teacher_epochs: int | None = None) -> dict[str, float]:
        out = self.out / name
        summary = out / "summary.json"
        if not summary.is_file():
            cfg = copy.deepcopy(self.base)
            cfg["student"] = {"arch": student}
            cfg["method"] = copy.deepcopy(method)
            if teacher:
                cfg["teachers"] = [{"arch": teacher, "checkpoint": str(self.teacher(teacher))}]
            if teacher_epochs:
                cfg["optim"]["epochs"] = teacher_epochs
            cfg["run"].update({"out": str(out), "seed": seed, "overwrite": True})
            print(f"[dtkd_accuracy] training {name}", flush=True)
            Trainer(cfg, log=lambda s: None).fit()
        s = json.loads(summary.read_text(encoding="utf-8"))
        res = {"final": float(s["final_acc"]), "best": float(s["best_acc"])}
        self.results["runs"][name] = res
        return res

    def teacher(self, arch: str) -> Path:
        self.run(f"teachers/{arch}", arch, {"name": "ce"}, self.args.teacher_seed, teacher_epochs=self.args.teacher_epochs)
        return self.out / "teachers" / arch / "best.pt"

    def table_methods(self) -> str:
        t, s = self.args.pair.split(":")
        rows = ["| method | final top-1 (mean ± std) | best top-1 (mean ± std) | seeds |", "|---|---|---|---|"]
        teacher_acc = self.run(f"teachers/{t}", t, {"name": "ce"}, self.args.teacher_seed,
                               teacher_epochs=self.args.teacher_epochs)
        for m, section in methods(self.warmup).items():
            accs = [self.run(f"methods/{m}/seed{seed}", s, section, seed, None if m == "ce" else t) for seed in self.args.seeds]
            rows.append(f"| {m} | {fmt([a['final'] for a in accs])} | {fmt([a['best'] for a in accs])} | {len(accs)} |")
        head = (f"{t} → {s} (teacher final top-1 {teacher_acc['final']:.2f}); {self.epochs} epochs, "
                f"distillation warm-up {self.warmup} epochs\n\n")
        return head + "\n".join(rows)

    def table_depth(self) -> str:
        st = self.args.depth_student
        ce = [self.run(f"depth/ce/seed{seed}", st, {"name": "ce"}, seed) for seed in self.args.depth_seeds]
        ms = methods(self.warmup)
        rows = [f"| teacher | teacher top-1 | KD → {st} | DTKD → {st} | DTKD − KD |", "|---|---|---|---|---|"]
        for arch in self.args.depths:
            tacc = self.run(f"teachers/{arch}", arch, {"name": "ce"}, self.args.teacher_seed,
                            teacher_epochs=self.args.teacher_epochs)
            kd = [self.run(f"depth/kd/{arch}/seed{seed}", st, ms["kd"], seed, arch)["final"] for seed in self.args.depth_seeds]
            dt = [self.run(f"depth/dtkd/{arch}/seed{seed}", st, ms["dtkd"], seed, arch)["final"] for seed in self.args.depth_seeds]
            rows.append(f"| {arch} | {tacc['final']:.2f} | {fmt(kd)} | {fmt(dt)} | {statistics.mean(dt) - statistics.mean(kd):+.2f} |")
        head = (f"student {st} trained alone: {fmt([c['final'] for c in ce])}; final top-1, "
                f"{len(self.args.depth_seeds)} seed(s), {self.epochs} epochs\n\n")
        return head + "\n".join(rows)


def fmt(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="benchmarks/synthetic.yaml", help="the synthetic recipe (data/optim/run)")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides of the base recipe")
    p.add_argument("--epochs", type=int, help="student epochs (default: the base recipe's)")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default: as the students)")
    p.add_argument("--warmup", type=float, help="distillation warm-up epochs (default: 20/240 of the run)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher-seed", type=int, default=0)
    p.add_argument("--pair", default="resnet32x4:resnet8x4", help="teacher:student of the methods table")
    p.add_argument("--depths", nargs="+", default=["resnet14", "resnet20", "resnet32", "resnet44", "resnet56"])
    p.add_argument("--depth-student", default="resnet8")
    p.add_argument("--depth-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--only", choices=["methods", "depth"], help="run one of the two tables")
    p.add_argument("--out", default="runs/bench/dtkd")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.base).is_file():
        p.error(f"--base {args.base!r} does not exist (the calibrated synthetic recipe, benchmarks/synthetic.yaml)")

    bench = Bench(args)
    parts = []
    if args.only in (None, "methods"):
        parts.append("### Methods\n\n" + bench.table_methods())
    if args.only in (None, "depth"):
        parts.append("### Teacher depth\n\n" + bench.table_depth())
    text = "\n\n".join(parts) + "\n"
    print(text)
    bench.out.mkdir(parents=True, exist_ok=True)
    (bench.out / "tables.md").write_text(text, encoding="utf-8")
    (bench.out / "results.json").write_text(json.dumps(bench.results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
