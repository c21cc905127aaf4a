"""SwitOKD evidence (issue 5): accuracy over seeds, expert-mode fraction over training, epoch time.

Three parts, each writing into ``--out`` (raw numbers in ``results.json``):

``accuracy``  For every seed: the student alone (``ce``), the teacher alone (``ce``), ``dml`` and
              ``switokd`` (student + trainable teacher from scratch), final test top-1 of every
              network, and SwitOKD's per-epoch expert-mode fraction. Prints a mean ± std table
              and draws ``--plot`` (expert fraction per epoch, one line per seed).
``timing``    DML and SwitOKD trained side by side on the same batches, one epoch of each in
              turn (which one goes first alternates), timing every epoch with the process CPU clock
              (single thread, so other jobs on the machine do not inflate it) and the wall clock; SwitOKD's expert
              fraction of the same epoch is recorded beside its time.
``steps``     The per-step cost of each mode: one SwitOKD trainer with the decision forced to
              learning, then to expert, in alternating blocks (CPU time per step).

The base experiment is ``--base`` (default: the calibrated ``benchmarks/synthetic.yaml`` when it
exists — its ``common`` section, the teacher and student of its ``teacher``/``student`` sections —
else — or with ``--base digits`` — a built-in digits setting, cnn_medium → cnn_tiny); ``--set
key=value`` overrides it. Finished runs
(``summary.json`` present) are reused, so an interrupted benchmark resumes.

    python benchmarks/switokd.py accuracy --seeds 0 1 2
    python benchmarks/switokd.py timing --epochs 8
    python benchmarks/switokd.py steps --steps 20 --blocks 5
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptkd.config import apply_overrides  # noqa: E402
from adaptkd.engine.logger import read_metrics  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
DIGITS = {
    "data": {"name": "digits", "batch_size": 32, "crop_padding": 1, "flip": False},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 20,
              "schedule": "cosine", "milestones": []},
    "run": {"seed": 0},
}
PAIR = ("cnn_tiny", "cnn_medium")  # (student, teacher) on the built-in digits base


def load_base(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The base experiment (data, optim, run) and its name; sets ``args.student``/``args.teacher``
    from the recipe's ``student``/``teacher`` sections when not given."""
    path = Path(args.base) if args.base else HERE / "synthetic.yaml"
    if args.base == "digits":
        base, name = copy.deepcopy(DIGITS), "built-in digits base (--base digits)"
    elif path.is_file():
        raw, name = yaml.safe_load(path.read_text(encoding="utf-8")), str(path)
        if "common" in raw:  # the calibrated recipe: common + teacher + student sections
            args.teacher = args.teacher or raw["teacher"]["student"]["arch"]
            args.student = args.student or raw["student"]["student"]["arch"]
            raw = raw["common"]
        base = raw
    elif args.base:
        raise SystemExit(f"--base {args.base}: no such file")
    else:
        base, name = copy.deepcopy(DIGITS), "built-in digits base (benchmarks/synthetic.yaml does not exist)"
    args.student, args.teacher = args.student or PAIR[0], args.teacher or PAIR[1]
    base = apply_overrides(base, list(args.set))
    if args.epochs:
        base.setdefault("optim", {})["epochs"] = args.epochs
    base.setdefault("run", {}).update({"progress": False, "tensorboard": False, "latency": False,
                                       "threads": args.threads, "overwrite": False})
    for key in ("teachers", "peers", "student", "method"):
        base.pop(key, None)
    return base, name


def arm_config(base: dict, arm: str, seed: int, out: Path, student: str, teacher: str) -> dict:
    cfg = copy.deepcopy(base)
    cfg["run"].update({"seed": seed, "out": str(out)})
    if arm == "student":
        cfg.update(student={"arch": student}, method={"name": "ce"})
    elif arm == "teacher":
        cfg.update(student={"arch": teacher}, method={"name": "ce"})
    else:
        cfg.update(student={"arch": student}, teachers=[{"arch": teacher, "trainable": True}], method={"name": arm})
    return cfg


def run_arm(cfg: dict) -> dict:
    out = Path(cfg["run"]["out"])
    if not (out / "summary.json").is_file():
        cfg["run"]["overwrite"] = True
        Trainer(cfg, log=lambda s: None).fit()
    return json.loads((out / "summary.json").read_text())


def mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def accuracy(args: argparse.Namespace, base: dict, res: dict) -> None:
    s_arch, t_arch = args.student, args.teacher
    rows: dict[str, dict[str, list[float]]] = {}
    fractions: dict[int, list[float]] = {}
    for seed in args.seeds:
        for arm in ("student", "teacher", "dml", "switokd"):
            t0 = time.perf_counter()
            summ = run_arm(arm_config(base, arm, seed, Path(args.out) / f"{arm}-s{seed}", s_arch, t_arch))
            r = rows.setdefault(arm, {})
            r.setdefault("student", []).append(summ["learners"]["student"]["final_acc"])
            if "teacher0" in summ["learners"]:
                r.setdefault("teacher0", []).append(summ["learners"]["teacher0"]["final_acc"])
            print(f"seed {seed} {arm}: {summ['learners']['student']['final_acc']:.2f}"
                  f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        recs = read_metrics(Path(args.out) / f"switokd-s{seed}" / "metrics.jsonl")
        fractions[seed] = [r["switokd/teacher0-student/expert_frac"] for r in recs if r["kind"] == "epoch"]
    res["accuracy"] = {"rows": rows, "expert_frac": fractions, "student": s_arch, "teacher": t_arch}
    print(f"\n| run | {s_arch} (student) top-1 % | {t_arch} (teacher) top-1 % |\n|---|---|---|")
    names = {"student": "student alone (ce)", "teacher": "teacher alone (ce)", "dml": "DML", "switokd": "SwitOKD"}
    for arm, r in rows.items():
        st = mean_std(r["student"]) if arm != "teacher" else "—"
        te = mean_std(r["teacher0"]) if "teacher0" in r else (mean_std(r["student"]) if arm == "teacher" else "—")
        print(f"| {names[arm]} | {st} | {te} |")
    for seed, fr in fractions.items():
        print(f"seed {seed} expert fraction per epoch: {', '.join(f'{f:.2f}' for f in fr)}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=120)
        for seed, fr in fractions.items():
            ax.plot(range(1, len(fr) + 1), fr, marker="o", ms=3, label=f"seed {seed}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction of steps in expert mode")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"SwitOKD {t_arch} → {s_arch}: teacher paused", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")


def timing(args: argparse.Namespace, base: dict, res: dict) -> None:
    trs = {}
    for arm in ("dml", "switokd"):
        cfg = arm_config(base, arm, args.seeds[0], Path(args.out) / f"timing-{arm}", args.student, args.teacher)
        cfg["run"]["overwrite"] = True
        trs[arm] = Trainer(cfg, log=lambda s: None)
    epochs = int(base["optim"]["epochs"])
    rec: dict[str, list[dict[str, float]]] = {a: [] for a in trs}
    for epoch in range(1, epochs + 1):
        order = list(trs) if epoch % 2 else list(trs)[::-1]  # alternate who runs first
        for arm in order:
            tr = trs[arm]
            c0, w0 = time.process_time(), time.perf_counter()
            tr.train_epoch(epoch)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            extra = tr.method.epoch_end(epoch)
            row = {"epoch": epoch, "cpu_s": cpu, "wall_s": wall}
            if arm == "switokd":
                row["expert_frac"] = extra["switokd/teacher0-student/expert_frac"]
            rec[arm].append(row)
        s, d = rec["switokd"][-1], rec["dml"][-1]
        print(f"epoch {epoch}: dml {d['cpu_s']:.2f} s cpu, switokd {s['cpu_s']:.2f} s cpu "
              f"(expert {s['expert_frac']:.2f}), ratio {s['cpu_s'] / d['cpu_s']:.3f}", flush=True)
    res["timing"] = rec
    tot = {a: sum(r["cpu_s"] for r in v) for a, v in rec.items()}
    fr = statistics.mean(r["expert_frac"] for r in rec["switokd"])
    print(f"\ntotal CPU s over {epochs} epochs: dml {tot['dml']:.1f}, switokd {tot['switokd']:.1f} "
          f"(ratio {tot['switokd'] / tot['dml']:.3f}); mean expert fraction {fr:.3f}")


def steps(args: argparse.Namespace, base: dict, res: dict) -> None:
    cfg = arm_config(base, "switokd", args.seeds[0], Path(args.out) / "steps", args.student, args.teacher)
    cfg["run"]["overwrite"] = True
    tr = Trainer(cfg, log=lambda s: None)
    real = tr.method._decide
    mode = {"expert": False}

    def forced(z, y):
        stats = real(z, y).clone()
        stats[:, -1] = float(mode["expert"])
        return stats

    tr.method._decide = forced
    from adaptkd.data import iterate_batches

    d = tr.cfg.data
    batches = list(iterate_batches(tr.data.train, d.batch_size, shuffle=True, seed=0, epoch=1, drop_last=True))
    times: dict[str, list[float]] = {"learning": [], "expert": []}
    for i in range(2):  # warm-up
        tr.train_step(*batches[i], 1, 0.0)
    for b in range(args.blocks):
        for m in ("learning", "expert"):
            mode["expert"] = m == "expert"
            c0 = time.process_time()
            for i in range(args.steps):
                tr.train_step(*batches[(b * args.steps + i) % len(batches)], 1, 0.0)
            times[m].append((time.process_time() - c0) / args.steps * 1e3)
    res["steps"] = times
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"CPU ms per step (median of {args.blocks} blocks of {args.steps}): learning {med['learning']:.2f}, "
          f"expert {med['expert']:.2f} (ratio {med['expert'] / med['learning']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["accuracy", "timing", "steps"])
    ap.add_argument("--base", default=None)
    ap.add_argument("--set", nargs="*", default=[], help="overrides of the base, key=value")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--student", default=None, help="student arch (default: the recipe's, else cnn_tiny)")
    ap.add_argument("--teacher", default=None, help="teacher arch (default: the recipe's, else cnn_medium)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--plot", default=str(HERE / "switokd_expert_fraction.png"))
    ap.add_argument("--out", default="runs/bench_switokd")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base, name = load_base(args)
    print(f"base: {name}; student {args.student}, teacher {args.teacher}; epochs {base['optim'].get('epochs')}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    res.setdefault("base", {})[args.part] = {"name": name, "overrides": list(args.set),
                                             "epochs": base["optim"].get("epochs")}
    {"accuracy": accuracy, "timing": timing, "steps": steps}[args.part](args, base, res)
    path.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
