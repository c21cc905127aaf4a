"""``adaptkd bench`` — step time of every method (and balancer) against its physical floor."""

from __future__ import annotations

import argparse

from adaptkd.errors import ConfigError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="time one training step of every method against its physical floor",
        description="Median step time of every registered method (through the real engine, random-init teachers, "
                    "one fixed random batch) and its ratio to the physical floor (teacher forwards without grad + "
                    "student forward/backward + optimiser step, measured interleaved in the same process), to KD "
                    "and (online methods) to DML; peak step memory and images/s. Writes OUT/bench.json.")
    p.add_argument("--teacher", default="resnet32x4",
                   help="teacher network(s), comma-separated, each ARCH[:key=value:...] (builder args; input_size, "
                        "mean, std are network fields), e.g. 'resnet32x4,vit_small:img_size=16' or 'hf:FOLDER'; "
                        "each method takes as many as it accepts, cycling the list (default resnet32x4)")
    p.add_argument("--student", default="resnet8x4", help="student network ARCH[:key=value:...] (default resnet8x4)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--methods", default="all", help="comma-separated methods, or 'all' (default)")
    p.add_argument("--balancers", default="fixed",
                   help="comma-separated balancers with options as name:key=value, e.g. "
                        "'fixed,gradient,gradient:over=params:every=10' (default fixed)")
    p.add_argument("--balancer-methods", default="kd",
                   help="methods that run with the non-fixed balancers, comma-separated or 'all' (default kd)")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=METHOD[:key=value:...]",
                   help="also run METHOD with these options over its example's, labelled LABEL (repeatable), e.g. "
                        "--variant unic_last=unic:student_blocks=[-1]; values are YAML")
    p.add_argument("--method-alone", action="store_true",
                   help="also time each method alone: its forward and the balancer's backward on one step's fixed "
                        "logits and features (columns 'alone ms' and '(floor+alone)/floor')")
    p.add_argument("--distiller", action="store_true",
                   help="also time each method as a hand-written loop over adaptkd.Distiller on the augmented "
                        "batch (rows METHOD[distiller], ratios to the floor and to the engine step)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per variant (default 3)")
    p.add_argument("--block", type=int, default=2, help="steps per variant per interleaved round (default 2)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--image-size", type=int, default=32, help="input size (default 32)")
    p.add_argument("--num-classes", type=int, default=100, help="classes (default 100)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"], help="default fp32")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile every network (floors too)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="CPU device: wall time (default) or the process's CPU time, which other processes on a "
                        "shared machine do not inflate")
    p.add_argument("--out", default="runs/bench", help="folder for bench.json (default runs/bench)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from adaptkd.bench import BenchConfig, render_table, run_bench, split_list
    for flag in ("batch", "steps", "block", "image_size", "num_classes"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: must be ≥ 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup: must be ≥ 0, got {args.warmup}")
    cfg = BenchConfig(
        teacher=args.teacher, student=args.student, batch=args.batch,
        methods=None if args.methods.strip() == "all" else _csv(args.methods),
        balancers=split_list(args.balancers), variants=list(args.variant), method_alone=args.method_alone,
        distiller=args.distiller,
        balancer_methods=None if args.balancer_methods.strip() == "all" else _csv(args.balancer_methods),
        steps=args.steps, warmup=args.warmup, block=args.block, device=args.device, threads=args.threads,
        out=args.out, image_size=args.image_size, num_classes=args.num_classes, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, memory=not args.no_memory, clock=args.clock,
    )
    console = Console()
    if not console.is_terminal:  # a log file or pipe: wide enough for the table
        console = Console(width=200)
    report = run_bench(cfg, log=lambda s: console.print(s, highlight=False))
    console.print(render_table(report))
    console.print(f"peak step memory: {report['memory_method']}; process peak RSS "
                  f"{report['process_maxrss_mb'] or 0:.0f} MB; timing: {report['timing']}")
    console.print(f"wrote {report['path']}")
    return 0
