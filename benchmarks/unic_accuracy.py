"""UNIC accuracy on the synthetic benchmark: what each mechanism adds (issue 7).

Rows, each over ``--seeds``: the student alone (``ce``); single-teacher feature distillation from
each teacher (``fd_<teacher>``: the UNIC loss from that teacher alone, last student block only, no
dropping); UNIC from all teachers without ladder (``unic_last``: last block only, no dropping),
with the ladder (``unic_ladder``: every student tap block, no dropping), with the ladder and
teacher dropping (``unic_ladder_drop``: the reference defaults, p = 0.5). Every distillation row
keeps the student head's CE (``ce_weight`` 1, the library default), so both are reported: the
head's test top-1 and a linear probe's test top-1 on the frozen penultimate features
(``adaptkd.engine.probe.linear_probe``).

Every run starts from ``--base`` (the calibrated synthetic recipe ``benchmarks/synthetic.yaml``:
its data, optim and run sections). Teachers are trained first with method ``ce`` (the same base,
``--teacher-set`` overrides) and reused across seeds. Finished runs (``probe.json`` present) are not
run again, so an interrupted benchmark resumes.

    python benchmarks/unic_accuracy.py --base benchmarks/synthetic.yaml
    python benchmarks/unic_accuracy.py --base benchmarks/synthetic.yaml --teachers resnet20 vit_tiny \\
        --vit-depth 4 --teacher-set vit_tiny:optim.name=adamw vit_tiny:optim.lr=0.001 --seeds 0 1 2

ViTs get ``img_size`` = the data's image size, ``--patch`` and ``--vit-depth``. Prints a Markdown table and writes it
with the raw numbers to ``<out>/tables.md`` and ``<out>/results.json``. One thread by default.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptkd.config import apply_overrides  # noqa: E402
from adaptkd.engine.probe import linear_probe  # noqa: E402
from adaptkd.engine.trainer import Trainer  # noqa: E402

VITS = ("vit_tiny", "vit_small")


def fmt(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        raw = yaml.safe_load(Path(args.base).read_text(encoding="utf-8"))
        # benchmarks/synthetic.yaml has sections common / teacher / student; a plain config works too.
        base = copy.deepcopy(raw.get("common", raw))
        if not args.student:
            args.student = (raw.get("student", {}).get("student") or raw.get("student") or {}).get("arch", "vit_tiny")
        if not args.teachers:
            t = (raw.get("teacher", {}) or {}).get("student", {}).get("arch")
            args.teachers = [t] if t else ["resnet32x4", "wrn_40_2", "vit_small"]
        base = apply_overrides(base, list(args.set))
        if args.epochs:
            base.setdefault("optim", {})["epochs"] = args.epochs
        base.setdefault("run", {}).update({"progress": False, "tensorboard": False, "latency": False,
                                           "threads": args.threads})
        for key in ("teachers", "peers", "student", "method"):
            base.pop(key, None)
        self.base = base
        self.image_size = int(base.get("data", {}).get("image_size") or 16)
        self.out = Path(args.out)
        self.results: dict[str, Any] = {"base": args.base, "overrides": list(args.set), "student": args.student,
                                        "teachers": list(args.teachers), "runs": {}}

    def net(self, arch: str) -> dict[str, Any]:
        d: dict[str, Any] = {"arch": arch}
        if arch in VITS:
            d["args"] = {"img_size": self.image_size, "patch_size": self.args.patch, "depth": self.args.vit_depth}
        return d

    def teacher(self, arch: str) -> str:
        out = self.out / "teachers" / arch
        if not (out / "summary.json").is_file():
            cfg = copy.deepcopy(self.base)
            # "key=value" applies to every teacher, "arch:key=value" to that architecture only
            sets = [s.split(":", 1)[1] if ":" in s.split("=", 1)[0] else s for s in self.args.teacher_set
                    if ":" not in s.split("=", 1)[0] or s.split(":", 1)[0] == arch]
            cfg = apply_overrides(cfg, sets)
            cfg["student"] = self.net(arch)
            cfg["method"] = {"name": "ce"}
            cfg["run"].update({"out": str(out), "seed": 0, "overwrite": True})
            Trainer(cfg, log=lambda s: None).fit()
        return str(out / "best.pt")

    def run(self, name: str, method: dict, seed: int, teachers: list[str]) -> dict[str, Any]:
        out = self.out / name / f"seed{seed}"
        done = out / "probe.json"
        if not done.is_file():
            cfg = copy.deepcopy(self.base)
            cfg["student"] = self.net(self.args.student)
            cfg["teachers"] = [{**self.net(t), "checkpoint": self.teacher(t)} for t in teachers]
            cfg["method"] = copy.deepcopy(method)
            cfg["run"].update({"out": str(out), "seed": seed, "overwrite": True})
            tr = Trainer(cfg, log=lambda s: None)
            summary = tr.fit()
            probe = linear_probe(tr.networks["student"], tr.data, seed=seed)
            rec = {"head": summary["final_acc"], "best_head": summary["best_acc"], "probe": probe["top1"],
                   "probe_l2": probe["l2"], "teachers": {k: v["final_acc"] for k, v in summary["teachers"].items()}}
            done.write_text(json.dumps(rec, indent=2), encoding="utf-8")
        return json.loads(done.read_text(encoding="utf-8"))

    def teacher_row(self, arch: str) -> dict[str, Any]:
        """A teacher's own head accuracy and linear probe (computed once)."""
        done = self.out / "teachers" / arch / "probe.json"
        if not done.is_file():
            self.teacher(arch)
            from adaptkd.engine.evaluate import load_run_model
            from adaptkd.data import build_data

            model, _ = load_run_model(str(self.out / "teachers" / arch), which="last")
            d = self.base.get("data", {})
            data = build_data(d.get("name", "synthetic"), root=d.get("root"), image_size=d.get("image_size"),
                              num_classes=d.get("num_classes"), train_size=d.get("train_size"),
                              test_size=d.get("test_size"), data_seed=d.get("data_seed", 0))
            summary = json.loads((self.out / "teachers" / arch / "summary.json").read_text(encoding="utf-8"))
            rec = {"head": summary["final_acc"], "probe": linear_probe(model, data)["top1"]}
            done.write_text(json.dumps(rec, indent=2), encoding="utf-8")
        return json.loads(done.read_text(encoding="utf-8"))

    def main(self) -> None:
        a = self.args
        extra = dict(a.unic)
        fd = {"name": "unic", "student_blocks": [-1], "drop_prob": 0.0, **extra}
        rows: list[tuple[str, dict, list[str]]] = [("ce", {"name": "ce"}, [])]
        rows += [(f"fd_{t}", fd, [t]) for t in a.teachers]
        rows += [("unic_last", fd, list(a.teachers)),
                 ("unic_ladder", {"name": "unic", "drop_prob": 0.0, **extra}, list(a.teachers)),
                 ("unic_ladder_drop", {"name": "unic", "drop_prob": a.drop_prob, **extra}, list(a.teachers))]
        table: dict[str, dict[str, list[float]]] = {}
        for name, method, teachers in rows:
            recs = [self.run(name, method, s, teachers) for s in a.seeds]
            table[name] = {"head": [r["head"] for r in recs], "probe": [r["probe"] for r in recs]}
            self.results["runs"][name] = {"method": method, "teachers": teachers, "seeds": list(a.seeds), "records": recs}
        teach = {t: self.teacher_row(t) for t in a.teachers}
        self.results["teacher_rows"] = teach
        epochs = self.base.get("optim", {}).get("epochs")
        lines = [f"Student {a.student}, teachers {', '.join(a.teachers)}; base {a.base} "
                 f"(overrides: {' '.join(a.set) or 'none'}), {epochs} epochs, seeds {list(a.seeds)}, torch {torch.__version__}.",
                 f"Command: `python {' '.join(sys.argv)}`", "",
                 "| run | head top-1 (%) | linear probe top-1 (%) | Δ probe vs ce | ranges overlap ce? |",
                 "|---|---:|---:|---:|---|"]
        for t, r in teach.items():
            lines.append(f"| teacher {t} | {r['head']:.2f} | {r['probe']:.2f} | | |")
        ce = table["ce"]["probe"]
        for name, v in table.items():
            d = statistics.mean(v["probe"]) - statistics.mean(ce)
            overlap = min(v["probe"]) <= max(ce) and min(ce) <= max(v["probe"])
            lines.append(f"| {name} | {fmt(v['head'])} | {fmt(v['probe'])} | {d:+.2f} | "
                         f"{'' if name == 'ce' else ('yes' if overlap else 'no')} |")
        text = "\n".join(lines)
        print(text)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "tables.md").write_text(text + "\n", encoding="utf-8")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2), encoding="utf-8")


