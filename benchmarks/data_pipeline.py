"""Data pipeline benchmarks (benchmarks/data.md): throughput, hiding behind compute, memory, start-up.

Writes its images under a scratch folder (default /tmp/adaptkd_data_bench; never the repository):

    python benchmarks/data_pipeline.py make --n 20000            # ImageNet-like JPEGs, ~500x375, quality 90
    python benchmarks/data_pipeline.py throughput --n 512        # images/s: plain Pillow loop vs 0, 1, 2 workers
    python benchmarks/data_pipeline.py epoch --size 64           # epoch time / sum of step times, 2 workers
    python benchmarks/data_pipeline.py memory --n 5000           # peak RSS (main + workers) while training
    python benchmarks/data_pipeline.py first-step --n 100000     # time to the first step on tiny files

Each prints one JSON line. Ratios are meant to be compared within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCRATCH = Path(os.environ.get("ADAPTKD_BENCH_DIR", "/tmp/adaptkd_data_bench"))
POOL = 1000


def make(n: int, classes: int = 100, val: int = 500, folder: Path | None = None, tiny: bool = False) -> Path:
    """``n`` train + ``val`` validation JPEGs in ``classes`` folders: ~500x375 photos-like (smooth
    colour fields plus noise, quality 90; 1,000 distinct ones hard-linked in turn), or distinct 8x8
    ones when ``tiny``. Existing files are kept."""
    import numpy as np
    from PIL import Image

    root = folder or SCRATCH / (f"tiny{n}" if tiny else f"photos{n}")
    pool = SCRATCH / "pool"  # photos are generated once and hard-linked into each folder
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", val)):
        for i in range(count):
            c = i % classes
            path = root / split / f"c{c:03d}" / f"{i:06d}.jpg"
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if not tiny:  # 1,000 distinct photos per split, repeated (decode work per image is what counts)
                src = pool / split / f"{i % POOL:06d}.jpg"
                if not src.exists():
                    src.parent.mkdir(parents=True, exist_ok=True)
                    _photo(rng, i).save(src, "JPEG", quality=90)
                os.link(src, path)
                continue
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)
    return root


def _photo(rng, i: int):
    """A ~500x375 (or 375x500) photo-like image: a smooth colour field plus fine noise."""
    import numpy as np
    from PIL import Image

    w, h = (500, 375) if i % 3 else (375, 500)
    base = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _data_cfg(root: Path, size: int, workers: int, **over):
    from adaptkd.config import DataConfig

    return DataConfig.model_validate({"name": "imagefolder", "root": str(root), "image_size": size,
                                      "augment": "imagenet", "workers": workers, "mean": [0.5] * 3,
                                      "std": [0.25] * 3, **over})


def throughput(n: int, batch: int = 64, size: int = 224) -> dict:
    """images/s for decode + random-resized crop to ``size`` + collate: a plain Pillow loop in this
    process (the same crop parameters and antialiased bilinear resize, no JPEG draft), and the
    pipeline with 0, 1, 2 workers (first batch excluded: worker start-up)."""
    import numpy as np
    import torch
    from PIL import Image

    from adaptkd.data import build_pipeline, random_resized_crop_box

    root = make(n)
    files = sorted(str(p) for p in (root / "train").rglob("*.jpg"))[:n]

    t0, c0 = time.perf_counter(), _cpu_tree_s(os.getpid())
    out = []
    for i, f in enumerate(files):
        with Image.open(f) as img:
            img = img.convert("RGB")
            left, top, w, h = random_resized_crop_box(*img.size, random.Random(i))
            img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
            out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
            if len(out) == batch:
                torch.stack(out)
                out = []
    res = {"images": n, "size": size, "plain_pillow_per_s": round(n / (time.perf_counter() - t0), 1),
           "plain_pillow_per_cpu_s": round(n / (_cpu_tree_s(os.getpid()) - c0), 1)}
    for workers in (0, 1, 2):
        pipe, _ = build_pipeline(_data_cfg(root, size, workers, train_size=n))
        it = pipe.train_batches(1, batch_size=batch, seed=0, drop_last=False)
        first = next(it)[0].shape[0]
        t0, c0 = time.perf_counter(), _cpu_tree_s(os.getpid())
        done = sum(x.shape[0] for x, _ in it)
        res[f"workers{workers}_per_s"] = round(done / (time.perf_counter() - t0), 1)
        res[f"workers{workers}_per_cpu_s"] = round(done / (_cpu_tree_s(os.getpid()) - c0), 1)
        pipe.close()
        assert first + done == n
    return res


def _cpu_tree_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live child processes (/proc):
    images per CPU-second compare fairly on a machine shared with other work."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        pids += [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _trainer(root: Path, size: int, workers: int, steps: int | None, out: Path, student: str = "cnn_small",
             **data):
    from adaptkd.engine.trainer import Trainer

    cfg = {"data": {**_data_cfg(root, size, workers).model_dump(), "batch_size": 64, **data},
           "student": {"arch": student}, "method": {"name": "ce"},
           "optim": {"name": "sgd", "lr": 0.05, "epochs": 1, "schedule": "constant", "milestones": []},
           "run": {"out": str(out), "progress": False, "latency": False, "tensorboard": False, "log_every": 10**6,
                   "max_steps_per_epoch": steps, "overwrite": True}}
    return Trainer(cfg, log=lambda s: None)


def epoch(n: int, size: int, workers: int = 2, steps: int = 40, student: str = "cnn_small") -> dict:
    """One training epoch of ``steps`` steps (batch 64, ``student``): epoch time against the sum of the
    step times (compute only: from the batch in hand to the optimiser step)."""
    import torch

    root = make(n)
    with tempfile.TemporaryDirectory() as tmp:
        tr = _trainer(root, size, workers, steps, Path(tmp), student=student)
        step_times = []
        orig = tr.train_step

        def timed(*a, **k):
            t = time.perf_counter()
            r = orig(*a, **k)
            step_times.append(time.perf_counter() - t)
            return r

        tr.train_step = timed
        t0 = time.perf_counter()
        tr.train_epoch(1)
        total = time.perf_counter() - t0
        tr.pipe.close()
    return {"size": size, "workers": workers, "student": student, "steps": len(step_times),
            "threads": torch.get_num_threads(),
            "epoch_s": round(total, 2), "sum_step_s": round(sum(step_times), 2),
            "ratio": round(total / sum(step_times), 3)}


def _rss_tree_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its children (kB), from /proc."""
    total = 0
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def memory(n: int, size: int = 224, workers: int = 2, steps: int = 30, student: str = "cnn_small") -> dict:
    """Peak resident memory (this process + its worker processes, sampled every 20 ms) while
    indexing ``n`` images and training ``steps`` steps at ``size`` px with ``workers`` workers."""
    root = make(n)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_tree_kb(os.getpid()))
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    with tempfile.TemporaryDirectory() as tmp:
        tr = _trainer(root, size, workers, steps, Path(tmp), student=student, test_size=256)
        tr.train_epoch(1)
        tr.pipe.close()
    stop.set()
    th.join()
    return {"images": n, "size": size, "workers": workers, "student": student, "steps": steps,
            "peak_rss_mb": round(peak[0] / 1024, 1)}


def first_step(n: int, workers: int = 2) -> dict:
    """Seconds from nothing to the first training step on ``n`` tiny files (indexing, the header
    probe, the first batch through the workers)."""
    root = make(n, classes=1000, val=1000, tiny=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tr = _trainer(root, 32, workers, 1, Path(tmp), student="cnn_tiny")
        built = time.perf_counter() - t0
        tr.train_epoch(1)
        total = time.perf_counter() - t0
        tr.pipe.close()
    return {"files": n, "workers": workers, "build_s": round(built, 2), "first_step_s": round(total, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["make", "throughput", "epoch", "memory", "first-step"])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--student", default="cnn_small")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    if a.what == "make":
        print(json.dumps({"made": str(make(a.n))}))
    elif a.what == "throughput":
        print(json.dumps(throughput(a.n, size=a.size)))
    elif a.what == "epoch":
        print(json.dumps(epoch(a.n, a.size, a.workers, a.steps, a.student)))
    elif a.what == "memory":
        print(json.dumps(memory(a.n, a.size, a.workers, a.steps, a.student)))
    else:
        print(json.dumps(first_step(a.n, a.workers)))


if __name__ == "__main__":
    main()
