"""Calibrate the synthetic benchmark: teacher (ce), student alone (ce) and student with kd, over seeds.

    python benchmarks/calibrate_synthetic.py --seeds 0 1 2 [--set data.train_size=5000 ...]

Reads benchmarks/synthetic.yaml, trains the teacher once (seed 0), then `ce` and `kd` students for
each seed, and prints a Markdown table of final test top-1 (mean ± std). Runs go to runs/calibration/.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import yaml

from adaptkd.config import load_config
from adaptkd.engine.trainer import Trainer

HERE = Path(__file__).resolve().parent


def merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    ap.add_argument("--out", default="runs/calibration")
    args = ap.parse_args()
    torch.set_num_threads(1)
    recipe = yaml.safe_load((HERE / "synthetic.yaml").read_text())
    out = Path(args.out)
    over = list(args.set) + ["run.overwrite=true"]
    t0 = time.perf_counter()
    tcfg = load_config(merge(recipe["common"], recipe["teacher"]), over + [f"run.out={out / 'teacher'}"])
    teacher = Trainer(tcfg, log=lambda s: None).fit()
    print(f"teacher {tcfg.student.arch}: {teacher['final_acc']:.2f}% in {time.perf_counter() - t0:.0f}s")
    results: dict[str, list[float]] = {"ce": [], "kd": []}
    for seed in args.seeds:
        for method in results:
            raw = merge(recipe["common"], recipe["student"])
            raw["method"] = {"name": method}
            if method != "ce":
                raw["teachers"] = [{"arch": tcfg.student.arch, "checkpoint": str(out / "teacher" / "best.pt")}]
            cfg = load_config(raw, over + [f"run.seed={seed}", f"run.out={out / f'{method}_s{seed}'}"])
            t1 = time.perf_counter()
            s = Trainer(cfg, log=lambda s: None).fit()
            results[method].append(s["final_acc"])
            print(f"{method} seed {seed}: {s['final_acc']:.2f}% in {time.perf_counter() - t1:.0f}s")
    print("\n| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for method, accs in results.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| student {method} | " + " | ".join(f"{a:.2f}" for a in accs) + f" | {statistics.mean(accs):.2f} ± {sd:.2f} |")


if __name__ == "__main__":
    main()
