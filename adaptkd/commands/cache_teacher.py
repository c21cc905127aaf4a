"""``adaptkd cache-teacher CONFIG [key=value ...]`` — run the frozen teachers once over every
training view and store their logits for replay (the config's ``teachers_cache`` section)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("cache-teacher", help="store the frozen teachers' outputs for every training view",
                       description="Run the frozen teachers of CONFIG once over teachers_cache.epochs (default: "
                                   "optim.epochs) epochs of augmented views and write teachers_cache.path; a run "
                                   "of the same config then replays them instead of running the teachers. "
                                   "Multi-GPU: torchrun --nproc_per_node=N -m adaptkd cache-teacher CONFIG "
                                   "(one file per rank)")
    p.add_argument("config", help="YAML experiment file with a teachers_cache section")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. teachers_cache.path=cache/kd)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from adaptkd.config import load_config
    from adaptkd.replay import build_cache

    cfg = load_config(args.config, list(args.overrides))
    summary = build_cache(cfg)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0
