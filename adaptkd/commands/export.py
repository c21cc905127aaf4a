"""``adaptkd export RUN --format onnx|torchscript`` — one learner of a run, alone, for deployment.

The learner is rebuilt from its architecture and its own state_dict (no projectors, attention
modules, teachers or peers), exported, and its outputs compared with PyTorch's on random and
real test inputs; above the tolerance nothing is written and the command fails. ONNX needs the
extra ``onnx`` (pip install 'adaptkd[onnx]'); the check runs on onnxruntime when installed.
A JSON sidecar ``<file>.json`` records input shape, normalisation, class count and the check.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    from adaptkd.export import DEFAULT_TOLERANCE

    p = sub.add_parser("export", help="export a run's student (alone) to ONNX or TorchScript with a parity check",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (or its .pt checkpoint)")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--learner", default="student", help="which learner (default student; online runs: peer0, ...)")
    p.add_argument("--out", help="output file (default <run>/export/<learner>.onnx or .torchscript.pt)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint (default best)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"largest max-abs logit difference accepted (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--real", type=int, default=64,
                   help="number of real test images for the check (default 64; 0: none)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from adaptkd.export import export_run

    res = export_run(args.run, args.format, learner=args.learner, out=args.out, which=args.which,
                     tolerance=args.tolerance, opset=args.opset, real=args.real)
    print(f"exported {args.learner} ({res.metadata.get('arch')}, {res.params:,} parameters) to {res.path} "
          f"({res.size_bytes / 1024:.1f} KB, {res.format})")
    for name, p in res.parity.items():
        print(f"  parity on {p['n']} {name} inputs vs PyTorch: max abs logit difference {p['max_abs_diff']:.3g} "
              f"(tolerance {res.tolerance:g}), same top-1 on {p['top1_agreement']:.1f}%")
    print(f"  checked with {res.runtime}")
    for n in res.notes:
        print(f"  note: {n}")
    print(f"  input: float32 [N, {', '.join(str(d) for d in res.input_shape[1:])}] normalised with mean "
          f"{[round(m, 4) for m in res.metadata.get('mean', [])]} std "
          f"{[round(s, 4) for s in res.metadata.get('std', [])]}; "
          f"details in {res.path}.json")
    return 0
