"""``adaptkd train CONFIG [key=value ...]`` — one experiment from a YAML file."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train one experiment from a YAML config",
                       description="Train the experiment described by CONFIG; key=value pairs override it "
                                   "(e.g. optim.lr=0.1 teachers.0.checkpoint=t.pt). Multi-GPU: "
                                   "torchrun --nproc_per_node=N -m adaptkd train CONFIG")
    p.add_argument("config", help="YAML experiment file")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--resume", action="store_true", help="continue the run in run.out from its last.pt")
    p.add_argument("--out", help="shorthand for run.out=...")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from adaptkd.config import load_config
    from adaptkd.engine.trainer import Trainer

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out={args.out}")
    cfg = load_config(args.config, overrides)
    trainer = Trainer(cfg, resume=args.resume)
    summary = trainer.fit()
    if trainer.dist.is_main:
        s = summary["learners"]["student"]
        print(json.dumps({"out": str(trainer.out), "final_acc": round(s["final_acc"], 2),
                          "best_acc": round(summary["best_acc"], 2), "params": s["params"]}))
    return 0
