"""``adaptkd train CONFIG [key=value ...]`` — one experiment from a YAML file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train one experiment from a YAML config",
                       description="Train the experiment described by CONFIG; key=value pairs override it "
                                   "(e.g. optim.lr=0.1 teachers.0.checkpoint=t.pt). Multi-GPU: "
                                   "torchrun --nproc_per_node=N -m adaptkd train CONFIG")
    p.add_argument("config", help="YAML experiment file")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--resume", action="store_true", help="continue the run in run.out from its last.pt")
    p.add_argument("--out", help="shorthand for run.out=...")
    p.add_argument("--check", action="store_true",
                   help="build everything (data index, networks, method, optimisers) and run nothing; "
                        "exit 0 when the run is ready, 2 with one line per part that is not")
    p.set_defaults(func=run)
    return p


def check(cfg) -> tuple[list[str], bool]:
    """``(lines, ready)``: the data and every network built on their own (each failure named), then,
    when they all build, the whole run (method, optimisers) in a throw-away folder. Nothing trains."""
    import tempfile

    from adaptkd.data import build_pipeline, describe
    from adaptkd.engine.networks import build_network, count_params
    from adaptkd.engine.trainer import Trainer
    from adaptkd.errors import AdaptkdError
    from adaptkd.models.registry import needs_rgb

    lines: list[str] = []
    ready = True
    pipe = None
    try:
        d = cfg.data.model_copy(update={"workers": 0, "stats_samples": min(cfg.data.stats_samples, 64)})
        need_rgb = any(needs_rgb(c.arch) for c in cfg.network_names().values())
        pipe, resolved = build_pipeline(d, need_rgb=need_rgb)
        lines.append(f"ok    {describe(pipe, resolved)}")
    except (AdaptkdError, OSError) as exc:
        ready = False
        lines.append(f"FAIL  data: {str(exc).splitlines()[0]}")
    num_classes = pipe.num_classes if pipe is not None else (cfg.data.num_classes or 1000)
    in_channels = pipe.in_channels if pipe is not None else 3
    teachers = {t.name or f"teacher{i}" for i, t in enumerate(cfg.teachers) if not t.trainable}
    for name, net in cfg.network_names().items():
        try:
            model = build_network(net, num_classes, in_channels, field=name, teacher=name in teachers)
            lines.append(f"ok    {name}: {net.arch} ({count_params(model) / 1e6:.2f}M parameters)")
        except Exception as exc:  # noqa: BLE001 - each network's failure is reported, not raised
            ready = False
            lines.append(f"FAIL  {name}: {net.arch}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    if pipe is not None:
        pipe.close()
    if ready:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                run_cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": tmp, "overwrite": True}),
                                                 "data": d})
                tr = Trainer(run_cfg, log=lambda s: None)
                lines.append(f"ok    run: method {cfg.method.name}, {tr.steps_per_epoch} steps per epoch, "
                             f"{cfg.optim.epochs} epochs; nothing was trained")
                tr.pipe.close()
            except (AdaptkdError, OSError) as exc:
                ready = False
                lines.append(f"FAIL  run: {str(exc).splitlines()[0]}")
    return lines, ready


def run(args: argparse.Namespace) -> int:
    from adaptkd.config import load_config
    from adaptkd.engine.resume import says_what_is_kept
    from adaptkd.engine.trainer import Trainer

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out={args.out}")
    cfg = load_config(args.config, overrides)
    if args.check:
        lines, ready = check(cfg)
        print("\n".join(lines))
        print(f"{args.config}: " + ("ready to train" if ready else "NOT ready (see FAIL above)"))
        return 0 if ready else 2
    with says_what_is_kept(Path(cfg.run.out)):  # (fit's own line replaces it once training started)
        trainer = Trainer(cfg, resume=args.resume)
        summary = trainer.fit()
    if trainer.dist.is_main:
        s = summary["learners"]["student"]
        print(json.dumps({"out": str(trainer.out), "final_acc": round(s["final_acc"], 2),
                          "best_acc": round(summary["best_acc"], 2), "params": s["params"]}))
    return 0
