"""DTKD teacher-depth sweep on the synthetic benchmark (the DTKD README's bar chart at CPU scale).

One small student (resnet8 by default) is distilled with plain KD and with DTKD from teachers
of growing depth (resnet14 → resnet56), next to the student trained alone. The DTKD README
claims KD stays flat or drops as the teacher grows while DTKD stays ahead.

The methods table (ce, kd, dkd, dtkd, dtkd+dkd over seeds) is the accuracy suite's job:

    python benchmarks/accuracy/run.py --dataset synthetic --methods ce kd dkd dtkd dtkd_dkd --seeds 3 \\
        --results benchmarks/dtkd_methods.md

This script reuses that suite's recipe handling (``benchmarks/synthetic.yaml``: ``common`` +
``teacher`` / ``student`` sections, ``--epochs`` / ``--set`` overrides, cached finished runs) and its
method snippets ``benchmarks/accuracy/methods/{ce,kd,dtkd}.yaml`` (warm-ups rescaled to the run
length, w · epochs / 240, at least 1 epoch).

    python benchmarks/dtkd_accuracy.py                                  # resnet14..56 -> resnet8, 1 seed
    python benchmarks/dtkd_accuracy.py --epochs 5 --set data.train_size=4000 --depths resnet14 resnet32 resnet56
    python benchmarks/dtkd_accuracy.py --ablation --seeds 3 --out runs/accuracy     # dynamic vs fixed T

Prints a Markdown table and writes it (with the command) to ``--results`` and the raw numbers to
``<out>/depth.json``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _suite_module():
    spec = importlib.util.spec_from_file_location("adaptkd_accuracy_suite", ROOT / "benchmarks" / "accuracy" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def snippet_method(name: str, epochs: int) -> dict:
    sn = yaml.safe_load((ROOT / "benchmarks" / "accuracy" / "methods" / f"{name}.yaml").read_text(encoding="utf-8"))
    method = copy.deepcopy(sn["method"])
    w = method.get("warmup_epochs")
    if isinstance(w, (int, float)) and w > 0:
        method["warmup_epochs"] = max(1.0, round(w * epochs / 240, 3))
    return method


def fmt(xs: list[float]) -> str:
    return f"{xs[0]:.2f}" if len(xs) == 1 else f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def fixed_t_control(epochs: int) -> dict:
    """DTKD's objective with every temperature fixed at T: warm·(α+β)·KD + γ·CE (method compose)."""
    dt = snippet_method("dtkd", epochs)
    return {"name": "compose", "terms": [
        {"loss": "kd", "weight": dt["alpha"] + dt["beta"], "temperature": dt["temperature"],
         "warmup_epochs": dt["warmup_epochs"]},
        {"loss": "ce", "weight": dt["ce_weight"]}]}


