"""Feature-distillation accuracy on the synthetic benchmark (issue 6).

Table 1: ce, kd, fitnet, afd and rtk for one teacher→student pair, mean ± std over seeds of the
student's final and best test top-1. Table 2: RTK's kept-key fraction per epoch (mean over seeds
of the epoch means the method logs as ``rtk/kept_fraction_epoch``).

Every run starts from ``--base`` (the synthetic recipe ``benchmarks/synthetic.yaml``: its ``common``
section plus ``teacher`` for the teacher, trained first with method ``ce`` and reused, and
``student`` for the students; a flat config is used for both). ``--epochs`` and ``--set`` change
teacher and students alike.
Method options are the library defaults (= the CIFAR recipes': AFD's CE + 0.9·KD + 200·AFD, RTK
with AFD's weights, FitNet one-stage CE + 100·hint from the middle tap block). Finished runs
(``summary.json`` present) are not run again, so an interrupted benchmark resumes.

    python benchmarks/features_accuracy.py --base benchmarks/synthetic.yaml
    python benchmarks/features_accuracy.py --epochs 5 --seeds 0 1 2 --set data.train_size=5000

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

from adaptkd.config import apply_overrides, merge_config  # noqa: E402
from adaptkd.engine.logger import read_metrics  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402

METHODS: dict[str, dict[str, Any]] = {
    "ce": {"name": "ce"},
    "kd": {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9},
    "fitnet": {"name": "fitnet"},
    "afd": {"name": "afd"},
    "rtk": {"name": "rtk"},
}


def fmt(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        raw = yaml.safe_load(Path(args.base).read_text(encoding="utf-8")) or {}
        if "common" in raw:  # the synthetic recipe: common + teacher / student sections
            bases = {"teacher": merge_config(raw["common"], raw.get("teacher", {})),
                     "student": merge_config(raw["common"], raw.get("student", {}))}
        else:
            bases = {"teacher": raw, "student": raw}
        self.bases = {}
        for role, base in bases.items():
            base = apply_overrides(base, list(args.set))
            if args.epochs:
                base.setdefault("optim", {})["epochs"] = args.epochs
            if role == "teacher" and args.teacher_epochs:
                base.setdefault("optim", {})["epochs"] = args.teacher_epochs
            base.setdefault("run", {}).update({"progress": False, "tensorboard": False, "latency": False,
                                               "threads": args.threads})
            for key in ("teachers", "peers", "balance", "method"):
                base.pop(key, None)
            self.bases[role] = base
        t, s = args.pair.split(":") if args.pair else (None, None)
        self.teacher_arch = t or self.bases["teacher"].get("student", {}).get("arch")
        self.student_arch = s or self.bases["student"].get("student", {}).get("arch")
        if not self.teacher_arch or not self.student_arch:
            raise SystemExit("--base names no teacher/student network: give --pair teacher:student")
        self.out = Path(args.out)
        self.results: dict[str, Any] = {"base": args.base, "overrides": list(args.set),
                                        "pair": f"{self.teacher_arch}:{self.student_arch}",
                                        "epochs": int(self.bases["student"].get("optim", {}).get("epochs", 240)),
                                        "runs": {}}

    def run(self, name: str, role: str, arch: str, method: dict, seed: int, teacher: Path | None = None) -> dict[str, Any]:
        out = self.out / name
        summary = out / "summary.json"
        if not summary.is_file():
            cfg = copy.deepcopy(self.bases[role])
            cfg["student"] = {"arch": arch}
            cfg["method"] = copy.deepcopy(method)
            if teacher is not None:
                cfg["teachers"] = [{"arch": self.teacher_arch, "checkpoint": str(teacher)}]
            cfg["run"].update({"out": str(out), "seed": seed, "overwrite": True})
            print(f"[features_accuracy] training {name}", flush=True)
            Trainer(cfg, log=lambda s: None).fit()
        s = json.loads(summary.read_text(encoding="utf-8"))
        epochs = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "epoch"]
        res = {"final": float(s["final_acc"]), "best": float(s["best_acc"]),
               "kept": [r["rtk/kept_fraction_epoch"] for r in epochs if "rtk/kept_fraction_epoch" in r]}
        self.results["runs"][name] = res
        return res

    def tables(self) -> str:
        t, s = self.teacher_arch, self.student_arch
        tacc = self.run(f"teacher/{t}", "teacher", t, {"name": "ce"}, self.args.teacher_seed)
        ckpt = self.out / "teacher" / t / "best.pt"
        rows = ["| method | final top-1 (mean ± std) | best top-1 (mean ± std) | seeds |", "|---|---|---|---|"]
        kept: list[list[float]] = []
        for m in self.args.methods:
            accs = [self.run(f"methods/{m}/seed{seed}", "student", s, METHODS[m], seed, None if m == "ce" else ckpt)
                    for seed in self.args.seeds]
            rows.append(f"| {m} | {fmt([a['final'] for a in accs])} | {fmt([a['best'] for a in accs])} | {len(accs)} |")
            if m == "rtk":
                kept = [a["kept"] for a in accs]
        text = (f"{t} → {s} (teacher final top-1 {tacc['final']:.2f}); {self.results['epochs']} epochs\n\n"
                + "\n".join(rows))
        if kept and all(kept):
            n = min(len(k) for k in kept)
            krows = ["| epoch | RTK kept fraction (mean over seeds) |", "|---:|---:|"]
            krows += [f"| {e + 1} | {statistics.mean(k[e] for k in kept):.3f} |" for e in range(n)]
            text += "\n\n" + "\n".join(krows)
        return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="benchmarks/synthetic.yaml", help="the synthetic recipe (data/optim/run)")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides of the base recipe")
    p.add_argument("--epochs", type=int, help="student epochs (default: the base recipe's)")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default: as the students)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher-seed", type=int, default=0)
    p.add_argument("--pair", help="teacher:student (default: the recipe's teacher and student networks)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", default="runs/bench/features")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.base).is_file():
        p.error(f"--base {args.base!r} does not exist (the calibrated synthetic recipe, benchmarks/synthetic.yaml)")
    bench = Bench(args)
    text = bench.tables() + "\n"
    print(text)
    bench.out.mkdir(parents=True, exist_ok=True)
    (bench.out / "tables.md").write_text(text, encoding="utf-8")
    (bench.out / "results.json").write_text(json.dumps(bench.results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
