"""The accuracy suite: every method on the synthetic benchmark and on digits, several seeds.

    python benchmarks/accuracy/run.py                       # every method, both datasets, 3 seeds
    python benchmarks/accuracy/run.py --seeds 1 --methods ce kd dkd --dataset digits
    python benchmarks/accuracy/run.py --dataset synthetic --epochs 5 --set data.train_size=5000

Recipes. ``synthetic`` is ``benchmarks/synthetic.yaml`` (its ``common`` section plus ``teacher`` for
the teacher and ``student`` for the students); ``digits`` is ``DIGITS`` below (cnn_medium teacher,
cnn_tiny students, 30 epochs). ``--epochs`` and ``--set key=value`` change both the teacher and
the students (shorter honest runs on a busy machine).

Methods. One YAML snippet per method in ``benchmarks/accuracy/methods/<name>.yaml``: its
``method:`` section (and optionally ``balance:``), and ``teachers: frozen`` (default: the cached
teacher, frozen), ``trainable`` (online KD: a teacher of the teacher's architecture trained from
scratch beside the student) or ``none`` (the student alone). Warm-up lengths in the snippets are
the CIFAR recipes' (in epochs of a 240-epoch schedule); every ``warmup_epochs`` is rescaled to
the run's length (``epochs · w / 240``, at least 1 epoch when w > 0).

Teachers are trained once per dataset (method ``ce``, seed 0) and cached under ``--out``
(``runs/accuracy`` by default, ignored by git); every finished run (``summary.json``) is reused,
so an interrupted suite resumes where it stopped. Results: a Markdown table per dataset — the
student's final test top-1 as mean ± std over seeds, and the gain over ``ce`` and over ``kd`` as
the mean ± std of the per-seed differences (same seed = same initialisation and data order) — in
``--results`` (default ``benchmarks/accuracy/results.md``, with the exact command and the
machine) and ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from adaptkd.config import merge_config  # noqa: E402

HERE = Path(__file__).resolve().parent
CIFAR_EPOCHS = 240  # the schedule the snippets' warm-ups refer to


#: scikit-learn's bundled digits (8x8 grey, 10 classes): a small, fast second dataset.
DIGITS = {
    "common": {
        "data": {"name": "digits", "batch_size": 64, "augment": True, "crop_padding": 1, "flip": False},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4, "epochs": 30,
                  "schedule": "cosine", "milestones": []},
        "run": {"log_every": 50},
    },
    "teacher": {"student": {"arch": "cnn_medium"}, "method": {"name": "ce"}},
    "student": {"student": {"arch": "cnn_tiny"}},
}


def recipe(dataset: str) -> dict[str, Any]:
    """{common, teacher, student} sections of the dataset's recipe."""
    if dataset == "synthetic":
        raw = yaml.safe_load((ROOT / "benchmarks" / "synthetic.yaml").read_text(encoding="utf-8"))
    elif dataset == "digits":
        raw = copy.deepcopy(DIGITS)
    else:
        raise SystemExit(f"--dataset: unknown {dataset!r} (synthetic, digits)")
    for key in ("common", "teacher", "student"):
        if key not in raw:
            raise SystemExit(f"recipe of {dataset!r} has no `{key}` section")
    return {k: raw[k] for k in ("common", "teacher", "student")}


def load_snippets(names: list[str] | None) -> dict[str, dict[str, Any]]:
    from adaptkd.methods import list_methods

    files = sorted((HERE / "methods").glob("*.yaml"))
    snippets = {f.stem: yaml.safe_load(f.read_text(encoding="utf-8")) or {} for f in files}
    if names:
        missing = [n for n in names if n not in snippets]
        if missing:
            raise SystemExit(f"--methods: no snippet benchmarks/accuracy/methods/<name>.yaml for {missing}; "
                             f"have {sorted(snippets)}")
        snippets = {n: snippets[n] for n in names}
    for name, sn in snippets.items():
        if "method" not in sn or "name" not in sn["method"]:
            raise SystemExit(f"benchmarks/accuracy/methods/{name}.yaml: needs `method: {{name: ...}}`")
        if sn.get("teachers", "frozen") not in ("frozen", "trainable", "none"):
            raise SystemExit(f"benchmarks/accuracy/methods/{name}.yaml: `teachers` must be frozen, trainable or none")
    registered = set(list_methods())
    order = sorted(snippets, key=lambda n: ({"ce": 0, "kd": 1}.get(n, 2), n))  # baselines first
    return {n: snippets[n] for n in order if snippets[n]["method"]["name"] in registered}


