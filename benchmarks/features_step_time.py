"""Feature-distillation step time (AFD, RTK, FitNet) against the KD step, in one process.

One engine per method, same networks (random-init teacher; speed only), same batch. The engines
take turns (the order rotates every round, which cancels slow drifts of a shared machine), each
``Trainer.train_step`` — augmentation, frozen-teacher forward with taps, student forward with taps,
method, backward, optimiser step — timed on its own. Reported: medians of wall-clock time and of
process CPU time (``time.process_time``; with one thread it is the step's own compute, robust to
other jobs on a busy machine), and the ratio to KD. A second measurement isolates the methods:
their forward + backward on fixed features and logits (what the feature methods add).

    python benchmarks/features_step_time.py                          # resnet32x4 -> resnet8x4, batch 64
    python benchmarks/features_step_time.py --teacher resnet56 --student resnet20 --steps 10

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptkd.balance import weighted_sum  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402
from adaptkd.methods import StepIn  # noqa: E402


def config(method: str, args: argparse.Namespace, out: str) -> dict:
    return {
        "data": {"name": "synthetic", "image_size": args.image_size, "num_classes": args.classes,
                 "train_size": args.batch * 2, "test_size": args.batch, "batch_size": args.batch},
        "student": {"arch": args.student},
        "teachers": [{"arch": args.teacher, "random_init": True}],
        "method": {"name": method},
        "optim": {"name": "sgd", "lr": 0.01, "epochs": 1},
        "run": {"out": out, "seed": 0, "device": args.device, "progress": False, "latency": False,
                "tensorboard": False, "log_every": 10**9, "threads": args.threads},
    }


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def measure(args: argparse.Namespace) -> tuple[dict, dict]:
    methods = args.methods
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: Trainer(config(m, args, f"{tmp}/{m}"), log=lambda s: None) for m in methods}
        first = trainers[methods[0]]
        xb, yb = first.data.train.x[: args.batch], first.data.train.y[: args.batch]
        for tr in trainers.values():
            for n in tr.learners:
                tr.networks[n].train()
        sync = torch.cuda.synchronize if first.device.type == "cuda" else (lambda: None)
        steps: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
        for i in range(args.warmup + args.steps):
            order = methods[i % len(methods):] + methods[: i % len(methods)]
            for m in order:
                def one(tr=trainers[m]):
                    tr.train_step(xb, yb, 1, 0.0)
                    sync()
                t = timed(one)
                if i >= args.warmup:
                    steps[m].append(t)
        # The methods alone: forward + backward on fixed features/logits from one real step.
        alone: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
        fixed = {}
        for m, tr in trainers.items():
            x = tr.eval_aug(xb.to(tr.device))
            logits, feats = tr.forward_all(x)
            fixed[m] = (x, yb.to(tr.device), {k: v.detach() for k, v in logits.items()},
                        {n: {k: v.detach() for k, v in f.items()} for n, f in feats.items()})
        for i in range(args.warmup + args.method_reps):
            for m in methods[i % len(methods):] + methods[: i % len(methods)]:
                x, y, lg, ft = fixed[m]
                lg = {k: (v.clone().requires_grad_() if k == "student" else v) for k, v in lg.items()}
                ft = {n: {k: (v.clone().requires_grad_() if n == "student" else v) for k, v in f.items()} for n, f in ft.items()}

                def one(meth=trainers[m].method, x=x, y=y, lg=lg, ft=ft):
                    out = meth(StepIn(x=x, y=y, epoch=1, step=0, logits=lg, feats=ft))
                    weighted_sum(out.losses["student"], out.weights["student"]).backward()
                    sync()
                t = timed(one)
                if i >= args.warmup:
                    alone[m].append(t)
        return steps, alone


def med(v: list[tuple[float, float]], i: int) -> float:
    return statistics.median(x[i] for x in v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--methods", nargs="+", default=["kd", "afd", "rtk", "fitnet"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    p.add_argument("--method-reps", type=int, default=20, help="timed method-only repetitions")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if "kd" not in args.methods:
        args.methods = ["kd", *args.methods]
    torch.set_num_threads(args.threads)

    steps, alone = measure(args)
    print(f"{args.teacher} -> {args.student}, batch {args.batch}, {args.classes} classes, {args.image_size}px, "
          f"device {args.device}, {args.threads} thread(s), {args.steps} timed steps per method after "
          f"{args.warmup} warm-up rounds (rotating order), torch {torch.__version__}\n")
    print("| method | step wall median (ms) | step CPU median (ms) | CPU ratio to kd | method alone fwd+bwd CPU median (ms) |")
    print("|---|---:|---:|---:|---:|")
    kd_cpu = med(steps["kd"], 1)
    for m in args.methods:
        print(f"| {m} | {1e3 * med(steps[m], 0):.0f} | {1e3 * med(steps[m], 1):.0f} | "
              f"{med(steps[m], 1) / kd_cpu:.3f} | {1e3 * med(alone[m], 1):.2f} |")


if __name__ == "__main__":
    main()