def _kv(text: str) -> tuple[str, Any]:
    k, _, v = text.partition("=")
    return k, yaml.safe_load(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="benchmarks/synthetic.yaml")
    p.add_argument("--student", default="", help="default: the base's student (else vit_tiny)")
    p.add_argument("--teachers", nargs="+", default=[],
                   help="default: the base's teacher (else resnet32x4 wrn_40_2 vit_small)")
    p.add_argument("--patch", type=int, default=4, help="ViT patch size")
    p.add_argument("--vit-depth", type=int, default=12, help="ViT depth")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=0, help="override optim.epochs (0: the base's)")
    p.add_argument("--drop-prob", type=float, default=0.5)
    p.add_argument("--unic", type=_kv, nargs="*", default=[], help="unic options for every UNIC row, key=value")
    p.add_argument("--set", nargs="*", default=[], help="overrides of the base, key=value")
    p.add_argument("--teacher-set", nargs="*", default=[],
                   help="overrides for the teachers' ce runs: key=value, or arch:key=value for one teacher")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench/unic_accuracy")
    args = p.parse_args()
    if not Path(args.base).is_file():
        sys.exit(f"base recipe {args.base!r} not found: pass --base (e.g. configs/synthetic/unic_vit_tiny.yaml)")
    torch.set_num_threads(args.threads)
    Bench(args).main()


if __name__ == "__main__":
    main()