def ablation(suite, args: argparse.Namespace) -> str:
    """DTKD vs the same objective with its per-sample temperatures fixed at T.

    ``kd_as_dtkd`` = CE + (α+β)·KD with DTKD's warm-up: exactly DTKD's total when every
    temperature equals T. It separates the effect of the dynamic temperatures from that of
    DTKD's weights (CE 1 and 4× KD, where the ``kd`` baseline has CE 0.1 and KD 0.9). Runs on the
    recipe's own teacher→student pair, in the accuracy suite's run layout (finished runs reused).
    """
    ckpt, t_arch, t_sum = suite.teacher("synthetic")
    base = suite.base("synthetic", "student")
    epochs = int(base["optim"]["epochs"])
    methods = {"kd": snippet_method("kd", epochs), "kd_as_dtkd": fixed_t_control(epochs), "dtkd": snippet_method("dtkd", epochs)}
    acc: dict[str, list[float]] = {}
    for name, method in methods.items():
        acc[name] = []
        for seed in range(args.seeds):
            cfg = copy.deepcopy(base)
            cfg.update(method=method, teachers=[{"arch": t_arch, "checkpoint": ckpt}])
            cfg["run"]["seed"] = seed
            acc[name].append(suite.train(cfg, Path(args.out) / "synthetic" / name / f"seed{seed}")["final_acc"])
    lines = [f"Teacher {t_arch} ({t_sum['final_acc']:.2f} %), student {base['student']['arch']}, {epochs} epochs, "
             f"{args.seeds} seed(s); final test top-1 (%).", "",
             "| method | objective | student top-1 | DTKD − this (per-seed) |", "|---|---|---|---|"]
    what = {"kd": "0.1·CE + 0.9·KD", "kd_as_dtkd": "warm·4·KD + CE (DTKD with every T_s = T_t = T)",
            "dtkd": "warm·(3·DTKD + 1·KD) + CE"}
    for name in methods:
        diff = [d - k for d, k in zip(acc["dtkd"], acc[name])]
        lines.append(f"| {name} | {what[name]} | {fmt(acc[name])} | {'–' if name == 'dtkd' else fmt(diff)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", nargs="+", default=["resnet14", "resnet20", "resnet32", "resnet44", "resnet56"])
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--seeds", type=int, default=1, help="student seeds 0..N-1 (teachers: seed 0)")
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs (teachers and students)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for teachers and students")
    ap.add_argument("--teacher-epochs", type=int, help="teachers' epochs in the sweep (default: as the students)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench/dtkd_depth")
    ap.add_argument("--results", default=None, help="Markdown results (default benchmarks/dtkd_depth.md, "
                    "with --ablation benchmarks/dtkd_ablation.md)")
    ap.add_argument("--control", action="store_true", help="sweep: also DTKD's objective with fixed temperatures "
                    "(warm·4·KD + CE), which separates the dynamic temperatures from DTKD's weights")
    ap.add_argument("--ablation", action="store_true", help="instead of the sweep: DTKD vs its objective with fixed "
                    "temperatures, on the recipe's pair (use --out of the accuracy suite to reuse its runs)")
    args = ap.parse_args(argv)
    if args.results is None:
        args.results = str(ROOT / "benchmarks" / ("dtkd_ablation.md" if args.ablation else "dtkd_depth.md"))

    import torch

    torch.set_num_threads(args.threads)
    suite = _suite_module().Suite(argparse.Namespace(out=args.out, set=args.set, epochs=args.epochs, threads=args.threads))
    out = Path(args.out)
    t0 = time.perf_counter()
    cmd = "python benchmarks/dtkd_accuracy.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.ablation:
        body = ablation(suite, args)
        Path(args.results).write_text(f"# DTKD ablation: dynamic vs fixed temperatures\n\nCommand: `{cmd.strip()}` "
                                      f"(torch {torch.__version__}, {args.threads} thread(s), "
                                      f"{(time.perf_counter() - t0) / 60:.1f} min)\n\n{body}\n", encoding="utf-8")
        print(body)
        return 0

    teachers = {}
    for arch in args.depths:
        cfg = suite.base("synthetic", "teacher")
        cfg["student"] = {"arch": arch}
        cfg["run"]["seed"] = 0
        if args.teacher_epochs:
            cfg["optim"]["epochs"] = args.teacher_epochs
        teachers[arch] = suite.train(cfg, out / "teachers" / arch)["final_acc"]

    base = suite.base("synthetic", "student")
    base["student"] = {"arch": args.student}
    epochs = int(base["optim"]["epochs"])
    res: dict = {"student": args.student, "epochs": epochs, "teachers": teachers, "ce": [], "kd": {}, "dtkd": {}}
    for seed in range(args.seeds):
        cfg = copy.deepcopy(base)
        cfg.update(method=snippet_method("ce", epochs), teachers=[])
        cfg["run"]["seed"] = seed
        res["ce"].append(suite.train(cfg, out / "ce" / f"seed{seed}")["final_acc"])
    sweep = {"kd": snippet_method("kd", epochs), "dtkd": snippet_method("dtkd", epochs)}
    if args.control:
        sweep["kd_as_dtkd"] = fixed_t_control(epochs)
        res["kd_as_dtkd"] = {}
    for arch in args.depths:
        for m, method in sweep.items():
            res[m][arch] = []
            for seed in range(args.seeds):
                cfg = copy.deepcopy(base)
                cfg.update(method=method,
                           teachers=[{"arch": arch, "checkpoint": str(out / "teachers" / arch / "best.pt")}])
                cfg["run"]["seed"] = seed
                res[m][arch].append(suite.train(cfg, out / m / arch / f"seed{seed}")["final_acc"])

    lines = [f"Student {args.student} alone: {fmt(res['ce'])}. Final test top-1 (%), {args.seeds} seed(s), {epochs} epochs "
             f"(teachers: {args.teacher_epochs or epochs} epochs, seed 0).", "",
             f"| teacher | teacher top-1 | KD → {args.student} | DTKD → {args.student} | DTKD − KD |"
             + (" fixed-T control | DTKD − control |" if args.control else ""),
             "|---|---|---|---|---|" + ("---|---|" if args.control else "")]
    for arch in args.depths:
        kd, dt = res["kd"][arch], res["dtkd"][arch]
        row = f"| {arch} | {teachers[arch]:.2f} | {fmt(kd)} | {fmt(dt)} | {fmt([d - k for d, k in zip(dt, kd)])} |"
        if args.control:
            c = res["kd_as_dtkd"][arch]
            row += f" {fmt(c)} | {fmt([d - k for d, k in zip(dt, c)])} |"
        lines.append(row)
    body = "\n".join(lines)
    Path(args.results).write_text(f"# DTKD teacher-depth sweep\n\nCommand: `{cmd.strip()}` "
                                  f"(torch {torch.__version__}, {args.threads} thread(s), "
                                  f"{(time.perf_counter() - t0) / 60:.1f} min)\n\n{body}\n", encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth.json").write_text(json.dumps({"command": cmd, **res}, indent=2), encoding="utf-8")
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
