"""adaptkd with PyTorch Lightning: digits, tiny CNNs, a few seconds on a CPU.

A teacher is trained briefly with cross-entropy (Lightning too: ``method="ce"`` needs no teacher),
then a student is distilled from it with :class:`adaptkd.lightning.DistillationModule`; every loss
term and adaptive signal goes to Lightning's logger (CSV here)::

    pip install 'adaptkd[lightning]'
    python examples/lightning.py                  # DTKD
    python examples/lightning.py --method switokd # online: manual optimisation, one optimiser per learner
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

# This file is called lightning.py: keep its folder off the import path so `lightning` is the package.
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from adaptkd import Distiller, build_model  # noqa: E402
from adaptkd.data import Augment, build_data  # noqa: E402
from adaptkd.lightning import DistillationModule  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--method", default="dtkd")
ap.add_argument("--epochs", type=int, default=5)
args = ap.parse_args()

torch.set_num_threads(1)
pl.seed_everything(0, verbose=False)
data = build_data("digits")
normalise = Augment(data.mean, data.std, train=False)
train = DataLoader(TensorDataset(normalise(data.train.x), data.train.y), batch_size=64, shuffle=True)
val = DataLoader(TensorDataset(normalise(data.test.x), data.test.y), batch_size=256)
optim = {"name": "sgd", "lr": 0.05, "epochs": args.epochs, "schedule": "cosine"}  # adaptkd's optim config
logs = tempfile.mkdtemp(prefix="adaptkd-lightning-")


def fit(module: DistillationModule) -> float:
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False, logger=pl.loggers.CSVLogger(logs), enable_checkpointing=False)
    trainer.fit(module, train, val)
    return float(trainer.callback_metrics["val/acc"])


teacher = build_model("cnn_small", data.num_classes, in_channels=1)
if args.method not in ("switokd", "dml"):  # offline methods need a trained teacher
    print(f"teacher accuracy {fit(DistillationModule(Distiller(teacher, [], 'ce'), optim)):.1f}%")
student = build_model("cnn_tiny", data.num_classes, in_channels=1)
distiller = Distiller(student, [teacher], args.method, example_input=normalise(data.test.x[:4]),
                      epochs=args.epochs, steps_per_epoch=len(train))
print(f"student accuracy ({args.method}) {fit(DistillationModule(distiller, optim)):.1f}%; logs in {logs}")
