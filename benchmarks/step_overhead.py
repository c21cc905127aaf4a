"""Framework overhead of a training step above the physical floor, with tiny networks.

With networks this small the step's compute is a fraction of a millisecond and whatever the engine
adds per step shows. Variants, for each method: the floor (``adaptkd.bench.variants.FloorVariant``: teacher
forward without grad, student forward/backward with CE, SGD step, on a pre-normalised batch); the
``Distiller``'s step on that batch (``distiller(x, y)``, ``backward``, ``step``: the method's
arithmetic and its contract, as a hand-written loop runs it); ``Trainer.train_epoch`` over an
epoch of ``--steps`` steps, per step (what ``adaptkd train`` runs: batches from the in-memory
pipeline, views made ahead on a background thread where that pays (``adaptkd.data.ahead.pays``: not for
these small batches, which get theirs a chunk of batches at a time), the epoch's running sums, one logged record
and the epoch's summary); ``train_step`` called by hand on one batch (the view drawn on the
calling thread); and ``train_step`` with one part replaced by a no-op: the augmentation (the
pre-normalised batch instead), the non-finite watch (a constant True). For ``ce`` and ``kd`` also a
reference step written the way mdistiller's trainer is (:func:`reference_step`), on the pre-normalised
batch and with batches from a ``DataLoader`` whose ``--workers`` processes augment per sample
(:func:`reference_loader`). A second table times
:class:`~adaptkd.data.ahead.ViewsAhead` alone against making the views on the training thread, for
batches from digits' size to CIFAR's (the evidence for ``adaptkd.data.ahead.MIN_PIXELS``).

Each variant is timed on three clocks: the process CPU time (every thread of the process), the
CPU time of the training thread (``time.thread_time``: without the background thread's work) and
the wall time. Median over ``--rounds`` rounds of the time per step of ``--steps`` steps, one
intra-op thread, variants interleaved round by round (differences are paired). Writes
``benchmarks/step_overhead.md``.

    python benchmarks/step_overhead.py --rounds 15 --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _harness  # noqa: F401  (puts the repository root on sys.path)
import torch

CLOCKS = ("process", "thread", "wall")


def trainer(method: str, args: argparse.Namespace, out: str):
    from adaptkd.data import Split, build_data
    from adaptkd.engine.trainer import Trainer

    digits = build_data("digits")
    k = -(-args.steps * args.batch // len(digits.train))  # the training split repeated: an epoch of --steps steps
    data = dataclasses.replace(digits, train=Split(digits.train.x.repeat(k, 1, 1, 1), digits.train.y.repeat(k)))
    cfg = {"data": {"name": "digits", "batch_size": args.batch, "crop_padding": 1, "flip": True},
           "student": {"arch": "cnn_tiny"},
           "teachers": [{"arch": "cnn_tiny", "random_init": True}] if method != "ce" else [],
           "method": {"name": method}, "optim": {"name": "sgd", "lr": 0.01, "epochs": 1},
           "run": {"out": out, "device": "cpu", "progress": False, "latency": False, "tensorboard": False,
                   "log_every": 10**9, "threads": 1, "max_steps_per_epoch": args.steps}}
    tr = Trainer(cfg, data=data, log=lambda s: None)
    assert tr.steps_per_epoch == args.steps
    for n in tr.learners:
        tr.networks[n].train()
    return tr


def per_step_ms(fn, steps: int, calls: int | None = None) -> dict[str, float]:
    """{clock: ms per step} of ``calls`` (default ``steps``) calls of ``fn`` that make ``steps`` steps."""
    c, t, w = time.process_time(), time.thread_time(), time.perf_counter()
    for _ in range(steps if calls is None else calls):
        fn()
    c, t, w = time.process_time() - c, time.thread_time() - t, time.perf_counter() - w
    return {k: v / steps * 1e3 for k, v in zip(CLOCKS, (c, t, w))}


def measure(method: str, args: argparse.Namespace, tmp: str) -> dict[str, dict[str, float]]:
    from adaptkd.bench.variants import FloorVariant

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

    d = tr.distiller

    def distiller() -> None:  # the library's step without the engine: the method and its contract only
        tr.train_aug, tr.nonfinite.check = aug, watch
        for opt in tr.optims.values():
            opt.zero_grad(set_to_none=True)
        out = d(x0, yb, epoch=1, step=tr.global_step)
        d.backward(out, scaler=tr.scaler)
        d.step(tr.optims, out, scaler=tr.scaler)

    def epoch() -> None:
        tr.train_aug, tr.nonfinite.check = aug, watch
        tr.train_epoch(1)

    variants = {"floor": floor.step, "distiller": distiller, "epoch loop": epoch, "train_step": step(),
                "no augmentation": step(no_aug=True), "no finite watch": step(no_watch=True)}
    if method in ("ce", "kd"):
        variants["reference"] = reference_step(method, FloorVariant("reference", tr, xb, yb), args.batch)
        variants["reference, loader"] = reference_step(method, FloorVariant("reference", tr, xb, yb), args.batch,
                                                       reference_loader(tr, args.batch, args.workers))
    times: dict[str, dict[str, list[float]]] = {k: {c: [] for c in CLOCKS} for k in variants}
    for r in range(args.rounds + 1):
        for k, fn in variants.items():
            t = per_step_ms(fn, args.steps, 1 if k == "epoch loop" else None)
            if r:  # round 0 warms up
                for c in CLOCKS:
                    times[k][c].append(t[c])
    tr.train_aug, tr.nonfinite.check = aug, watch
    return {k: {c: statistics.median(v) for c, v in t.items()} for k, t in times.items()}


class _Meter:
    """A running average updated with whatever it is given (tensors stay tensors), as mdistiller's is."""

    def __init__(self) -> None:
        self.val: object = 0.0
        self.sum: object = 0.0
        self.count = 0
        self.avg: object = 0.0

    def update(self, val, n: int) -> None:
        self.val = val
        self.sum = self.sum + val * n
        self.count += n
        self.avg = self.sum / self.count


