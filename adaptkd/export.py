"""Export one trained learner of a run — alone — to ONNX or TorchScript, with a parity check.

The exported network is rebuilt from its architecture name and its own ``state_dict`` in the
run's checkpoint, so nothing else a method trained (projectors, attention modules, teachers,
peers) can end up in the file. Before the file is put in place, its outputs are compared with
PyTorch's on random inputs and on real test images: the maximum absolute difference of the
logits is reported, and an export above the tolerance is refused (nothing is written).

ONNX needs the optional extra ``onnx`` (``onnx``, ``onnxscript``; ``onnxruntime`` to run the
check on the runtime deployments use — without it the check runs on ``onnx``'s reference
evaluator). TorchScript needs nothing extra (``torch.jit.trace``; deprecated by PyTorch in favour
of ``torch.export``, but still what C++/LibTorch deployments load).

Library use::

    from adaptkd.export import export_run, export_module
    res = export_run("runs/demo/kd", "onnx")                  # -> runs/demo/kd/export/student.onnx
    res = export_module(my_net, "torchscript", "net.pt", input_shape=(3, 32, 32))
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptkd.engine.rundir import build_arch, checkpoint_path, load_model
from adaptkd.errors import ExportError

__all__ = [
    "ExportError",
    "ExportResult",
    "FORMATS",
    "build_arch",
    "rebuild_network",
    "run_checkpoint_path",
    "export_run",
    "export_module",
    "require_onnx",
]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """What :func:`export_run` / :func:`export_module` wrote and measured."""

    path: str
    format: str
    runtime: str  # what ran the exported file for the check
    input_shape: list[int]
    parity: dict[str, dict[str, float]]  # {"random": {...}, "real": {...}}: max_abs_diff, top1_agreement, n
    tolerance: float
    params: int
    size_bytes: int
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Rebuilding a learner from its run


run_checkpoint_path = checkpoint_path  # the run folder's own names (adaptkd.engine.rundir)
rebuild_network = load_model


#: datasets read from image files, whose test images are resized and centre-cropped by ``data.crop_ratio``
_FILE_DATASETS = ("imagefolder", "hf", "webdataset")


def preprocessing(info: dict[str, Any]) -> dict[str, Any]:
    """How to turn an image file into the exported network's input, as the run's test split was
    prepared: decode, convert to RGB (3 channels) or L (1), resize the shorter side, centre-crop a
    square, scale to [0, 1], normalise per channel, lay out as NCHW float32."""
    size = int(info["image_size"])
    data = (info.get("config") or {}).get("data", {}) or {}
    ratio = float(data.get("crop_ratio", 1.0)) if info.get("dataset") in _FILE_DATASETS else 1.0
    return {
        "color": "RGB" if int(info["in_channels"]) == 3 else "L",
        "channel_order": "RGB" if int(info["in_channels"]) == 3 else "grayscale",
        "resize_shorter_side": max(size, int(round(size / ratio))),
        "center_crop": [size, size],
        "interpolation": "bilinear (antialiased, as Pillow's Image.resize)",
        "scale": 1 / 255,
        "mean": list(info["mean"]),
        "std": list(info["std"]),
        "layout": "NCHW",
        "dtype": "float32",
        "input_size": [size, size],
    }


def real_test_inputs(config: dict[str, Any], n: int = 64, *, mean: list[float] | None = None,
                     std: list[float] | None = None) -> tuple[torch.Tensor | None, str]:
    """Up to ``n`` normalised test images of the run's dataset, or ``(None, why not)``.

    Only those ``n`` images are decoded: a dataset read from image files is streamed
    (``cache: none``), and with the run's ``mean``/``std`` given no statistics pass runs."""
    from adaptkd.data import Augment, DataError, test_pipeline

    config = copy.deepcopy(config)
    data = config.setdefault("data", {})
    if data.get("name") in _FILE_DATASETS:
        data.update(cache="none", val_size=0)
        if mean and std:
            data.update(mean=list(mean), std=list(std))
    try:
        pipe = test_pipeline(config, workers=0)
        x = next(iter(pipe.test_batches(n)))[0]
    except (DataError, OSError, ValueError) as exc:
        return None, f"test data not available ({str(exc).splitlines()[0]})"
    aug = Augment(pipe.mean, pipe.std, train=False)
    with torch.no_grad():
        return aug(x).float(), f"{x.shape[0]} test images of {pipe.name}"


