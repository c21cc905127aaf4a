"""The hostile-config campaign: about 150 configs and overrides a hostile tester would try.

Each case is one ``adaptkd train`` of a one-step digits run (``run.max_steps_per_epoch: 1``)
with one hostile value. A case ends *clean* when it is either

* ``refused``: exit code 2, one ``adaptkd: error: ...`` message (no traceback) and no run folder
  created, or
* ``finite``: accepted, exit code 0, and every tensor of the written ``last.pt`` finite.

A hostile value that trains without complaint is ``accepted-silently``; an accepted extreme
(``trains=True``) must end ``finite``. Anything else is counted by what went wrong:
``traceback`` (a raw crash), ``nonfinite-late``
(accepted, then stopped as non-finite during training: exit 3), ``accepted-nonfinite`` (exit 0
with NaN/Inf in ``last.pt``), ``left-folder`` (refused, but a run folder was left behind),
``hung`` (past the time limit) and ``other``. Every case runs in a forked child with a time and a
memory limit. ``tests/test_hostile.py`` runs the campaign's quick part in the suite; the whole
campaign, against any checkout::

    python tests/hostile_cases.py [--repo PATH] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Case", "cases", "base_config", "run_case", "run_campaign", "CLEAN"]

NAN, INF = float("nan"), float("inf")
CLEAN = ("refused", "finite")


@dataclass
class Case:
    """One hostile input: ``make(tmp)`` returns ``(config dict or YAML text, overrides)``."""

    category: str
    label: str
    make: Callable[[Path], tuple[dict | str, list[str]]]
    trains: bool = False  # expected to be accepted (a one-step run); refusals are the default
    tags: set[str] = field(default_factory=set)


def base_config(out: Path, method: dict | None = None, teachers: list | None = None, **sections: Any) -> dict:
    """A valid one-step digits run of a ``cnn_tiny`` (the campaign breaks one thing in it)."""
    cfg: dict[str, Any] = {
        "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 512, "crop_padding": 1, "flip": False},
        "student": {"arch": "cnn_tiny"},
        "teachers": teachers or [],
        "method": method or {"name": "ce"},
        "optim": {"name": "sgd", "lr": 0.05, "epochs": 1, "schedule": "constant", "milestones": []},
        "run": {"out": str(out), "seed": 0, "progress": False, "latency": False, "tensorboard": False,
                "max_steps_per_epoch": 1, "device": "cpu", "threads": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **values}
        else:
            cfg[section] = values
    return cfg


FROZEN = [{"arch": "cnn_tiny", "random_init": True}]
TWO_FROZEN = [{"arch": "cnn_tiny", "random_init": True}, {"arch": "cnn_tiny", "random_init": True}]
ONLINE = [{"arch": "cnn_tiny", "trainable": True}]
#: teachers each method needs, and options it needs to be valid
METHOD_SETUP: dict[str, tuple[list, dict]] = {
    "ce": ([], {}), "kd": (FROZEN, {}), "dkd": (FROZEN, {}), "dtkd": (FROZEN, {}), "afd": (FROZEN, {}),
    "rtk": (FROZEN, {}), "fitnet": (FROZEN, {}), "unic": (TWO_FROZEN, {}), "dml": (ONLINE, {}),
    "switokd": (ONLINE, {}), "compose": (FROZEN, {"terms": [{"loss": "ce"}, {"loss": "kd"}]}),
}


def _section(section: str, key: str, value: Any, method: str = "ce", **extra: Any) -> Callable:
    def make(tmp: Path) -> tuple[dict, list[str]]:
        teachers, opts = METHOD_SETUP[method]
        cfg = base_config(tmp / "run", {"name": method, **opts}, teachers)
        node = cfg[section]
        node.update(extra)
        node[key] = value
        return cfg, []
    return make


def _method(method: str, key: str, value: Any) -> Callable:
    def make(tmp: Path) -> tuple[dict, list[str]]:
        teachers, opts = METHOD_SETUP[method]
        opts = json.loads(json.dumps(opts))
        if key.startswith("terms."):
            _, i, k = key.split(".")
            opts["terms"][int(i)][k] = value
        else:
            opts[key] = value
        return base_config(tmp / "run", {"name": method, **opts}, teachers), []
    return make


def _balance(key: str, value: Any, **extra: Any) -> Callable:
    def make(tmp: Path) -> tuple[dict, list[str]]:
        return base_config(tmp / "run", {"name": "kd"}, FROZEN, balance={"name": "gradient", **extra, key: value}), []
    return make


def _override(*items: str, method: str = "ce") -> Callable:
    def make(tmp: Path) -> tuple[dict, list[str]]:
        teachers, opts = METHOD_SETUP[method]
        return base_config(tmp / "run", {"name": method, **opts}, teachers), list(items)
    return make


def _student(**student: Any) -> Callable:
    def make(tmp: Path) -> tuple[dict, list[str]]:
        return base_config(tmp / "run", student=student), []
    return make


def _out(value: Callable[[Path], str]) -> Callable:
    def make(tmp: Path) -> tuple[dict, list[str]]:
        return base_config(tmp / "run", run={"out": value(tmp)}), []
    return make


def _under_file(tmp: Path) -> str:
    (tmp / "afile").write_text("a regular file")
    return str(tmp / "afile" / "run")


def _text(text: Callable[[Path], str]) -> Callable:
    def make(tmp: Path) -> tuple[str, list[str]]:
        return text(tmp), []
    return make


def _alias_bomb(where: str) -> Callable[[Path], str]:
    """A billion-laughs YAML: 9 aliases per level, 8 levels (9**8 values once expanded), < 1 KB."""
    def text(tmp: Path) -> str:
        levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        levels += [f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefg", "bcdefgh")]
        cfg = yaml.safe_dump(base_config(tmp / "run"), sort_keys=False)
        if where == "student.args":
            args = "".join(f"    {line}\n" for line in levels)
            return cfg.replace("student:\n  arch: cnn_tiny\n", "student:\n  arch: cnn_tiny\n  args:\n" + args)
        return cfg + "x_bomb:\n" + "".join(f"  {line}\n" for line in levels)
    return text


def _deep(tmp: Path) -> str:
    return "data: " + "[" * 20000 + "]" * 20000 + "\n"


def _huge_file(tmp: Path) -> str:
    return yaml.safe_dump(base_config(tmp / "run")) + "# " + "x" * 5_000_000 + "\n"


def cases() -> list[Case]:
    """Every case of the campaign (about 150)."""
    out: list[Case] = []

    def add(category: str, label: str, make: Callable, trains: bool = False) -> None:
        out.append(Case(category, label, make, trains))

    # -- non-finite numbers in every float-valued section
    for section, key, value, method, extra in [
        ("optim", "lr", INF, "ce", {}), ("optim", "lr", NAN, "ce", {}), ("optim", "weight_decay", INF, "ce", {}),
        ("optim", "momentum", NAN, "ce", {}), ("optim", "eps", INF, "ce", {"name": "adam"}),
        ("optim", "warmup_epochs", INF, "ce", {}), ("optim", "min_lr", INF, "ce", {"schedule": "cosine"}),
        ("optim", "gamma", NAN, "ce", {"schedule": "step"}), ("optim", "betas", [NAN, 0.9], "ce", {"name": "adam"}),
        ("optim", "betas", [0.9, INF], "ce", {"name": "adamw"}), ("optim", "lr", -INF, "ce", {}),
        ("optim", "weight_decay", NAN, "ce", {}),
    ]:
        add("non-finite", f"{section}.{key}: {value}", _section(section, key, value, method, **extra))
    for method, key, value in [
        ("kd", "temperature", INF), ("kd", "temperature", NAN), ("kd", "kd_weight", INF), ("kd", "ce_weight", NAN),
        ("dkd", "alpha", INF), ("dkd", "beta", NAN), ("dkd", "warmup_epochs", INF), ("dkd", "temperature", -INF),
        ("dtkd", "temperature", INF), ("dtkd", "alpha", INF), ("dtkd", "warmup_epochs", NAN),
        ("unic", "init_std", INF), ("unic", "hidden_mult", INF), ("unic", "drop_prob", NAN),
        ("unic", "momentum_end", NAN), ("unic", "unic_weight", INF), ("rtk", "threshold", INF),
        ("rtk", "rtk_weight", NAN), ("afd", "afd_weight", INF), ("fitnet", "hint_weight", INF),
        ("switokd", "temperature", INF), ("dml", "temperature", NAN), ("ce", "label_smoothing", NAN),
        ("compose", "terms.1.weight", INF), ("compose", "terms.1.temperature", NAN),
        ("compose", "terms.1.warmup_epochs", INF),
    ]:
        add("non-finite", f"{method}: {key}: {value}", _method(method, key, value))
    for key, value, extra in [("rho", INF, {}), ("w0", INF, {"controller": "cosine_gate"}), ("ema", NAN, {}),
                              ("lambda_min", NAN, {}), ("kappa", INF, {"controller": "ratio"}),
                              ("psi0", NAN, {}), ("lambda0", NAN, {})]:
        add("non-finite", f"balance gradient: {key}: {value}", _balance(key, value, **extra))
    add("non-finite", "override optim.lr=.inf", _override("optim.lr=.inf"))
    add("non-finite", "override method.temperature=.nan", _override("method.temperature=.nan", method="kd"))

    # -- booleans where numbers are expected
    for section, key in [("optim", "epochs"), ("data", "batch_size"), ("optim", "lr"), ("run", "seed"),
                         ("run", "threads"), ("data", "crop_padding"), ("run", "log_every"), ("data", "data_seed"),
                         ("optim", "momentum"), ("run", "max_steps_per_epoch")]:
        add("boolean as number", f"{section}.{key}: true", _section(section, key, True))
    for method, key in [("kd", "temperature"), ("rtk", "k"), ("afd", "qk_dim"), ("fitnet", "stage1_epochs"),
                        ("unic", "drop_prob")]:
        add("boolean as number", f"{method}: {key}: true", _method(method, key, True))
    add("boolean as number", "balance gradient: every: true", _balance("every", True))

    # -- values beyond what the code or the machine can do
    for section, key, value, extra in [
        ("data", "image_size", 100000, {}), ("data", "crop_padding", 100000, {}), ("data", "batch_size", 10**9, {}),
        ("data", "eval_batch_size", 10**9, {}), ("data", "num_classes", 10**9, {}), ("data", "train_size", 0, {}),
        ("data", "data_seed", -5, {}), ("data", "data_seed", 2**70, {}), ("data", "image_size", 2, {}),
        ("data", "image_size", 1024, {"batch_size": 4096, "eval_batch_size": 4096}),
        ("run", "seed", 2**64, {}), ("run", "seed", -1, {}), ("run", "threads", 100000, {}), ("run", "threads", 0, {}),
        ("run", "log_every", 0, {}), ("run", "eval_every", -1, {}), ("run", "max_steps_per_epoch", 0, {}),
        ("optim", "lr", 1e300, {}), ("optim", "lr", 0, {}), ("optim", "betas", [2.0, 0.5], {"name": "adam"}),
        ("optim", "betas", [0.9, 1.0], {"name": "adam"}), ("optim", "momentum", 1.0, {}),
        ("optim", "eps", 0, {"name": "adam"}),
        ("optim", "eps", -1e-8, {"name": "adamw"}), ("optim", "gamma", 2.0, {}), ("optim", "epochs", 10**9, {}),
        ("optim", "min_lr", 1.0, {"schedule": "cosine"}), ("optim", "warmup_epochs", 5, {}),
        ("optim", "milestones", [0], {"schedule": "step"}), ("optim", "milestones", [10**20], {"schedule": "step"}),
        ("optim", "weight_decay", 1e9, {}),
    ]:
        add("out of range", f"{section}.{key}: {value}", _section(section, key, value, **extra))
    for method, key, value in [
        ("kd", "temperature", 1e-300), ("kd", "temperature", 1e300), ("kd", "kd_weight", 1e300), ("rtk", "k", 10**18),
        ("rtk", "top_m", 10**18), ("rtk", "threshold", -1), ("afd", "qk_dim", 10**9), ("unic", "hidden_mult", 1e9),
        ("unic", "drop_prob", 1.5), ("ce", "label_smoothing", 1.0), ("dkd", "warmup_epochs", 0),
        ("switokd", "temperature", 1e-300), ("fitnet", "stage1_epochs", -1), ("unic", "init_std", 1e6),
        ("compose", "terms.1.weight", 1e300),
    ]:
        add("out of range", f"{method}: {key}: {value}", _method(method, key, value))
    for key, value, extra in [("rho", 1e300, {}), ("lambda0", 2.0, {}), ("psi0", 180, {}), ("every", 0, {}),
                              ("ema", 1.0, {})]:
        add("out of range", f"balance gradient: {key}: {value}", _balance(key, value, **extra))
    add("out of range", "student vit_tiny with 4096x4096 patches (3 billion parameters)",
        _student(arch="vit_tiny", args={"depth": 1, "img_size": 4096, "patch_size": 1}))
    add("out of range", "student vit_tiny with img_size 100000", _student(arch="vit_tiny", args={"img_size": 100000}))

    # -- wrong types
    for section, key, value in [("optim", "lr", "fast"), ("optim", "epochs", 2.5), ("data", "batch_size", [1]),
                                ("run", "seed", "x"), ("run", "out", 5), ("run", "device", 3),
                                ("optim", "betas", "a"), ("data", "image_size", {"a": 1})]:
        add("wrong type", f"{section}.{key}: {value!r}", _section(section, key, value))
    add("wrong type", "kd: temperature: {}", _method("kd", "temperature", {}))
    add("wrong type", "student.args: text", _student(arch="cnn_tiny", args="x"))

    # -- names
    for section, key, value in [("optim", "epoch", 1), ("optim", "learning_rate", 0.1), ("data", "batchsize", 8),
                                ("run", "outt", "x")]:
        add("unknown name", f"{section}.{key}", _section(section, key, value))
    add("unknown name", "kd: temprature", _method("kd", "temprature", 4.0))
    add("unknown name", "fitnet: student_tap (old spelling)", _method("fitnet", "student_tap", "stages.1"))
    add("unknown name", "unknown section `runn`", _override("runn.seed=1"))

    # -- run folders
    add("run folder", "run.out: empty", _out(lambda t: ""))
    add("run folder", "run.out: NUL byte", _out(lambda t: str(t / "ru\x00n")))
    add("run folder", "run.out: 5,000 characters", _out(lambda t: str(t / ("r" * 5000))))
    add("run folder", "run.out: a 300-character folder name", _out(lambda t: str(t / ("r" * 300) / "run")))
    add("run folder", "run.out: under a regular file", _out(_under_file))
    add("run folder", "run.out: an unwritable place (/proc)", _out(lambda t: "/proc/adaptkd_hostile/run"))
    add("run folder", "run.out: whitespace only", _out(lambda t: "   "))

    # -- devices, data/model mismatches
    for dev in ("meta", "cuda:99", "xla", "cuda:-1", "cpu:abc", ""):
        add("device", f"run.device: {dev!r}", _section("run", "device", dev))
    add("model/data", "a student built for 3 channels on 1-channel data",
        _student(arch="cnn_tiny", args={"in_channels": 3}))
    add("model/data", "crop_padding larger than the digits image (8 px)", _section("data", "crop_padding", 64))

    # -- YAML structure
    add("yaml", "alias bomb (818 bytes) in student.args", _text(_alias_bomb("student.args")))
    add("yaml", "alias bomb in an unknown section", _text(_alias_bomb("top")))
    add("yaml", "20,000-deep nesting", _text(_deep))
    add("yaml", "a 5 MB config file", _text(_huge_file))
    add("yaml", "override with 100 levels of keys", _override("data." + ".".join(["a"] * 100) + "=1"))
    add("yaml", "override value nested 1,000 deep", _override("data.batch_size=" + "[" * 1000 + "]" * 1000))

    # -- accepted extremes: one step must be finite
    add("accepted extreme", "lr at its bound (1000)", _section("optim", "lr", 1000.0), trains=True)
    add("accepted extreme", "kd temperature 0.01", _method("kd", "temperature", 0.01), trains=True)
    add("accepted extreme", "kd temperature 1000", _method("kd", "temperature", 1000.0), trains=True)
    add("accepted extreme", "kd weights 1e6", _method("kd", "kd_weight", 1e6), trains=True)
    add("accepted extreme", "seed 2**32-1", _section("run", "seed", 2**32 - 1), trains=True)
    add("accepted extreme", "adam betas [0, 0.999]", _section("optim", "betas", [0.0, 0.999], name="adam"), trains=True)
    add("accepted extreme", "weight_decay 10", _section("optim", "weight_decay", 10.0), trains=True)
    add("accepted extreme", "dkd warmup 1e-6", _method("dkd", "warmup_epochs", 1e-6), trains=True)
    return out


# ----------------------------------------------------------------------------------------------
# running


def _finite_checkpoint(path: Path) -> bool:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    stack: list[Any] = [state.get("models", {}), state.get("method", {})]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, torch.Tensor) and node.is_floating_point() and not bool(torch.isfinite(node).all()):
            return False
    return True


def run_case(case: Case, tmp: Path) -> tuple[str, int, str]:
    """Run one case in-process (the caller isolates it): (outcome, exit code, stderr)."""
    from adaptkd.cli import main

    cfg, overrides = case.make(tmp)
    path = tmp / "c.yaml"
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(["train", str(path), *overrides])
            except SystemExit as exc:
                rc = int(exc.code or 0)
            except BaseException:  # noqa: BLE001 - a raw crash is an outcome here
                import traceback

                traceback.print_exc()
                rc = 1
    finally:
        os.chdir(cwd)
    text = err.getvalue()
    left = [p for p in tmp.iterdir() if p.name not in ("c.yaml", "afile")]
    if "Traceback" in text or rc not in (0, 2, 3):
        return "traceback", rc, text
    if rc == 2:
        return ("left-folder" if left else "refused"), rc, text
    if rc == 3:
        return "nonfinite-late", rc, text
    ckpt = tmp / "run" / "last.pt"
    if not ckpt.is_file():
        return "other", rc, text
    return ("finite" if _finite_checkpoint(ckpt) else "accepted-nonfinite"), rc, text


def _isolated(case: Case, tmp: Path, timeout: float, memory: int) -> tuple[str, int, str]:
    """``run_case`` in a forked child with a time and an address-space limit."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        code = 0
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            outcome = run_case(case, tmp)
        except BaseException as exc:  # noqa: BLE001 - report anything
            outcome = ("traceback", 1, f"{type(exc).__name__}: {str(exc)[:500]}")
            code = 1
        with os.fdopen(wfd, "w") as f:
            json.dump(outcome, f)
        os._exit(code)
    os.close(wfd)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(rfd)
            return "hung", -9, f"no answer after {timeout:.0f} s"
        time.sleep(0.05)
    with os.fdopen(rfd) as f:
        data = f.read()
    if not data:
        return "traceback", status, f"the process died (status {status}; memory limit reached?)"
    outcome, rc, text = json.loads(data)
    return outcome, rc, text


