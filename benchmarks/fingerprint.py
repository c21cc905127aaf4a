"""Fingerprint of every registered method: proof that a refactoring changed no number.

For each registered method, a 2-epoch digits run on CPU (fixed seed, one thread, tiny networks and
the method's example options) is trained; the fingerprint holds its final summary, the last
``metrics.jsonl`` record and every record, without wall-clock and throughput fields. The golden/parity tests
(float64 references of the authors' arithmetic, ONNX export parity) are run too and their outcome
recorded per test. Two fingerprints taken before and after a change must be identical::

    python benchmarks/fingerprint.py --out before.json          # about a minute on one core
    python benchmarks/fingerprint.py --out after.json
    python benchmarks/fingerprint.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: pytest selection of the golden/parity tests (float64 references and export parity)
GOLDEN = ["tests/test_losses_logits.py", "tests/test_dtkd.py", "tests/test_switokd.py", "tests/test_unic.py",
          "tests/test_features.py", "tests/test_export.py", "-k", "reference or parity or golden"]


def _timing(key: str) -> bool:
    """Fields that measure wall-clock time or throughput (legitimately different between runs)."""
    return key.startswith("time/") or key.endswith("per_s") or "latency" in key


def _clean(obj: Any) -> Any:
    """Drop timing fields (recursively); NaN/Inf written as strings so that JSON compares them."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not _timing(str(k))}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    return obj


def method_runs(work: Path) -> dict[str, Any]:
    """{method: {"summary", "last_metrics", "metrics" (every record)}} for every registered method."""
    import torch

    torch.set_num_threads(1)
    from adaptkd.engine.logger import read_metrics
    from adaptkd.engine.trainer import Trainer
    from adaptkd.methods import list_methods
    from tests.conftest import tiny_config
    from tests.test_determinism import method_config

    quiet = {"log": lambda s: None}
    teacher = tiny_config(work / "teacher", "ce")
    teacher["student"] = {"arch": "cnn_small"}
    teacher["run"]["max_steps_per_epoch"] = 20
    Trainer(teacher, **quiet).fit()
    ckpt = str(work / "teacher" / "best.pt")
    out: dict[str, Any] = {}
    for method in list_methods():
        run = work / method
        summary = Trainer(method_config(method, run, ckpt, epochs=2, steps=4), **quiet).fit()
        records = read_metrics(run / "metrics.jsonl")
        out[method] = {"summary": _clean(summary), "last_metrics": _clean(records[-1]), "metrics": _clean(records)}
    return out


def golden_tests(work: Path) -> dict[str, str]:
    """{test id: outcome} of the golden/parity tests."""
    xml = work / "golden.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *GOLDEN]
    subprocess.run(cmd, cwd=REPO, check=False, capture_output=True)
    res: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        res[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return res


def _drop(obj: Any, ignore: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _drop(v, ignore) for k, v in obj.items() if k not in ignore}
    if isinstance(obj, list):
        return [_drop(v, ignore) for v in obj]
    return obj


def compare(a: Path, b: Path, ignore: list[str] | None = None) -> int:
    """0 when the fingerprints are identical; otherwise print each difference and return 1.

    ``ignore``: field names left out of both sides wherever they occur (fields another change
    added, removed or redefined on purpose); the comparison states them.
    """
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    if ignore:
        print(f"ignoring the fields {', '.join(ignore)}")
        x, y = _drop(x, set(ignore)), _drop(y, set(ignore))
    diffs: list[str] = []

    def walk(u: Any, v: Any, where: str) -> None:
        if isinstance(u, dict) and isinstance(v, dict):
            for k in sorted(set(u) | set(v)):
                if k not in u or k not in v:
                    diffs.append(f"{where}.{k}: only in {'after' if k not in u else 'before'}")
                else:
                    walk(u[k], v[k], f"{where}.{k}")
        elif isinstance(u, list) and isinstance(v, list) and len(u) == len(v):
            for i, (p, q) in enumerate(zip(u, v)):
                walk(p, q, f"{where}[{i}]")
        elif u != v:
            diffs.append(f"{where}: {u!r} != {v!r}")

    walk(x, y, "")
    for d in diffs:
        print(d)
    print("identical" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the fingerprint JSON here (default: print it)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--no-golden", action="store_true", help="skip the golden/parity tests")
    ap.add_argument("--ignore", nargs="*", default=[], metavar="FIELD",
                    help="with --compare: field names to leave out on both sides")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare, ignore=args.ignore)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp: dict[str, Any] = {"methods": method_runs(work)}
        if not args.no_golden:
            fp["golden"] = golden_tests(work)
    text = json.dumps(fp, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
