"""``adaptkd list`` — every registered method, model, dataset and balancer."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("list", help="list registered methods, models, datasets and balancers")
    p.add_argument("what", nargs="?", choices=["methods", "models", "datasets", "balancers"], help="only this registry")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from adaptkd.balance import list_balancers
    from adaptkd.data import list_datasets
    from adaptkd.methods import list_methods
    from adaptkd.models import list_models

    regs = {"methods": list_methods(), "models": list_models(), "datasets": list_datasets(),
            "balancers": list_balancers()}
    for name, items in regs.items():
        if args.what and name != args.what:
            continue
        print(f"{name}: {', '.join(items)}")
    return 0
