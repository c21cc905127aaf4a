"""Teacher replay speed: a KD epoch with replayed teacher logits against the ``ce`` epoch of the same
student (the cost of training the student alone) and against a live-teacher KD epoch; and building
the cache against a plain teacher inference loop over the same augmented batches.

Every variant runs in this one process on the same synthetic data, interleaved round by round
(ce, kd live, kd replayed, build, inference), and the table gives medians of per-round process CPU
time with one thread, so the ratios are paired. Writes ``benchmarks/replay.md`` (``--out``).

    python benchmarks/replay_speed.py                       # both pairs, defaults below
    python benchmarks/replay_speed.py --pairs synthetic --rounds 3
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

PAIRS = {
    # name: (teacher, student, image size, classes)
    "resnet32x4->resnet8x4": ("resnet32x4", "resnet8x4", 32, 100),
    "synthetic resnet20->cnn_small": ("resnet20", "cnn_small", 16, 64),
}


def config(pair: str, method: str, out: str, cache: str | None, args: argparse.Namespace) -> dict:
    teacher, student, size, classes = PAIRS[pair]
    cfg = {
        "data": {"name": "synthetic", "image_size": size, "num_classes": classes, "train_size": args.batch * args.steps,
                 "test_size": args.batch, "batch_size": args.batch, "crop_padding": 4, "flip": True,
                 "augment": "cifar", "cache": "memory"},
        "student": {"arch": student},
        "teachers": [{"arch": teacher, "random_init": True}] if method != "ce" else [],
        "method": {"name": method},
        "optim": {"name": "sgd", "lr": 0.01, "epochs": args.rounds + 1, "schedule": "constant", "milestones": []},
        "run": {"out": out, "seed": 0, "device": args.device, "precision": "fp32", "progress": False,
                "latency": False, "tensorboard": False,
                "log_every": 10**9, "threads": 1, "overwrite": True},
    }
    if cache is not None:
        cfg["teachers_cache"] = {"path": cache, "dtype": args.dtype}
    return cfg


def clock(fn, device: str) -> float:
    """Process CPU seconds of ``fn()`` on CPU; wall seconds between two synchronisations on a GPU."""
    if device == "cpu":
        c = time.process_time()
        fn()
        return time.process_time() - c
    torch.cuda.synchronize()
    w = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - w


def inference_loop(trainer) -> None:
    """The plain teacher loop the cache builder is compared with: the same batches and views, the
    teacher's forward, nothing stored."""
    tr = trainer
    d = tr.cfg.data
    with torch.no_grad():
        for xb, _ in tr.pipe.train_batches(1, batch_size=d.batch_size, seed=0, drop_last=d.drop_last,
                                           stop=tr.steps_per_epoch):
            tr.networks["teacher0"](tr.train_aug(xb.to(tr.device), tr.gen))


def measure(pair: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    from adaptkd.config import load_config
    from adaptkd.engine.trainer import Trainer
    from adaptkd.replay import build_cache

    torch.set_num_threads(1)
    cache = str(tmp / f"cache-{pair.split()[0].replace('>', '')}")
    build_cfg = load_config(config(pair, "kd", str(tmp / "b"), cache, args))
    runs = {
        "ce": Trainer(config(pair, "ce", str(tmp / "ce"), None, args), log=lambda s: None),
        "kd live": Trainer(config(pair, "kd", str(tmp / "live"), None, args), log=lambda s: None),
    }
    # the random-init teacher of a trainer (the replayed one builds the same weights from the same seed)
    teacher = {"teacher0": runs["kd live"].networks["teacher0"]}
    build_cache(build_cfg, networks=teacher, log=lambda s: None)
    runs["kd replayed"] = Trainer(config(pair, "kd", str(tmp / "rep"), cache, args), log=lambda s: None)
    timed_cfg = build_cfg.model_copy(update={"teachers_cache": build_cfg.teachers_cache.model_copy(
        update={"epochs": 1, "path": cache + "-timed"})})
    times: dict[str, list[float]] = {k: [] for k in (*runs, "cache build", "teacher inference")}
    for r in range(args.rounds + 1):  # round 0 warms up every path
        for name, tr in runs.items():
            t = clock(lambda tr=tr, r=r: tr.train_epoch(r + 1), args.device)
            if r:
                times[name].append(t)
        built = build_cache(timed_cfg, networks=teacher, log=lambda s: None)  # its epoch loop only
        t_build = built["cpu_seconds" if args.device == "cpu" else "seconds"]
        t_inf = clock(lambda: inference_loop(runs["kd live"]), args.device)
        if r:
            times["cache build"].append(t_build)
            times["teacher inference"].append(t_inf)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS) + ["synthetic", "resnet"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=12, help="steps per epoch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--device", default="cpu", help="cpu (process CPU time) or cuda (synchronised wall time)")
    p.add_argument("--out", default=str(Path(__file__).with_name("replay.md")))
    args = p.parse_args(argv)
    pairs = [k for k in PAIRS if any(s == k or s in k for s in args.pairs)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in pairs:
            m = measure(pair, args, Path(tmp))
            rows.append((pair, m))
            print(pair, {k: round(v, 3) for k, v in m.items()}, file=sys.stderr)
    lines = [
        f"# Teacher replay: speed ({args.device})",
        "",
        f"`python benchmarks/replay_speed.py --batch {args.batch} --steps {args.steps} --rounds {args.rounds} "
        f"--dtype {args.dtype} --device {args.device}`: one process, one thread, synthetic data, random-init "
        f"networks; per variant the median over {args.rounds} rounds (after one warm-up round) of the "
        f"{'process CPU' if args.device == 'cpu' else 'synchronised wall'} time of one "
        f"{args.steps}-step epoch at batch {args.batch}, the variants interleaved round by round. Cache build: "
        "`build_cache`'s epoch loop for one epoch (augmentation draws, teacher forward, fp16 conversion, writing "
        "the file; opening the data and hashing the teacher excluded); "
        "teacher inference: the same batches and views through the teacher, nothing stored.",
        "",
        "| pair | ce epoch s | kd live s | kd replayed s | replayed / ce | live / replayed | cache build s "
        "| plain inference s | build / inference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pair, m in rows:
        lines.append(f"| {pair} | {m['ce']:.3f} | {m['kd live']:.3f} | {m['kd replayed']:.3f} | "
                     f"{m['kd replayed'] / m['ce']:.3f} | {m['kd live'] / m['kd replayed']:.2f}× | "
                     f"{m['cache build']:.3f} | {m['teacher inference']:.3f} | "
                     f"{m['cache build'] / m['teacher inference']:.3f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
