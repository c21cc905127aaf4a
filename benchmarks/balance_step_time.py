"""Training-step time of GradientBalance relative to FixedBalance, measured in one process.

One engine per balancer setting (same networks, data and method ``kd``) takes training steps
(``Trainer.train_step``: augmentation, frozen-teacher forward, student forward, method, balancer
backward, optimiser step) on the same batch, in rotating order, each step timed on its own; the
medians after a warm-up are compared with FixedBalance's. Rotating the order cancels slow drifts
of a shared machine. On the CPU each step is timed twice: wall clock, and the process's CPU time
(``time.process_time``), which on a crowded machine is the steadier measure of the work done
(single-threaded, the process's CPU time is the step's compute).

A second, isolated measurement times what ``over: logits`` adds: method ``kd`` and the balancer's
backward on leaf logits [B, C] (no network), fixed vs gradient, so the difference is exactly the
two partial backwards through the loss head plus the controller arithmetic.

Settings: ``fixed``; ``gradient`` over ``logits`` (every step); over ``head`` (every step); over
``params`` updating λ every 10 steps; over ``params`` every step.

    python benchmarks/balance_step_time.py                          # resnet32x4 -> resnet8x4, batch 64
    python benchmarks/balance_step_time.py --teacher cnn_medium --student cnn_small --steps 60

Single-threaded CPU by default (``--threads``); the teacher is randomly initialised (speed only).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from _harness import add_pair_args, step_config  # noqa: E402  (puts the repository root on sys.path)

from adaptkd.balance import BackwardContext, build_balancer  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402
from adaptkd.methods import MethodContext, StepIn, build_method  # noqa: E402

SETTINGS = {
    "fixed": {"name": "fixed"},
    "logits": {"name": "gradient", "over": "logits"},
    "head": {"name": "gradient", "over": "head"},
    "params/10": {"name": "gradient", "over": "params", "every": 10},
    "params/1": {"name": "gradient", "over": "params", "every": 1},
}


def step_times(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    names = list(SETTINGS)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {n: Trainer(step_config(args, f"{tmp}/{i}", method={"name": "kd"}, balance=SETTINGS[n]),
                               log=lambda s: None) for i, n in enumerate(names)}
        first = trainers[names[0]]
        xb, yb = first.data.train.x[: args.batch], first.data.train.y[: args.batch]
        for tr in trainers.values():
            for n in tr.learners:
                tr.networks[n].train()
        sync = torch.cuda.synchronize if first.device.type == "cuda" else (lambda: None)
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.warmup + args.steps):
            k = i % len(names)
            for n in names[k:] + names[:k]:
                tr = trainers[n]
                t0, c0 = time.perf_counter(), time.process_time()
                tr.train_step(xb, yb, 1, 0.0)
                sync()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                tr.global_step += 1  # as train_epoch does: drives `every`
                if i >= args.warmup:
                    wall[n].append(dt)
                    cpu[n].append(dc)
        return wall, cpu


def head_overhead(args: argparse.Namespace, reps: int = 400) -> dict[str, list[float]]:
    """CPU time of kd's losses + balancer.backward on leaf logits: fixed vs gradient over logits."""
    mctx = MethodContext(networks={}, learners=["student"], frozen=["teacher0"], arches={}, num_classes=args.classes,
                         epochs=1, steps_per_epoch=1, sample_input=torch.zeros(1))
    method = build_method("kd", {}, mctx)
    bals = {"fixed": build_balancer("fixed", {}), "logits": build_balancer("gradient", {"over": "logits"})}
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(args.batch, args.classes, generator=g) * 3
    t = torch.randn(args.batch, args.classes, generator=g) * 5
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    out: dict[str, list[float]] = {n: [] for n in bals}
    for i in range(reps + 20):
        for n in (("fixed", "logits") if i % 2 == 0 else ("logits", "fixed")):
            z = z0.clone().requires_grad_(True)
            ctx = BackwardContext(params={"student": [z]}, extra_params={"student": []}, task_terms=method.task_terms,
                                  stepping=["student"], step=i)
            c0 = time.process_time()
            res = method(StepIn(x=z, y=y, epoch=1, step=i, logits={"student": z, "teacher0": t}))
            bals[n].backward(res, ctx)
            dc = time.process_time() - c0
            if i >= 20:
                out[n].append(dc)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_args(p, steps=30, warmup=3, steps_help="timed steps per setting (use a multiple of 10)",
                  warmup_help="untimed steps per setting")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    wall, cpu = step_times(args)
    print(f"kd, {args.teacher} -> {args.student}, batch {args.batch}, {args.classes} classes, {args.image_size}px, "
          f"device {args.device}, {args.threads} thread(s), {args.steps} timed steps each after {args.warmup} "
          f"warm-up (rotating order), torch {torch.__version__}\n")
    tables = [("wall clock", wall)] + ([("process CPU time", cpu)] if args.device == "cpu" else [])
    for label, st in tables:
        med = {n: statistics.median(v) for n, v in st.items()}
        mean = {n: statistics.fmean(v) for n, v in st.items()}
        q = {n: statistics.quantiles(v, n=4) for n, v in st.items()}
        print(f"{label}:\n")
        print("| balancer | step median (ms) | IQR (ms) | median / fixed | mean / fixed |")
        print("|---|---|---|---|---|")
        for n in st:
            print(f"| {n} | {med[n] * 1e3:.1f} | {q[n][0] * 1e3:.1f}–{q[n][2] * 1e3:.1f} | "
                  f"{med[n] / med['fixed']:.3f} | {mean[n] / mean['fixed']:.3f} |")
        print()
    print("`params/10`: the median is an ordinary step (9 of 10 steps); the mean includes the update steps.\n")
    if args.device == "cpu":
        ho = head_overhead(args)
        hm = {n: statistics.median(v) for n, v in ho.items()}
        fixed_step = statistics.median(cpu["fixed"])
        print(f"isolated (kd losses + balancer backward on leaf logits [{args.batch}, "
              f"{args.classes}], process CPU time, "
              f"median of {len(ho['fixed'])}): fixed {hm['fixed'] * 1e6:.0f} µs, gradient/logits "
              f"{hm['logits'] * 1e6:.0f} µs; "
              f"added {(hm['logits'] - hm['fixed']) * 1e6:.0f} µs = "
              f"{(hm['logits'] - hm['fixed']) / fixed_step * 100:.2f}% "
              "of the fixed training step above")


if __name__ == "__main__":
    main()