class _PerSampleViews(torch.utils.data.Dataset):
    """uint8 images served one at a time with a random crop (zero padding ``pad``), a random flip and the
    normalisation done per sample, in the DataLoader's worker processes (what a torchvision transform
    pipeline does there)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: float, std: float, pad: int) -> None:
        self.x, self.y, self.mean, self.std, self.pad = x, y, mean, std, pad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        import torch.nn.functional as F

        img = F.pad(self.x[i], (self.pad,) * 4)
        h, w = self.x.shape[-2:]
        dy, dx = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        img = img[:, dy:dy + h, dx:dx + w]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img.float() / 255 - self.mean) / self.std, self.y[i]


def reference_loader(tr, batch: int, workers: int):
    """Batches of the trainer's training images from a ``torch.utils.data.DataLoader`` with ``workers``
    worker processes doing the per-sample augmentation (an endless sampler: no epoch restarts timed)."""
    d, aug = tr.data, tr.train_aug
    ds = _PerSampleViews(d.train.x, d.train.y, float(-aug.shift.flatten()[0] / (aug.scale.flatten()[0] * 255)),
                         float(1 / (aug.scale.flatten()[0] * 255)), aug.crop_padding)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=10**8)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                         persistent_workers=True, prefetch_factor=4)
    return iter(loader)


def reference_step(method: str, nets, batch: int, batches=None):
    """The reference: one step of a KD trainer written the way mdistiller's is (our own stand-in for its
    per-step work, on the floor's fresh networks and pre-normalised batch, i.e. with its augmentation done
    by loader workers at no cost to this thread): zero the gradients; student forward, teacher forward under
    no_grad; a dict of weighted losses (``ce``, and for ``kd`` 0.9 · T² · KL at T = 4 from a log-softmax and
    a softmax); their sum, backward, SGD step; top-1 and top-5 accuracy from ``topk``; the loss read to the
    host; running averages of loss, top-1 and top-5; and the progress line formatted and written (to the null
    device: a progress bar's description refreshed every step). ``batches``: an iterator of ``(x, y)`` to
    take each step's batch from (:func:`reference_loader`) instead of the fixed batch."""
    import os

    import torch.nn.functional as F

    student, opt = nets.learners[0], nets.opts[0]
    teacher = nets.frozen[0] if nets.frozen else None
    x, y = nets.x, nets.y
    meters = {k: _Meter() for k in ("losses", "top1", "top5")}
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the benchmark's life

    def accuracy(out: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
        with torch.no_grad():
            _, pred = out.topk(max(ks), 1, True, True)
            correct = pred.t().eq(target.reshape(1, -1).expand(max(ks), -1))
            return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / out.shape[0]) for k in ks]

    def step() -> None:
        nonlocal x, y
        if batches is not None:
            x, y = next(batches)
        opt.zero_grad()
        logits = student(x)
        losses = {"loss_ce": (0.1 if method == "kd" else 1.0) * F.cross_entropy(logits, y)}
        if method == "kd":
            with torch.no_grad():
                t_logits = teacher(x)
            log_ps = F.log_softmax(logits / 4.0, dim=1)
            pt = F.softmax(t_logits / 4.0, dim=1)
            losses["loss_kd"] = 0.9 * F.kl_div(log_ps, pt, reduction="none").sum(1).mean() * 16.0
        loss = sum(v.mean() for v in losses.values())
        loss.backward()
        opt.step()
        acc1, acc5 = accuracy(logits, y)
        meters["losses"].update(loss.cpu().detach().numpy().mean(), batch)
        meters["top1"].update(acc1[0], batch)
        meters["top5"].update(acc5[0], batch)
        msg = "Epoch:{}| Time(data):{:.3f}| Time(train):{:.3f}| Loss:{:.4f}| Top-1:{:.3f}| Top-5:{:.3f}".format(
            1, 0.0, 0.0, meters["losses"].avg, meters["top1"].avg, meters["top5"].avg)
        sink.write("\r" + msg)

    return step


