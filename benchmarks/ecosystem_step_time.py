"""Step time of a Hugging Face teacher distilled into a small CNN, against its floor, on CPU.

Teacher: a ViT-tiny-sized ``transformers`` ViT (width 192, 12 layers, 3 heads, MLP 768; random
weights, speed only) saved to a temporary folder with an image-processor config asking for
``--teacher-size`` pixels and ImageNet mean/std, loaded as ``hf:<folder>``. Student: ``--student``
(zoo) on synthetic ``--image-size`` images. So every engine step also converts the student's view to
the teacher's spec (bilinear resize + renormalisation, once per step).

* ``floor``: what any such step must pay, written by hand: augmentation, the raw transformers model's
  forward under ``no_grad`` on an input already at its size and normalisation (prepared outside the
  timed region), the student's forward, cross-entropy, backward and SGD step.
* ``kd`` / ``ce``: ``Trainer.train_step`` of the engine with the ``hf:`` teacher (adapter, taps,
  input view, method, balancer, finite checks).
* ``view``: the input view alone (student batch -> teacher batch).

The variants take turns, the order rotating every round; medians of process CPU time (one thread:
the step's own compute, robust to other jobs) and wall time are printed as a Markdown table.

    python benchmarks/ecosystem_step_time.py                 # 32 px data, teacher 64 px, batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _harness import step_config, timed  # noqa: E402  (puts the repository root on sys.path)

from adaptkd.engine.trainer import Trainer  # noqa: E402
from adaptkd.models import build_model  # noqa: E402


def save_teacher(folder: Path, args: argparse.Namespace) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                    image_size=args.teacher_size, patch_size=args.patch, num_labels=args.classes)
    ViTForImageClassification(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "size": {"height": args.teacher_size, "width": args.teacher_size},
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--teacher-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="adaptkd-eco-"))
    save_teacher(tmp / "teacher", args)
    teacher = {"arch": f"hf:{tmp / 'teacher'}"}
    engines = {m: Trainer(step_config(args, str(tmp / m), method={"name": m}, student={"arch": args.student},
                                      teachers=[teacher]), log=lambda s: None) for m in ("kd", "ce")}
    tr = engines["kd"]
    xb, yb = tr.data.train.x[: args.batch], tr.data.train.y[: args.batch]
    dev = tr.device
    raw = tr.networks["teacher0"].model  # the transformers model itself, same weights
    view = tr.teacher_inputs.views["teacher0"]
    student = build_model(args.student, tr.num_classes).to(dev)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator(device=dev).manual_seed(0)
    x_teacher = view(tr.train_aug(xb.to(dev), gen)).detach()  # prepared outside the timed floor
    y = yb.to(dev)

    def floor() -> None:
        x = tr.train_aug(xb.to(dev), gen)
        with torch.no_grad():
            _ = raw(pixel_values=x_teacher).logits
        loss = F.cross_entropy(student(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    x_student = tr.train_aug(xb.to(dev), gen)

    def view_only() -> None:
        with torch.no_grad():
            view(x_student)

    fns = {"floor": floor, "view": view_only,
           **{m: (lambda e=e: e.train_step(xb, yb, 1, 0.0)) for m, e in engines.items()}}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(args.warmup + args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t = timed(fns[k])
            if r >= args.warmup:
                times[k].append(t)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    base = med["floor"][1]
    print(f"teacher ViT-tiny-sized hf: ({tr.teacher_inputs.specs['teacher0'].describe()}), student {args.student} "
          f"on {args.image_size}px, batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds, "
          f"torch {torch.__version__}")
    print("\n| step | CPU ms (median) | wall ms (median) | CPU / floor |\n|---|---:|---:|---:|")
    for k in ("floor", "kd", "ce", "view"):
        w, c = med[k]
        print(f"| {k} | {c * 1e3:.1f} | {w * 1e3:.1f} | {c / base:.3f} |")


if __name__ == "__main__":
    main()