# ----------------------------------------------------------------------------------------------
# Optional extras


def require_onnx(*, runtime: bool = False) -> None:
    """Raise :class:`MissingExtraError` (one line, naming the extra) when the ONNX packages are missing."""
    from adaptkd.engine.networks import MissingExtraError

    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if runtime else [])
    missing = []
    for mod in needed:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - ImportError or a broken compiled extension
            missing.append(mod)
    if missing:
        raise MissingExtraError(
            f"ONNX export needs {', '.join(needed)}; not importable here: {', '.join(missing)}; "
            "install the extra: pip install 'adaptkd[onnx]'"
        )


def _has(mod: str) -> bool:
    try:
        importlib.import_module(mod)
        return True
    except Exception:  # noqa: BLE001
        return False


@contextmanager
def _quiet_exporter():
    """Silence the exporter's informational logging and deprecation chatter (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


# ----------------------------------------------------------------------------------------------
# Exporters: each writes ``tmp`` and returns a callable running the written file on a CPU tensor


def _export_torchscript(model: nn.Module, example: torch.Tensor, tmp: Path):
    with _quiet_exporter(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu")
    loaded.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x).float()

    return run, "torch.jit.load"


def _export_onnx(model: nn.Module, example: torch.Tensor, tmp: Path, opset: int | None):
    require_onnx()
    import onnx

    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1_500_000_000  # protobuf's 2 GB limit
    kwargs: dict[str, Any] = {"dynamo": True, "dynamic_shapes": ({0: torch.export.Dim("batch")},),
                              "input_names": ["input"], "output_names": ["logits"], "verbose": False,
                              "external_data": big}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        with _quiet_exporter():
            torch.onnx.export(model, (example,), str(tmp), **kwargs)
    except Exception as exc:  # noqa: BLE001 - the exporter's own failure, shown in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed for this model: {first}") from exc
    onnx.checker.check_model(str(tmp))
    if _has("onnxruntime"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(tmp), opts, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(sess.run(None, {in_name: x.numpy()})[0]).float()

        return run, f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(onnx.load(str(tmp)))
    in_name = ev.input_names[0]

    def run_ref(x: torch.Tensor) -> torch.Tensor:
        outputs = ev.run(None, {in_name: x.numpy()})  # a list (all outputs): onnx annotates it as a dict
        return torch.from_numpy(outputs[0]).float()  # type: ignore[index]

    return run_ref, "onnx.reference.ReferenceEvaluator (onnxruntime not installed: pip install 'adaptkd[onnx]')"


def _onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """The sidecar's deployment facts also as ONNX ``metadata_props`` (values JSON-encoded)."""
    import onnx

    if any(f.name != path.name for f in path.parent.iterdir()):
        return  # weights in an external file: rewriting the model would have to move them too
    model = onnx.load(str(path))
    keys = ("class_names", "preprocess", "num_classes", "arch", "dataset", "input")
    existing = {p.key for p in model.metadata_props}
    for key in keys:
        if key in metadata and key not in existing:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(metadata[key])
    onnx.save(model, str(path))


