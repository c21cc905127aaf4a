"""adaptkd inside your own PyTorch training loop: digits, tiny CNNs, a few seconds on a CPU.

First a teacher is trained with plain cross-entropy, then a smaller student is distilled from it
with any adaptkd method (DTKD by default) through :class:`adaptkd.Distiller`::

    python examples/own_loop.py                       # DTKD
    python examples/own_loop.py --method kd --balance gradient
    python examples/own_loop.py --method switokd      # online: teacher and student learn together
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from adaptkd import Distiller, build_model
from adaptkd.data import Augment, build_data

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--method", default="dtkd")
ap.add_argument("--balance", default=None, help="e.g. gradient")
ap.add_argument("--epochs", type=int, default=5)
args = ap.parse_args()

torch.set_num_threads(1)  # tiny networks: one thread is fastest
torch.manual_seed(0)
data = build_data("digits")  # 8x8 greyscale digits, bundled (no download)
normalise = Augment(data.mean, data.std, train=False)
train = DataLoader(TensorDataset(normalise(data.train.x), data.train.y), batch_size=64, shuffle=True)
x_test, y_test = normalise(data.test.x), data.test.y


def accuracy(model: torch.nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item() * 100
    model.train()
    return acc


# 1. A teacher, trained the usual way (an online method such as switokd trains it with the student instead).
teacher = build_model("cnn_small", data.num_classes, in_channels=1)
if args.method not in ("switokd", "dml"):
    opt = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9)
    for _ in range(args.epochs):
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(teacher(x), y).backward()
            opt.step()
    print(f"teacher accuracy {accuracy(teacher):.1f}%")

# 2. Distil into a smaller student: the whole adaptkd part of the loop is distiller(x, y), backward, step.
student = build_model("cnn_tiny", data.num_classes, in_channels=1)
distiller = Distiller(student, [teacher], args.method, balance=args.balance, example_input=x_test[:4],
                      epochs=args.epochs, steps_per_epoch=len(train))
optimizers = {name: torch.optim.SGD(params, lr=0.05, momentum=0.9)  # one per learner (online methods have two)
              for name, params in distiller.optimizer_groups().items()}
for epoch in range(1, args.epochs + 1):
    for x, y in train:
        out = distiller(x, y)  # out.loss, out.terms, out.weights, out.signals, out.logits
        for opt in optimizers.values():
            opt.zero_grad()
        distiller.backward(out)  # == out.loss.backward() unless the balancer needs more (gradient balancing)
        distiller.step(optimizers, out)  # steps the learners that step now (SwitOKD may pause its teacher)
    signals = {k: round(v, 3) for k, v in distiller.epoch_end().items() if k.endswith("_mean")}  # epoch means
    signals.update({k: round(v.item(), 3) for k, v in out.signals.items() if k.endswith("/lambda")})  # last step
    print(f"epoch {epoch}: loss {out.loss.item():.3f}, student accuracy {accuracy(student):.1f}%, {signals}")
