"""DTKD vs KD training-step time, measured in one process.

Two engines with the same networks and data, one running method ``kd`` and one ``dtkd``, take
alternating training steps (``Trainer.train_step``: augmentation, frozen-teacher forward, student
forward, method, backward, optimiser step) on the same batches; each step is timed on its own and
the medians after a warm-up are compared. Alternating the two cancels slow drifts of a shared
machine. A second, isolated measurement times only the two methods' losses (forward + backward
on [B, C] logits), which is where the two steps differ.

    python benchmarks/dtkd_step_time.py                       # resnet32x4 -> resnet8x4, batch 64
    python benchmarks/dtkd_step_time.py --teacher resnet56 --student resnet20 --steps 40

Runs single-threaded on the CPU by default (``--threads``); the teacher is randomly initialised
(speed only). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from _harness import add_pair_args, step_config  # noqa: E402  (puts the repository root on sys.path)

from adaptkd.balance import weighted_sum  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402
from adaptkd.methods import MethodContext, StepIn, build_method  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed_both(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread). With one torch thread on the CPU every op runs
    on the calling thread, so the CPU time leaves out the waiting that a shared machine adds."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def step_times(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: Trainer(step_config(args, f"{tmp}/{m}", method={"name": m}),
                               log=lambda s: None) for m in ("kd", "dtkd")}
        data = trainers["kd"].data.train
        xb, yb = data.x[: args.batch], data.y[: args.batch]
        for tr in trainers.values():
            for n in tr.learners:
                tr.networks[n].train()
        sync = torch.cuda.synchronize if trainers["kd"].device.type == "cuda" else (lambda: None)
        times: dict[str, list[float]] = {"kd": [], "dtkd": []}
        cpu: dict[str, list[float]] = {"kd": [], "dtkd": []}
        for i in range(args.warmup + args.steps):
            order = ("kd", "dtkd") if i % 2 == 0 else ("dtkd", "kd")
            for m in order:
                def one(tr=trainers[m]):
                    tr.train_step(xb, yb, 1, 0.0)
                    sync()
                t, c = timed_both(one)
                if i >= args.warmup:
                    times[m].append(t)
                    cpu[m].append(c)
        return times, cpu


def loss_times(args: argparse.Namespace, reps: int = 300) -> dict[str, list[float]]:
    ctx = MethodContext(networks={}, learners=["student"], frozen=["teacher0"], arches={}, num_classes=args.classes,
                        epochs=1, steps_per_epoch=1, sample_input=torch.zeros(1))
    methods = {m: build_method(m, {}, ctx) for m in ("kd", "dtkd")}
    g = torch.Generator().manual_seed(0)
    s0 = torch.randn(args.batch, args.classes, generator=g) * 3
    t = torch.randn(args.batch, args.classes, generator=g) * 5
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    out: dict[str, list[float]] = {"kd": [], "dtkd": []}
    for i in range(reps + 20):
        for m in ("kd", "dtkd") if i % 2 == 0 else ("dtkd", "kd"):
            s = s0.clone().requires_grad_(True)

            def one(meth=methods[m], s=s):
                res = meth(StepIn(x=s, y=y, epoch=30, step=0, logits={"student": s, "teacher0": t}))
                weighted_sum(res.losses["student"], res.weights["student"]).backward()
            tt = timed(one)
            if i >= 20:
                out[m].append(tt)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_args(p, steps=20, warmup=3, steps_help="timed steps per method",
                  warmup_help="untimed steps per method")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    lt = loss_times(args)
    st, ct = step_times(args)
    med = {m: statistics.median(v) for m, v in st.items()}
    q = {m: statistics.quantiles(v, n=4) for m, v in st.items()}
    lmed = {m: statistics.median(v) for m, v in lt.items()}
    print(f"{args.teacher} -> {args.student}, batch {args.batch}, {args.classes} classes, {args.image_size}px, "
          f"device {args.device}, {args.threads} thread(s), {args.steps} timed steps each after {args.warmup} warm-up "
          f"(alternating), torch {torch.__version__}\n")
    cmed = {m: statistics.median(v) for m, v in ct.items()}
    print("| method | step median (ms) | step IQR (ms) | step min (ms) | step CPU time median (ms) "
          "| losses fwd+bwd median (µs) |")
    print("|---|---|---|---|---|---|")
    for m in ("kd", "dtkd"):
        print(f"| {m} | {med[m] * 1e3:.1f} | {q[m][0] * 1e3:.1f}–{q[m][2] * 1e3:.1f} | {min(st[m]) * 1e3:.1f} "
              f"| {cmed[m] * 1e3:.1f} | {lmed[m] * 1e6:.0f} |")
    paired = statistics.median(d / k for d, k in zip(st["dtkd"], st["kd"]))
    print(f"\nDTKD / KD step time: ratio of medians {med['dtkd'] / med['kd']:.4f}, "
          f"median of paired (adjacent-step) ratios {paired:.4f}, ratio of minima "
          f"{min(st['dtkd']) / min(st['kd']):.4f}; "
          f"CPU time: ratio of medians {cmed['dtkd'] / cmed['kd']:.4f}")
    print(f"DTKD − KD loss time: {(lmed['dtkd'] - lmed['kd']) * 1e6:.0f} µs per step "
          f"= {(lmed['dtkd'] - lmed['kd']) / med['kd'] * 100:.3f}% of the KD step")


if __name__ == "__main__":
    main()