def run_campaign(selected: list[Case] | None = None, *, timeout: float = 60.0, memory: int = 6 * 2**30,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every case, isolated: one record each (category, label, outcome, exit code, message)."""
    import torch

    torch.set_num_threads(1)
    records = []
    for i, case in enumerate(selected if selected is not None else cases(), 1):
        with tempfile.TemporaryDirectory() as d:
            outcome, rc, text = _isolated(case, Path(d), timeout, memory)
            text = text.replace(d, "<case>")
        if outcome == "finite" and not case.trains:
            outcome = "accepted-silently"  # a hostile value that should have been refused
        records.append({"category": case.category, "label": case.label, "outcome": outcome, "rc": rc,
                        "message": text.strip().splitlines()[-1][:300] if text.strip() else ""})
        log(f"{i:3d} {outcome:18s} {case.category}: {case.label}")
    return records


def markdown(records: list[dict[str, Any]]) -> str:
    """The hostile-values section of docs/errors.md, from a campaign's records."""
    counts = Counter(r["outcome"] for r in records)
    lines = [
        "## Hostile values",
        "",
        "Generated from the campaign of `tests/hostile_cases.py` (run by `tests/test_hostile.py`): each",
        "row is one `adaptkd train` of a one-step digits run with one hostile value. *refused*: exit 2,",
        "one message, no run folder; *finite*: an accepted extreme that trained one step and saved a",
        "finite checkpoint.",
        "",
        f"{len(records)} cases: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()) + ".",
        "",
        "| # | category | input | outcome | exit | message |",
        "|---:|---|---|---|---:|---|",
    ]
    for i, r in enumerate(records, 1):
        cells = [r["category"], r["label"], r["outcome"], str(r["rc"]), r["message"] if r["rc"] else ""]
        cells = [c.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|") for c in cells]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                        help="checkout whose adaptkd is tested (default: this one)")
    parser.add_argument("--json", help="write every record to this file")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--markdown", action="store_true", help="print the docs/errors.md section instead")
    args = parser.parse_args()
    sys.path.insert(0, args.repo)
    records = run_campaign(timeout=args.timeout, log=(lambda s: None) if args.markdown else print)
    if args.markdown:
        sys.stdout.write(markdown(records))
        return 0
    counts = Counter(r["outcome"] for r in records)
    clean = sum(counts[k] for k in CLEAN)
    print(f"\n{len(records)} cases: {clean} clean ({', '.join(f'{k} {v}' for k, v in counts.most_common())})")
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "records": records}, indent=1))
    return 0 if clean == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
