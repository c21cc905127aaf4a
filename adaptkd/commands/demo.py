"""``adaptkd demo`` — ``adaptkd compare`` on the bundled recipe: digits, no download.

Trains a teacher (method ``ce``), then three students from scratch — ``ce`` (alone), ``kd`` and
``dkd`` — prints the comparison (accuracy, difference to ``ce``, parameters, size and CPU latency
per model), writes ``<out>/compare.md`` / ``compare.json`` and the report card of all four runs to
``<out>/report/report.html`` (see ``adaptkd report``). The recipe is ``adaptkd/recipes/demo.yaml``
(a ``compare`` recipe; every config key can be overridden). With 500 training images it holds out
no validation split: each model's number is its final epoch on the test split.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from adaptkd.commands.compare import add_options, compare


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="train a teacher and ce/kd/dkd students on bundled data; print the comparison",
                       description=__doc__)
    add_options(p, default_out="runs/demo")
    p.set_defaults(func=run)
    return p


def demo_recipe() -> dict[str, Any]:
    """The embedded demo recipe (a ``compare`` recipe: common / teacher / student / methods)."""
    text = resources.files("adaptkd.recipes").joinpath("demo.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def run(args: argparse.Namespace) -> int:
    command = "adaptkd demo " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    return compare(demo_recipe(), Path(args.out), args, "adaptkd demo: teacher vs students (test split)",
                   command.strip())