def _rescale_warmups(node: Any, factor: float) -> Any:
    if isinstance(node, dict):
        return {k: (max(1.0, round(v * factor, 3)) if k == "warmup_epochs" and isinstance(v, (int, float)) and v > 0
                    else _rescale_warmups(v, factor)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rescale_warmups(v, factor) for v in node]
    return node


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.runs: dict[str, Any] = {}

    def base(self, dataset: str, section: str) -> dict[str, Any]:
        from adaptkd.config import apply_overrides

        r = recipe(dataset)
        cfg = merge_config(r["common"], r[section])
        cfg = apply_overrides(cfg, list(self.args.set))
        if self.args.epochs:
            cfg.setdefault("optim", {})["epochs"] = self.args.epochs
        cfg.setdefault("run", {}).update({"progress": False, "tensorboard": False, "latency": False,
                                          "threads": self.args.threads})
        return cfg

    def train(self, cfg: dict[str, Any], out: Path) -> dict[str, Any]:
        from adaptkd.engine.trainer import Trainer

        cfg = copy.deepcopy(cfg)
        cfg["run"]["out"] = str(out)
        cfg["run"]["overwrite"] = True  # a run stopped before summary.json starts again
        summary = out / "summary.json"
        if summary.is_file() and _same_config(out / "config.yaml", cfg):
            return json.loads(summary.read_text(encoding="utf-8"))
        t0 = time.perf_counter()
        s = Trainer(cfg, log=lambda line: None).fit()
        print(f"  {out.relative_to(self.out)}: final {s['final_acc']:.2f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        return s

    def teacher(self, dataset: str) -> tuple[str, str, dict[str, Any]]:
        cfg = self.base(dataset, "teacher")
        cfg["run"]["seed"] = 0
        s = self.train(cfg, self.out / dataset / "teacher")
        return str(self.out / dataset / "teacher" / "best.pt"), cfg["student"]["arch"], s

    def run_dataset(self, dataset: str, snippets: dict[str, dict[str, Any]]) -> dict[str, Any]:
        print(f"[{dataset}] teacher", flush=True)
        ckpt, t_arch, t_sum = self.teacher(dataset)
        base = self.base(dataset, "student")
        epochs = int(base.get("optim", {}).get("epochs", CIFAR_EPOCHS))
        res: dict[str, Any] = {"teacher": {"arch": t_arch, "final_acc": t_sum["final_acc"]}, "epochs": epochs,
                               "student": base["student"]["arch"], "methods": {}}
        for name, sn in snippets.items():
            print(f"[{dataset}] {name}", flush=True)
            cfg = merge_config(base, {"method": _rescale_warmups(sn["method"], epochs / CIFAR_EPOCHS)})
            if "balance" in sn:
                cfg["balance"] = copy.deepcopy(sn["balance"])
            mode = sn.get("teachers", "frozen")
            if mode == "frozen":
                cfg["teachers"] = [{"arch": t_arch, "checkpoint": ckpt}]
            elif mode == "trainable":
                cfg["teachers"] = [{"arch": t_arch, "trainable": True}]
            else:
                cfg["teachers"] = []
            rows = {}
            for seed in range(self.args.seeds):
                c = copy.deepcopy(cfg)
                c["run"]["seed"] = seed
                s = self.train(c, self.out / dataset / name / f"seed{seed}")
                rows[seed] = {"final_acc": s["final_acc"], "best_acc": s["best_acc"]}
                if mode == "trainable" and "teacher0" in s.get("learners", {}):
                    rows[seed]["teacher_acc"] = s["learners"]["teacher0"]["final_acc"]
            res["methods"][name] = {"teachers": mode, "config_method": cfg["method"], "seeds": rows}
        return res


def _same_config(saved: Path, cfg: dict[str, Any]) -> bool:
    """True when the finished run in ``saved``'s folder was made with this very config."""
    from adaptkd.config import config_to_dict, load_config

    if not saved.is_file():
        return False
    try:
        old = config_to_dict(load_config(yaml.safe_load(saved.read_text(encoding="utf-8")), check=False))
    except Exception:  # noqa: BLE001 - an unreadable or outdated config: run again
        return False
    new = config_to_dict(load_config(cfg, check=False))
    for c in (old, new):  # where a run lives is not part of what it computed (copied folders are reused)
        c["run"].pop("out", None)
        for t in c.get("teachers", []):
            t.pop("checkpoint", None)
    return old == new


def _ms(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _gain(rows: dict, ref: dict | None) -> str:
    if not ref:
        return "–"
    common = [s for s in rows if s in ref]
    return _ms([rows[s]["final_acc"] - ref[s]["final_acc"] for s in common])


def table(dataset: str, res: dict[str, Any]) -> str:
    m = res["methods"]
    ce = m.get("ce", {}).get("seeds")
    kd = m.get("kd", {}).get("seeds")
    lines = [f"### {dataset}: teacher {res['teacher']['arch']} ({res['teacher']['final_acc']:.2f} %), "
             f"student {res['student']}, {res['epochs']} epochs", "",
             "| method | teacher | student top-1 (%) | gain over ce | gain over kd | online teacher top-1 | seeds |",
             "|---|---|---|---|---|---|---|"]
    for name, r in m.items():
        rows = r["seeds"]
        accs = [v["final_acc"] for v in rows.values()]
        t_accs = [v["teacher_acc"] for v in rows.values() if "teacher_acc" in v]
        lines.append(f"| {name} | {r['teachers']} | {_ms(accs)} | {'–' if name == 'ce' else _gain(rows, ce)} | "
                     f"{'–' if name == 'kd' else _gain(rows, kd)} | {_ms(t_accs) if t_accs else '–'} | {len(rows)} |")
    return "\n".join(lines)


HEADER = """# Accuracy suite results

Produced by `benchmarks/accuracy/run.py` (see docs/speed.md). Student final test top-1 (%), mean ± std
over seeds; the gains are the mean ± std of the per-seed differences (same seed: same initialisation
and data order). `teacher`: frozen = the cached teacher, trainable = online KD with a teacher of the
same architecture trained from scratch, none = the student alone. Warm-ups are rescaled to the run
length (w · epochs / 240). Each dataset's table carries the command that produced it.
"""


def write_results(path: Path, blocks: dict[str, str]) -> None:
    """Replace the blocks of these datasets in ``path`` and keep the others (each has its command)."""
    import re

    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    kept = {m.group(1): m.group(0) for m in re.finditer(r"<!-- dataset: (\w+) -->.*?<!-- end: \1 -->", old, re.S)}
    kept.update(blocks)
    order = sorted(kept, key=lambda d: ({"synthetic": 0, "digits": 1}.get(d, 2), d))
    path.write_text(HEADER + "\n" + "\n\n".join(kept[d] for d in order) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default 3)")
    ap.add_argument("--methods", nargs="*", help="snippet names (default: every snippet whose method is registered)")
    ap.add_argument("--dataset", default="both", choices=["synthetic", "digits", "both"])
    ap.add_argument("--epochs", type=int, help="override the recipes' epochs (teacher and students)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for teacher and students")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", default="runs/accuracy", help="run folder (default runs/accuracy)")
    ap.add_argument("--results", default=str(HERE / "results.md"), help="Markdown results file")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("--seeds: must be >= 1")

    import torch

    torch.set_num_threads(args.threads)
    snippets = load_snippets(args.methods)
    datasets = ["synthetic", "digits"] if args.dataset == "both" else [args.dataset]
    suite = Suite(args)
    t0 = time.perf_counter()
    results = {d: suite.run_dataset(d, snippets) for d in datasets}
    elapsed = time.perf_counter() - t0

    cmd = "python benchmarks/accuracy/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.lower().startswith("model name"))
    except (OSError, StopIteration):
        pass
    when = time.strftime("%Y-%m-%d")
    blocks = {}
    for d, r in results.items():
        blocks[d] = "\n".join([
            f"<!-- dataset: {d} -->", table(d, r), "",
            f"Command: `{cmd.strip()}`  ", f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{args.threads} thread(s); {when}; suite wall time {elapsed / 60:.1f} min (finished runs reused from "
            f"`{args.out}`).", f"<!-- end: {d} -->"])
    write_results(Path(args.results), blocks)
    (Path(args.out) / "results.json").write_text(json.dumps({"command": cmd, "results": results}, indent=2), encoding="utf-8")
    print("\n" + "\n\n".join(blocks.values()))
    print(f"\nwrote {args.results} and {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
