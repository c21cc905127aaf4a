"""UNIC step time against its floor, in one process.

The floor is what any multi-teacher distillation step must pay: augmentation, every frozen
teacher's forward (no grad), the student's forward and backward and the optimiser step. It is
measured as an engine running method ``ce`` with the same teachers listed (the engine computes
every frozen teacher each step whatever the method). Each UNIC variant is an engine with the same
networks (random-init teachers; speed only) and the same batch. The engines take turns, the order
rotating every round (cancels slow drifts of a shared machine); each ``Trainer.train_step`` is timed
on its own. Reported: medians of wall-clock and of process CPU time (``time.process_time``; with
one thread it is the step's own compute, robust to other jobs on a busy machine) and the CPU-time
ratio to the floor. A second measurement times the method alone (its forward and backward on fixed
features and logits of one step), which is what UNIC adds to the floor, free of the networks' noise.

Variants: ``unic`` (reference defaults: ladder on every student block, standardisation, dropping
p = 0.5), ``unic_last`` (last block only: no ladder), and any ``--extra name:key=value,...``.

    python benchmarks/unic_step_time.py                       # 3 teachers -> vit_tiny, 16 px, batch 32
    python benchmarks/unic_step_time.py --student resnet8x4 --image-size 32 --batch 16

Prints a Markdown table (and the ladder's parameter count next to the student's).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from _harness import step_config, timed  # noqa: E402  (puts the repository root on sys.path)

from adaptkd.balance import weighted_sum  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402
from adaptkd.methods import StepIn  # noqa: E402

VITS = ("vit_tiny", "vit_small")


def net(arch: str, args: argparse.Namespace, **extra) -> dict:
    d = {"arch": arch, **extra}
    if arch in VITS:
        d["args"] = {"img_size": args.image_size, "patch_size": args.patch, "depth": args.depth}
    return d


def config(method: dict, args: argparse.Namespace, out: str) -> dict:
    return step_config(args, out, method=method, student=net(args.student, args),
                       teachers=[net(t, args, random_init=True) for t in args.teachers],
                       optim={"name": "adamw", "lr": 3e-4, "weight_decay": 0.03, "epochs": 1, "schedule": "constant"})


def variants(args: argparse.Namespace) -> dict[str, dict]:
    v = {"floor": {"name": "ce"}, "unic": {"name": "unic"}, "unic_last": {"name": "unic", "student_blocks": [-1]}}
    for spec in args.extra:
        name, _, opts = spec.partition(":")
        m = {"name": "unic"}
        for kv in filter(None, opts.split(",")):
            k, _, val = kv.partition("=")
            m[k] = float(val) if val.replace(".", "", 1).isdigit() else val
        v[name] = m
    return v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="vit_tiny")
    p.add_argument("--teachers", nargs="+", default=["resnet32x4", "wrn_40_2", "vit_small"])
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=4, help="ViT patch size")
    p.add_argument("--depth", type=int, default=12, help="ViT depth")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    p.add_argument("--method-reps", type=int, default=10, help="timed method-only repetitions")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--extra", nargs="*", default=[], help="more variants, e.g. nodrop:drop_prob=0")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    vs = variants(args)
    names = list(vs)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {n: Trainer(config(m, args, f"{tmp}/{n}"), log=lambda s: None) for n, m in vs.items()}
        first = trainers["floor"]
        xb, yb = first.data.train.x[: args.batch], first.data.train.y[: args.batch]
        sync = torch.cuda.synchronize if first.device.type == "cuda" else (lambda: None)
        times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for i in range(args.warmup + args.steps):
            for n in names[i % len(names):] + names[: i % len(names)]:
                def one(tr=trainers[n]):
                    tr.train_step(xb, yb, 1, 0.0)
                    sync()
                t = timed(one)
                if i >= args.warmup:
                    times[n].append(t)
        # The method alone: its forward + backward on fixed features and logits of one real step
        # (what UNIC adds to the floor, measured without the networks' noise).
        alone: dict[str, list[float]] = {n: [] for n in names if n != "floor"}
        fixed = {}
        for n in alone:
            tr = trainers[n]
            logits, feats = tr.forward_all(tr.eval_aug(xb.to(tr.device)))
            fixed[n] = ({k: v.detach() for k, v in logits.items()},
                        {m: {k: v.detach() for k, v in f.items()} for m, f in feats.items()})
        for i in range(args.warmup + args.method_reps):
            for n in list(alone)[i % len(alone):] + list(alone)[: i % len(alone)]:
                tr, (lg, ft) = trainers[n], fixed[n]
                lg = {k: (v.clone().requires_grad_() if k == "student" else v) for k, v in lg.items()}
                ft = {m: {k: (v.clone().requires_grad_() if m == "student" else v) for k,
                          v in f.items()} for m, f in ft.items()}

                def one(tr=tr, lg=lg, ft=ft):
                    out = tr.method(StepIn(x=xb, y=yb.to(tr.device), epoch=1, step=0, logits=lg, feats=ft))
                    weighted_sum(out.losses["student"], out.weights["student"]).backward()
                    sync()
                t = timed(one)
                if i >= args.warmup:
                    alone[n].append(t[1])
        sizes = {n: sum(q.numel() for q in tr.method.parameters()) for n, tr in trainers.items()}
        student = sum(q.numel() for q in first.networks["student"].parameters())

    def med(n: str, k: int) -> float:
        return statistics.median(t[k] for t in times[n])

    vit = f", ViT patch {args.patch}, depth {args.depth}" if any(a in VITS for a in [args.student,
                                                                                     *args.teachers]) else ""
    print(f"{' + '.join(args.teachers)} -> {args.student}, batch {args.batch}, {args.image_size}px{vit}, "
          f"{args.classes} classes, device {args.device}, {args.threads} thread(s), {args.steps} timed steps per "
          f"variant after {args.warmup} warm-up rounds (rotating order), torch {torch.__version__}\n")
    print(f"student parameters: {student / 1e6:.2f} M\n")
    floor = med("floor", 1)
    print("| variant | method options | projector params (M) | step wall median (ms) | step CPU median (ms) | "
          "CPU ratio to floor | method alone fwd+bwd CPU median (ms) | (floor + method alone) / floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for n in names:
        opts = ", ".join(f"{k}={v}" for k, v in vs[n].items() if k != "name") or "defaults"
        a = statistics.median(alone[n]) if n in alone else 0.0
        print(f"| {n} | {vs[n]['name']}: {opts} | {sizes[n] / 1e6:.2f} | {1e3 * med(n, 0):.0f} | "
              f"{1e3 * med(n, 1):.0f} | "
              f"{med(n, 1) / floor:.3f} | {1e3 * a:.0f} | {(floor + a) / floor:.3f} |")


if __name__ == "__main__":
    main()
