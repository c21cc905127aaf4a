"""Framework overhead of ``Trainer.train_step`` above the physical floor, with tiny networks.

With networks this small the step's compute is a fraction of a millisecond and whatever the engine
adds per step shows. The table has, for each method: the floor (``adaptkd.bench.FloorVariant``:
teacher forward without grad, student forward/backward with CE, SGD step, on a pre-normalised
batch), ``train_step``, and ``train_step`` with one part replaced by a no-op: the on-device
augmentation (the pre-normalised batch instead), the non-finite watch (a constant True). Each
variant: median over ``--rounds`` rounds of the process CPU time per step of ``--steps`` steps, one
thread, variants interleaved round by round (ratios are paired). Writes ``benchmarks/step_overhead.md``.

    python benchmarks/step_overhead.py --rounds 15 --steps 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _harness  # noqa: F401  (puts the repository root on sys.path)
import torch


def trainer(method: str, args: argparse.Namespace, out: str):
    from adaptkd.engine.trainer import Trainer

    cfg = {"data": {"name": "digits", "batch_size": args.batch, "crop_padding": 1, "flip": True},
           "student": {"arch": "cnn_tiny"},
           "teachers": [{"arch": "cnn_tiny", "random_init": True}] if method != "ce" else [],
           "method": {"name": method}, "optim": {"name": "sgd", "lr": 0.01, "epochs": 1},
           "run": {"out": out, "device": "cpu", "progress": False, "latency": False, "tensorboard": False,
                   "log_every": 10**9, "threads": 1}}
    tr = Trainer(cfg, log=lambda s: None)
    for n in tr.learners:
        tr.networks[n].train()
    return tr


def per_step_ms(fn, steps: int) -> float:
    c = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - c) / steps * 1e3


def measure(method: str, args: argparse.Namespace, tmp: str) -> dict[str, float]:
    from adaptkd.bench import FloorVariant

    tr = trainer(method, args, tmp)
    xb, yb = tr.data.train.x[: args.batch], tr.data.train.y[: args.batch]
    floor = FloorVariant("floor", tr, xb, yb)
    x0 = tr.eval_aug(xb)
    aug, watch = tr.train_aug, tr.nonfinite.check
    ok = torch.ones((), dtype=torch.bool)

    class Normalised(torch.nn.Module):  # the batch as the floor gets it: no crop/flip drawn or applied
        random = aug.random

        def forward(self, x, generator=None):
            return x0

    def step(no_aug: bool = False, no_watch: bool = False):
        def run() -> None:
            tr.train_aug = Normalised() if no_aug else aug
            tr.nonfinite.check = (lambda *a: ok) if no_watch else watch
            tr.train_step(xb, yb, 1, 0.0)
        return run

    variants = {"floor": floor.step, "train_step": step(), "no augmentation": step(no_aug=True),
                "no finite watch": step(no_watch=True)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds + 1):
        for k, fn in variants.items():
            t = per_step_ms(fn, args.steps)
            if r:  # round 0 warms up
                times[k].append(t)
    tr.train_aug, tr.nonfinite.check = aug, watch
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["ce", "kd", "dtkd"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", default=str(Path(__file__).with_name("step_overhead.md")))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.methods:
            rows.append((m, measure(m, args, f"{tmp}/{m}")))
            print(m, {k: round(v, 3) for k, v in rows[-1][1].items()}, file=sys.stderr)
    lines = [
        "| method | floor ms | train_step ms | over floor ms | without augmentation ms | without finite watch ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, t in rows:
        lines.append(f"| {m} | {t['floor']:.3f} | {t['train_step']:.3f} | {t['train_step'] - t['floor']:.3f} | "
                     f"{t['no augmentation']:.3f} | {t['no finite watch']:.3f} |")
    head = (f"`python benchmarks/step_overhead.py --batch {args.batch} --steps {args.steps} --rounds {args.rounds}`"
            " — digits 8×8, cnn_tiny teacher (random init) → cnn_tiny student, one thread, process CPU time per "
            f"step, median of {args.rounds} rounds × {args.steps} steps, variants interleaved.")
    out = Path(args.out)
    notes = out.read_text().partition("\n## Reading")[2] if out.is_file() else ""  # kept across reruns
    out.write_text("# Step overhead above the floor (tiny networks, CPU)\n\n" + head + "\n\n" + "\n".join(lines)
                   + "\n" + (f"\n## Reading{notes}" if notes else ""))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
