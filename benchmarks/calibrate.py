"""Calibrate a teacher/student recipe: teacher (ce) once, then students per method and seed.

    python benchmarks/calibrate.py                                  # synthetic: ce and kd, seeds 0 1 2
    python benchmarks/calibrate.py --recipe adaptkd/recipes/demo.yaml --methods ce kd dkd --seeds 0 1 2 3 4

A recipe is a YAML with `common`, `teacher`, `student` and optional `methods` sections (the layout
of benchmarks/synthetic.yaml and of the embedded demo recipe): the teacher run is `common` +
`teacher`; a student run is `common` + `student` + `methods[<method>]`. `--set` overrides every
run, `--student-set` only the students. Prints a Markdown table of final test top-1 per seed
(mean ± std) with each method's paired gain over `ce` per seed, and the wall time of every run.
Runs go to `--out` (default runs/calibration/); a teacher already trained there is reused.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from adaptkd.commands.demo import student_config
from adaptkd.config import load_config, merge_config
from adaptkd.engine.trainer import Trainer

HERE = Path(__file__).resolve().parent


def fmt(values: list[float], signed: bool = False) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.2f} ± {sd:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(HERE / "synthetic.yaml"))
    ap.add_argument("--methods", nargs="+", default=["ce", "kd"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    ap.add_argument("--student-set", nargs="*", default=[], help="key=value overrides for the students only")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--out", default="runs/calibration")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    out = Path(args.out)
    over = list(args.set) + ["run.overwrite=true", "run.progress=false", f"run.threads={args.threads}"]
    quiet = {"log": lambda s: None}

    tcfg = load_config(merge_config(recipe["common"], recipe["teacher"]), over + [f"run.out={out / 'teacher'}"])
    tck = out / "teacher" / "best.pt"
    if tck.is_file() and (out / "teacher" / "summary.json").is_file():
        import json

        teacher_acc = json.loads((out / "teacher" / "summary.json").read_text())["final_acc"]
        print(f"teacher {tcfg.student.arch}: {teacher_acc:.2f}% (reused from {out / 'teacher'})", flush=True)
    else:
        t0 = time.perf_counter()
        teacher_acc = Trainer(tcfg, **quiet).fit()["final_acc"]
        print(f"teacher {tcfg.student.arch}: {teacher_acc:.2f}% in {time.perf_counter() - t0:.0f}s", flush=True)

    results: dict[str, list[float]] = {m: [] for m in args.methods}
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            raw = student_config(recipe, method, tcfg.student.arch, str(tck))
            cfg = load_config(raw, over + list(args.student_set) + [f"run.seed={seed}", f"run.out={out / f'{method}_s{seed}'}"])
            t1 = time.perf_counter()
            acc = Trainer(cfg, **quiet).fit()["final_acc"]
            times[method].append(time.perf_counter() - t1)
            results[method].append(acc)
            print(f"{method} seed {seed}: {acc:.2f}% in {times[method][-1]:.0f}s", flush=True)

    print(f"\nteacher {tcfg.student.arch}: {teacher_acc:.2f}%\n")
    print("| student | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std | gain over ce per seed | mean gain | s/run |")
    print("|---|" + "---|" * (len(args.seeds) + 4))
    base = results.get("ce")
    for method, accs in results.items():
        if base is not None and method != "ce":
            gains = [a - b for a, b in zip(accs, base)]
            gain_cells = " ".join(f"{g:+.2f}" for g in gains) + f" | {fmt(gains, signed=True)}"
        else:
            gain_cells = "— | —"
        print(f"| {method} | " + " | ".join(f"{a:.2f}" for a in accs) + f" | {fmt(accs)} | {gain_cells} | "
              f"{statistics.mean(times[method]):.0f} |")


if __name__ == "__main__":
    main()