AHEAD_SHAPES = ((64, 1, 8, 8), (64, 1, 28, 28), (32, 3, 32, 32), (128, 3, 32, 32))


def ahead_cost(shape: tuple[int, int, int, int], rounds: int) -> dict[str, dict[str, float]]:
    """{"step only" | "on the thread" | "ahead": {clock: ms per step}}: 100 batches of ``shape``, each followed
    by a stand-in step of 150 small matmuls (GIL released and retaken 150 times, like a small network's step);
    the crop/flip view made on the training thread, or ahead by :class:`~adaptkd.data.ahead.ViewsAhead`."""
    from adaptkd.data import Augment
    from adaptkd.data.ahead import ViewsAhead

    aug = Augment([0.5] * shape[1], [0.25] * shape[1], crop_padding=2, flip=True)
    xs = [(torch.randint(0, 256, shape, dtype=torch.uint8), torch.zeros(shape[0], dtype=torch.long))
          for _ in range(100)]
    w = torch.randn(64, 64)

    def step() -> None:
        for _ in range(150):
            w @ w

    def step_only() -> None:
        for _ in xs:
            step()

    def on_thread() -> None:
        g = torch.Generator().manual_seed(0)
        for xb, _ in xs:
            aug(xb, g)
            step()

    def ahead() -> None:
        with ViewsAhead(xs, aug, torch.Generator().manual_seed(0)) as views:
            for _ in views:
                step()

    variants = {"step only": step_only, "on the thread": on_thread, "ahead": ahead}
    times: dict[str, dict[str, list[float]]] = {k: {c: [] for c in CLOCKS} for k in variants}
    for r in range(rounds + 1):
        for k, fn in variants.items():
            t = per_step_ms(fn, len(xs), 1)
            if r:
                for c in CLOCKS:
                    times[k][c].append(t[c])
    return {k: {c: statistics.median(v) for c, v in t.items()} for k, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["ce", "kd", "dtkd"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--workers", type=int, default=2, help="the reference's DataLoader worker processes")
    p.add_argument("--out", default=str(Path(__file__).with_name("step_overhead.md")))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.methods:
            rows.append((m, measure(m, args, f"{tmp}/{m}")))
            print(m, {k: {c: round(v, 3) for c, v in t.items()} for k, t in rows[-1][1].items()}, file=sys.stderr)
    lines = [
        "| method | clock | floor ms | reference ms | over floor ms | reference with loader ms | over floor ms "
        "| Distiller ms | epoch loop ms | over floor ms | train_step ms | over floor ms | without augmentation ms "
        "| without finite watch ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, t in rows:
        for c in CLOCKS:
            f, e, s = t["floor"][c], t["epoch loop"][c], t["train_step"][c]
            ref = " | ".join(f"{t[k][c]:.3f} | {t[k][c] - f:.3f}" if k in t else "- | -"
                             for k in ("reference", "reference, loader"))
            lines.append(f"| {m} | {c} | {f:.3f} | {ref} | {t['distiller'][c]:.3f} | {e:.3f} | {e - f:.3f} | "
                         f"{s:.3f} | {s - f:.3f} | "
                         f"{t['no augmentation'][c]:.3f} | {t['no finite watch'][c]:.3f} |")
    lines += ["", "Views made ahead or on the training thread (`ahead_cost`: a stand-in step of 150 small matmuls "
              "per batch; ms per step):", "",
              "| batch | clock | step only | view on the thread | view made ahead |", "|---|---|---:|---:|---:|"]
    for shape in AHEAD_SHAPES:
        t = ahead_cost(shape, args.rounds)
        print(shape, {k: {c: round(v, 3) for c, v in d.items()} for k, d in t.items()}, file=sys.stderr)
        for c in CLOCKS:
            lines.append(f"| {'×'.join(map(str, shape))} | {c} | {t['step only'][c]:.3f} | "
                         f"{t['on the thread'][c]:.3f} | {t['ahead'][c]:.3f} |")
    head = (f"`python benchmarks/step_overhead.py --batch {args.batch} --steps {args.steps} --rounds {args.rounds}`"
            " — digits 8×8 (the training split repeated to an epoch of --steps steps), cnn_tiny teacher (random "
            "init) → cnn_tiny student, one intra-op thread, time per step on three clocks (process CPU, the "
            f"training thread's CPU, wall), median of {args.rounds} rounds × {args.steps} steps, variants "
            "interleaved.")
    out = Path(args.out)
    notes = out.read_text().partition("\n## Reading")[2] if out.is_file() else ""  # kept across reruns
    out.write_text("# Step overhead above the floor (tiny networks, CPU)\n\n" + head + "\n\n" + "\n".join(lines)
                   + "\n" + (f"\n## Reading{notes}" if notes else ""))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
