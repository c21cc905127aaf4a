"""``adaptkd eval RUN_OR_CHECKPOINT`` — test accuracy of every learner of a run."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a run folder or checkpoint on its test split")
    p.add_argument("run", help="run folder (uses best.pt) or a .pt checkpoint")
    p.add_argument("--which", choices=["best", "last"], default="best")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from adaptkd.engine.evaluate import evaluate

    res = evaluate(args.run, which=args.which, device=args.device)
    if args.json:
        slim = {k: {m: v for m, v in r.items() if m != "per_class"} for k, r in res["networks"].items()}
        print(json.dumps({"epoch": res["epoch"], "networks": slim}))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{args.run} ({args.which}, epoch {res['epoch']})")
    for col in ("network", "top-1 %", "top-5 %", "loss", "images"):
        t.add_column(col)
    for name, r in res["networks"].items():
        t.add_row(name, f"{r['top1']:.2f}", f"{r['top5']:.2f}", f"{r['loss']:.4f}", str(r["n"]))
    Console().print(t)
    return 0
