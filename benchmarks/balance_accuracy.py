"""Accuracy of FixedBalance vs GradientBalance (safe, ratio) for kd and dtkd on the synthetic benchmark.

Every run starts from ``--base``, the synthetic recipe ``benchmarks/synthetic.yaml``: its
``common`` section plus ``teacher`` (the teacher's network, trained first with method ``ce``, seed
0, and reused) or ``student`` (the student's network) — or a flat config of data/optim/run
sections with ``--teacher``/``--student``. ``--epochs`` and ``--set key=value`` change teacher and
students alike. Finished runs (``summary.json`` present) are reused, so an interrupted benchmark
resumes where it stopped.

    python benchmarks/balance_accuracy.py --base benchmarks/synthetic.yaml
    python benchmarks/balance_accuracy.py --base benchmarks/synthetic.yaml --epochs 5 --seeds 0 1 2 \\
        --set data.train_size=5000

Balancers: ``fixed``, ``gradient-safe`` (λ0 = 0.9), ``gradient-ratio`` (κ = 1) by default;
``--balancers ... gradient-safe-method`` adds safe with λ0 = the method's own group balance.

Writes ``<out>/tables.md`` and ``<out>/results.json`` and plots λ per logged step (mean over
seeds; FixedBalance's λ is the method's own W_D/(W_T+W_D)) to ``--png``. Single-threaded by
default (``--threads``).
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
from adaptkd.methods import method_class  # noqa: E402

BALANCERS: dict[str, dict[str, Any]] = {
    "fixed": {"name": "fixed"},
    "gradient-safe": {"name": "gradient", "controller": "safe"},                           # λ0 = 0.9
    "gradient-ratio": {"name": "gradient", "controller": "ratio"},                         # κ = 1
    "gradient-safe-method": {"name": "gradient", "controller": "safe", "lambda0": "method"},  # λ0 = method's own
}
DEFAULT_BALANCERS = ["fixed", "gradient-safe", "gradient-ratio"]


def method_sections(warmup: float) -> dict[str, dict[str, Any]]:
    return {
        "kd": {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9},
        "dtkd": {"name": "dtkd", "temperature": 4.0, "alpha": 3.0, "beta": 1.0, "ce_weight": 1.0, "warmup_epochs": warmup},
    }


def lambda_curve(run: Path, method: str) -> tuple[list[int], list[float]]:
    """(steps, λ) from a run's step records: the balancer's λ, or the method's own group balance."""
    task = method_class(method).task_terms
    steps, lams = [], []
    for r in read_metrics(run / "metrics.jsonl"):
        if r.get("kind") != "step":
            continue
        if "balance/student/lambda" in r:
            lam = r["balance/student/lambda"]
        else:
            w = {k.split("/", 2)[2]: v for k, v in r.items() if k.startswith("weight/student/")}
            wt = sum(v for k, v in w.items() if k in task)
            wd = sum(v for k, v in w.items() if k not in task)
            lam = wd / (wt + wd) if wt + wd > 0 else float("nan")
        steps.append(int(r["step"]))
        lams.append(float(lam))
    return steps, lams


