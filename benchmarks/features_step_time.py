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
import tempfile

import torch
from _harness import add_pair_args, step_config, timed  # noqa: E402  (puts the repository root on sys.path)

from adaptkd.balance import weighted_sum  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402
from adaptkd.methods import StepIn  # noqa: E402


def measure(args: argparse.Namespace) -> tuple[dict, dict]:
    methods = args.methods
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: Trainer(step_config(args, f"{tmp}/{m}", method={"name": m}),
                               log=lambda s: None) for m in methods}
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
                ft = {n: {k: (v.clone().requires_grad_() if n == "student" else v) for k,
                          v in f.items()} for n, f in ft.items()}

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
    add_pair_args(p, steps=8, warmup=2, steps_help="timed steps per method",
                  warmup_help="untimed rounds")
    p.add_argument("--methods", nargs="+", default=["kd", "afd", "rtk", "fitnet"])
    p.add_argument("--method-reps", type=int, default=20, help="timed method-only repetitions")
    args = p.parse_args()
    if "kd" not in args.methods:
        args.methods = ["kd", *args.methods]
    torch.set_num_threads(args.threads)

    steps, alone = measure(args)
    print(f"{args.teacher} -> {args.student}, batch {args.batch}, {args.classes} classes, {args.image_size}px, "
          f"device {args.device}, {args.threads} thread(s), {args.steps} timed steps per method after "
          f"{args.warmup} warm-up rounds (rotating order), torch {torch.__version__}\n")
    print("| method | step wall median (ms) | step CPU median (ms) | CPU ratio to kd | method alone "
          "fwd+bwd CPU median (ms) |")
    print("|---|---:|---:|---:|---:|")
    kd_cpu = med(steps["kd"], 1)
    for m in args.methods:
        print(f"| {m} | {1e3 * med(steps[m], 0):.0f} | {1e3 * med(steps[m], 1):.0f} | "
              f"{med(steps[m], 1) / kd_cpu:.3f} | {1e3 * med(alone[m], 1):.2f} |")


if __name__ == "__main__":
    main()
