"""Step time of a hand-written loop with :class:`adaptkd.Distiller` against the floor, for kd and dtkd.

Variants, each with its own copy of the same networks and an SGD optimiser, on the same batches:

- ``floor``: teacher forward under ``no_grad`` + student forward/backward on cross-entropy + step;
- ``kd by hand`` / ``dtkd by hand``: the floor with the method's loss written out from
  :mod:`adaptkd.losses` (what the Distiller computes, without it);
- ``Distiller kd`` / ``Distiller dtkd``: ``out = distiller(x, y); out.loss.backward(); opt.step()``.

Rounds are interleaved (each round runs one step of every variant, in a rotating order) so that
drifts of a shared machine hit all variants alike; the medians of per-step process CPU time (and
wall time) after a warm-up are compared. Prints a Markdown table::

    python benchmarks/distiller_step_time.py                 # resnet32x4 -> resnet8x4, batch 64, 32 px
    python benchmarks/distiller_step_time.py --teacher cnn_small --student cnn_tiny --steps 200
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F
from _harness import add_pair_args, timed  # noqa: E402  (puts the repository root on sys.path)

from adaptkd.distiller import Distiller  # noqa: E402
from adaptkd.losses import dtkd_loss_parts, kd_loss  # noqa: E402
from adaptkd.models import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_args(ap, steps=30, warmup=5, steps_help="timed steps per variant", warmup_help="untimed rounds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = build_model(args.teacher, args.classes).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = build_model(args.student, args.classes)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    y = torch.randint(0, args.classes, (args.batch,))

    def by_hand(loss_fn):
        s_net = copy.deepcopy(student)
        opt = torch.optim.SGD(s_net.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            with torch.no_grad():
                t = teacher(x)
            s = s_net(x)
            opt.zero_grad()
            loss_fn(s, t).backward()
            opt.step()
        return step

    def with_distiller(method: str, **options):
        d = Distiller(copy.deepcopy(student), [copy.deepcopy(teacher)], method, **options)
        opt = torch.optim.SGD(d.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            out = d(x, y, epoch=1)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        return step

    def dtkd_by_hand(s, t):
        parts = dtkd_loss_parts(s, t, 4.0)
        w = 1 / 20  # the warm-up factor at epoch 1 of 20
        return 3.0 * w * parts.loss + 1.0 * w * kd_loss(s, t, 4.0) + F.cross_entropy(s, y)

    variants = {
        "floor": by_hand(lambda s, t: F.cross_entropy(s, y)),
        "kd by hand": by_hand(lambda s, t: 0.1 * F.cross_entropy(s, y) + 0.9 * kd_loss(s, t, 4.0)),
        "Distiller kd": with_distiller("kd"),
        "dtkd by hand": by_hand(dtkd_by_hand),
        "Distiller dtkd": with_distiller("dtkd"),
    }
    names = list(variants)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.warmup + args.steps):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            w, c = timed(variants[n])
            if r >= args.warmup:
                cpu[n].append(c)
                wall[n].append(w)
    med = {n: statistics.median(cpu[n]) for n in names}
    medw = {n: statistics.median(wall[n]) for n in names}
    print(f"{args.teacher} -> {args.student}, batch {args.batch}, {args.image_size} px, {args.classes} classes, "
          f"{args.threads} thread(s), {args.steps} timed interleaved rounds after {args.warmup}; "
          f"torch {torch.__version__}")
    print()
    print("| variant | median CPU ms | ×floor | ×same loss by hand | median wall ms |")
    print("|---|---|---|---|---|")
    hand = {"Distiller kd": "kd by hand", "Distiller dtkd": "dtkd by hand"}
    for n in names:
        vs = f"{med[n] / med[hand[n]]:.3f}" if n in hand else ""
        print(f"| {n} | {med[n] * 1e3:.1f} | {med[n] / med['floor']:.3f} | {vs} | {medw[n] * 1e3:.1f} |")


if __name__ == "__main__":
    main()