def last_epoch_lambda(run: Path, lams: list[float], epochs: int) -> float:
    """Mean λ over every step of the last epoch (the balancer's epoch mean), or, for
    FixedBalance, the method's group balance at the last logged steps."""
    ep = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "epoch"]
    if ep and "train/balance/student/lambda" in ep[-1]:
        return float(ep[-1]["train/balance/student/lambda"])
    return statistics.fmean(lams[-max(1, len(lams) // epochs):])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        raw = yaml.safe_load(Path(args.base).read_text(encoding="utf-8")) or {}
        if "common" in raw:  # the synthetic recipe's layout
            self.bases = {"teacher": merge_config(raw["common"], raw.get("teacher", {})),
                          "student": merge_config(raw["common"], raw.get("student", {}))}
        else:
            self.bases = {"teacher": raw, "student": raw}
        for role, base in self.bases.items():
            base = apply_overrides(base, list(args.set))
            if args.epochs:
                base.setdefault("optim", {})["epochs"] = args.epochs
            base.setdefault("run", {}).update({"progress": False, "tensorboard": False, "latency": False,
                                               "threads": args.threads})
            for key in ("teachers", "peers", "balance", "method"):
                base.pop(key, None)
            self.bases[role] = base
        self.teacher_arch = args.teacher or self.bases["teacher"].get("student", {}).get("arch")
        self.student_arch = args.student or self.bases["student"].get("student", {}).get("arch")
        if not self.teacher_arch or not self.student_arch:
            raise SystemExit("--base has no teacher/student network: give --teacher and --student")
        self.epochs = int(self.bases["student"].get("optim", {}).get("epochs", 240))
        self.warmup = args.warmup if args.warmup is not None else max(1.0, round(self.epochs * 20 / 240, 2))
        self.out = Path(args.out)
        self.results: dict[str, Any] = {"base": args.base, "overrides": list(args.set), "epochs": self.epochs,
                                        "over": args.over, "teacher": self.teacher_arch, "student": self.student_arch,
                                        "runs": {}}

    def run(self, name: str, role: str, arch: str, method: dict, balance: dict, seed: int,
            teacher: Path | None) -> dict[str, float]:
        out = self.out / name
        if not (out / "summary.json").is_file():
            cfg = copy.deepcopy(self.bases[role])
            cfg["student"] = {"arch": arch}
            cfg["method"] = copy.deepcopy(method)
            cfg["balance"] = copy.deepcopy(balance)
            if teacher is not None:
                cfg["teachers"] = [{"arch": self.teacher_arch, "checkpoint": str(teacher)}]
            cfg["run"].update({"out": str(out), "seed": seed, "overwrite": True})
            print(f"[balance_accuracy] training {name}", flush=True)
            Trainer(cfg, log=lambda s: None).fit()
        s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        res = {"final": float(s["final_acc"]), "best": float(s["best_acc"])}
        self.results["runs"][name] = res
        return res

    def table(self) -> tuple[str, dict[str, dict[str, list[tuple[list[int], list[float]]]]]]:
        a = self.args
        t_acc = self.run(f"teacher/{self.teacher_arch}", "teacher", self.teacher_arch, {"name": "ce"},
                         {"name": "fixed"}, a.teacher_seed, None)
        teacher = self.out / "teacher" / self.teacher_arch / "best.pt"
        rows = ["| method | balancer | final top-1 (mean ± std) | best top-1 (mean ± std) | mean λ (last epoch) | seeds |",
                "|---|---|---|---|---|---|"]
        curves: dict[str, dict[str, list[tuple[list[int], list[float]]]]] = {}
        for m, section in method_sections(self.warmup).items():
            if m not in a.methods:
                continue
            for b in a.balancers:
                bal = BALANCERS[b]
                bal = dict(bal, over=a.over) if bal["name"] == "gradient" else bal
                accs, lam_last = [], []
                for seed in a.seeds:
                    name = f"{m}/{b}/seed{seed}"
                    accs.append(self.run(name, "student", self.student_arch, section, bal, seed, teacher))
                    steps, lams = lambda_curve(self.out / name, m)
                    curves.setdefault(m, {}).setdefault(b, []).append((steps, lams))
                    lam_last.append(last_epoch_lambda(self.out / name, lams, self.epochs))
                rows.append(f"| {m} | {b} | {fmt([x['final'] for x in accs])} | {fmt([x['best'] for x in accs])} | "
                            f"{statistics.fmean(lam_last):.3f} | {len(accs)} |")
        head = (f"{self.teacher_arch} → {self.student_arch} (teacher final top-1 {t_acc['final']:.2f}); {self.epochs} epochs; "
                f"GradientBalance over {a.over}; dtkd warm-up {self.warmup} epochs\n\n")
        return head + "\n".join(rows), curves


def fmt(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8), squeeze=False)
    for ax, (m, by_bal) in zip(axes[0], curves.items()):
        for b, runs in by_bal.items():
            n = min(len(s) for s, _ in runs)
            if n == 0:
                continue
            steps = runs[0][0][:n]
            mean = [statistics.fmean(r[1][i] for r in runs) for i in range(n)]
            style = {"color": "black", "linestyle": "--", "linewidth": 2.5, "zorder": 0} if b == "fixed" else {}
            ax.plot(steps, mean, label=b, **style)
        ax.set_title(m)
        ax.set_xlabel("step")
        ax.set_ylabel("λ (distillation share)")
        ax.set_ylim(0, 1.02)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="benchmarks/synthetic.yaml", help="the synthetic recipe (common/teacher/student)")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides of the base recipe")
    p.add_argument("--epochs", type=int, help="epochs of teacher and students (default: the recipe's)")
    p.add_argument("--warmup", type=float, help="dtkd warm-up epochs (default: 20/240 of the run)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["kd", "dtkd"], choices=["kd", "dtkd"])
    p.add_argument("--balancers", nargs="+", default=DEFAULT_BALANCERS, choices=list(BALANCERS))
    p.add_argument("--teacher", help="teacher arch (default: the recipe's `teacher` network)")
    p.add_argument("--student", help="student arch (default: the recipe's `student` network)")
    p.add_argument("--teacher-seed", type=int, default=0)
    p.add_argument("--over", default="logits", choices=["logits", "head", "params"])
    p.add_argument("--out", default="runs/bench/balance")
    p.add_argument("--png", default="benchmarks/balance_lambda.png")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.base).is_file():
        p.error(f"--base {args.base!r} does not exist (the calibrated synthetic recipe, benchmarks/synthetic.yaml)")
    bench = Bench(args)
    text, curves = bench.table()
    print(text)
    bench.out.mkdir(parents=True, exist_ok=True)
    (bench.out / "tables.md").write_text(text + "\n", encoding="utf-8")
    (bench.out / "results.json").write_text(json.dumps(bench.results, indent=1), encoding="utf-8")
    plot(curves, Path(args.png), text.splitlines()[0])
    print(f"λ trajectories: {args.png}")


if __name__ == "__main__":
    main()