def _compare(ref_fn, got_fn, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        ref = ref_fn(x).float()
    got = got_fn(x)
    if got.shape != ref.shape:
        raise ExportError(f"the exported model returns shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
    diff = (got - ref).abs().max().item() if ref.numel() else 0.0
    agree = (got.argmax(1) == ref.argmax(1)).float().mean().item() * 100 if ref.dim() == 2 else float("nan")
    return {"max_abs_diff": diff, "top1_agreement": agree, "n": int(x.shape[0]),
            "max_abs_logit": ref.abs().max().item() if ref.numel() else 0.0}


def _check_out(out: Path) -> None:
    if out.is_symlink():
        raise ExportError(f"{str(out)!r} is a symbolic link; refusing to write through it")
    if out.exists() and out.is_dir():
        raise ExportError(f"{str(out)!r} is a folder; give a file name (e.g. {str(out / 'student.onnx')!r})")


def export_module(
    model: nn.Module,
    format: str,
    out: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...],
    real_inputs: torch.Tensor | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    metadata: dict[str, Any] | None = None,
    seed: int = 0,
) -> ExportResult:
    """Export any ``nn.Module`` (eval mode, CPU, float32) and check parity before writing ``out``.

    ``input_shape`` is one image's shape (C, H, W); the batch dimension stays dynamic for ONNX.
    ``real_inputs``: normalised real images ``[N, C, H, W]`` for the second parity check.
    Raises :class:`ExportError` when the maximum absolute logit difference exceeds ``tolerance``
    (the file is then not written). A JSON sidecar ``<out>.json`` records the check and ``metadata``.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "onnx":
        require_onnx()
    out = Path(os.path.expanduser(str(out)))
    _check_out(out)
    net = copy.deepcopy(model).cpu().float().eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, *input_shape, generator=gen)
    rand = torch.randn(8, *input_shape, generator=gen)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under its final name in a private folder beside ``out``, then moved in place once
    # checked (with an ONNX external-data file, if the model needs one, which keeps its name).
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=str(out.parent)))
    tmp = tmp_dir / out.name
    try:
        if format == "torchscript":
            run, runtime = _export_torchscript(net, example, tmp)
        else:
            run, runtime = _export_onnx(net, example, tmp, opset)
        if format == "onnx" and metadata:
            _onnx_metadata(tmp, metadata)
        parity = {"random": _compare(net, run, rand)}
        notes: list[str] = []
        if real_inputs is not None and real_inputs.numel():
            parity["real"] = _compare(net, run, real_inputs.float().cpu())
        else:
            notes.append("no real inputs given: parity checked on random inputs only")
        worst = max(p["max_abs_diff"] for p in parity.values())
        if not worst <= tolerance:
            detail = ", ".join(f"{k}: {v['max_abs_diff']:.3g}" for k, v in parity.items())
            raise ExportError(f"{format} export differs from PyTorch by more than the tolerance {tolerance:g} "
                              f"(max abs logit difference {detail}); nothing written")
        extra = [f for f in tmp_dir.iterdir() if f.name != out.name]
        for f in extra:
            _check_out(out.parent / f.name)
            os.replace(f, out.parent / f.name)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    res = ExportResult(path=str(out), format=format, runtime=runtime, input_shape=[-1, *map(int, input_shape)],
                       parity=parity, tolerance=tolerance, params=sum(p.numel() for p in net.parameters()),
                       size_bytes=out.stat().st_size + sum((out.parent / f.name).stat().st_size for f in extra),
                       notes=notes + [f"external weights file: {f.name}" for f in extra], metadata=dict(metadata or {}))
    from adaptkd.engine.checkpoint import atomic_write_text

    side = out.with_name(out.name + ".json")
    if side.is_symlink():
        raise ExportError(f"{str(side)!r} is a symbolic link; refusing to write through it")
    atomic_write_text(side, json.dumps(res.to_dict(), indent=2))
    os.chmod(side, 0o644)
    return res


def export_run(
    run: str | os.PathLike[str],
    format: str,
    *,
    learner: str = "student",
    out: str | os.PathLike[str] | None = None,
    which: str = "best",
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    real: int = 64,
) -> ExportResult:
    """Export learner ``learner`` of run ``run`` (default file ``<run>/export/<learner><ext>``).

    The exported model takes images normalised with the run's mean/std (recorded in the sidecar
    JSON with the class count and input shape) and returns logits ``[N, num_classes]``.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "onnx":
        require_onnx()  # before any work
    model, info = rebuild_network(run, learner, which=which)
    if out is None:
        base = Path(os.path.expanduser(str(run)))
        if not base.is_dir():
            base = base.parent
        folder = base / "export"
        if folder.is_symlink():
            raise ExportError(f"{str(folder)!r} is a symbolic link; refusing to write through it")
        out = folder / f"{learner}{FORMATS[format]}"
    x_real, why = (real_test_inputs(info["config"], real, mean=info["mean"], std=info["std"]) if real > 0
                   else (None, "real inputs disabled"))
    shape = (info["in_channels"], info["image_size"], info["image_size"])
    meta = {k: info[k] for k in ("arch", "args", "num_classes", "in_channels", "image_size", "mean", "std",
                                 "dataset", "method", "epoch", "checkpoint")}
    meta["learner"] = learner
    meta["input"] = "float32 images [N, C, H, W], pixel/255 normalised with mean/std"
    meta["class_names"] = info["class_names"]
    meta["preprocess"] = preprocessing(info)
    meta["real_inputs"] = why
    res = export_module(model, format, out, input_shape=shape, real_inputs=x_real, tolerance=tolerance,
                        opset=opset, metadata=meta)
    return res
