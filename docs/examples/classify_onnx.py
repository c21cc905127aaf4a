"""Classify an image file with a model exported by ``adaptkd export --format onnx`` — with
onnxruntime, numpy and Pillow only (no adaptkd, no torch): everything the model needs is in the
sidecar ``<model>.onnx.json`` written beside it (the same facts are in the ONNX file's metadata).

    python classify_onnx.py runs/kd/export/student.onnx cat.png [--top 3]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image


def preprocess(path: str, spec: dict) -> np.ndarray:
    """The image as the network's input ``[1, C, H, W]`` float32, prepared as its test split was."""
    img = Image.open(path).convert(spec["color"])
    w, h = img.size
    short = spec["resize_shorter_side"]
    scale = short / min(w, h)
    rw, rh = max(short, round(w * scale)), max(short, round(h * scale))
    img = img.resize((rw, rh), Image.BILINEAR)
    ch, cw = spec["center_crop"]
    left, top = (rw - cw) // 2, (rh - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    x = np.asarray(img, dtype=np.float32) * spec["scale"]
    x = x[:, :, None] if x.ndim == 2 else x  # H, W, C
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def main() -> None:
    parser = argparse.ArgumentParser(description="classify an image with an exported adaptkd model")
    parser.add_argument("model", help="the .onnx file (its .onnx.json sidecar must be beside it)")
    parser.add_argument("image", help="an image file Pillow can open")
    parser.add_argument("--top", type=int, default=1)
    args = parser.parse_args()
    with open(args.model + ".json", encoding="utf-8") as f:
        meta = json.load(f)["metadata"]
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    x = preprocess(args.image, meta["preprocess"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for i in np.argsort(-probs)[: args.top]:
        print(f"{meta['class_names'][i]}\t{probs[i]:.4f}")


if __name__ == "__main__":
    main()
