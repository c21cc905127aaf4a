"""Checkpoints: written atomically, read with ``weights_only=True`` only.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (nothing that needs
code to unpickle). The format written by the engine::

    {"format": "adaptkd/1", "epoch": int, "global_step": int,
     "meta": {"arch": {net: arch}, "args": {net: {...}}, "num_classes": int, "method": str, ...},
     "models": {learner: state_dict}, "method": state_dict, "balancer": state_dict,
     "optims": {learner: state_dict}, "scaler": state_dict | None, "rng": {...},
     "best_acc": float, "config": {...}}
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from adaptkd.errors import CheckpointError, RunFolderError

__all__ = ["CheckpointError", "FORMAT", "atomic_save", "load_checkpoint", "load_state_dict_for", "atomic_write_text"]

FORMAT = "adaptkd/1"
#: a checkpoint (a zip of stored, uncompressed tensors) may expand to at most this much more than its file
EXPANSION_SLACK = 64 * 2**20


def _check_expansion(p: Path) -> None:
    """Refuse a zip checkpoint whose entries would decompress to far more than the file's size
    (a deflate bomb) — read from the zip directory, before anything is decompressed."""
    if not zipfile.is_zipfile(p):
        return  # the legacy format: a plain pickle, nothing compressed
    try:
        with zipfile.ZipFile(p) as zf:
            total = sum(max(info.file_size, 0) for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load reports the damage
    size = p.stat().st_size
    if total > 2 * size + EXPANSION_SLACK:
        raise CheckpointError(f"checkpoint {str(p)!r} would expand from {size:,} to {total:,} bytes when read "
                              "(compressed entries; adaptkd writes them uncompressed); refusing to read it")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a partial file.
    """
    _atomic_write(path, "wb", lambda fh: torch.save(obj, fh))


def _atomic_write(path: str | os.PathLike[str], mode: str, write: Callable[[IO[Any]], object]) -> None:
    """``write`` into a temporary file in ``path``'s folder, fsync, rename over ``path``, fsync the folder;
    a failed write (disk full, quota, permissions) raises one :class:`RunFolderError` line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as exc:
        raise _write_failed(path, exc) from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) or isinstance(exc.__cause__, OSError) or "No space left" in str(exc):
            raise _write_failed(path, exc) from None
        raise


def _write_failed(path: Path, exc: BaseException) -> RunFolderError:
    """One line for a write that failed (disk full, quota, permissions); the old file is intact."""
    os_err = exc if isinstance(exc, OSError) else exc.__cause__ if isinstance(exc.__cause__, OSError) else None
    reason = (os_err.strerror or str(os_err)) if os_err is not None else str(exc).splitlines()[0][:200]
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    return RunFolderError(f"cannot write {str(path)!r}: {reason}; {kept} (free some space, then resume with --resume)")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically (temp file + rename)."""
    _atomic_write(path, "w", lambda fh: fh.write(text))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); clear errors for every failure."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(p)!r} is empty (0 bytes)")
    _check_expansion(p)
    try:
        obj = torch.load(str(p), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear message
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        # torch's weights-only refusal starts with a generic paragraph; the line that matters
        # names the global it refused ("... GLOBAL os.system ...") or the bad pickle opcode.
        specific = [ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln]
        if specific:
            raise CheckpointError(
                f"checkpoint {str(p)!r} contains objects that need code to load; adaptkd loads "
                f"weights only (torch.load(weights_only=True)) and refuses it: {specific[0]}"
            ) from None
        text = next((ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue"))), "")
        for i, ln in enumerate(lines):
            if "WeightsUnpickler error:" in ln:  # the reason is on this line or the next
                text = ln.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
                break
        text = f"{type(exc).__name__}: {text.split('. ')[0].rstrip('.')}"[:200]  # its first sentence
        raise CheckpointError(f"checkpoint {str(p)!r} is corrupt or truncated and cannot be read: {text}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(p)!r}: expected a dict, got {type(obj).__name__}")
    return obj


def load_state_dict_for(
    path: str | os.PathLike[str],
    *,
    arch: str,
    num_classes: int,
    key: str = "student",
) -> dict[str, torch.Tensor]:
    """The model weights in ``path`` for a network of ``arch`` with ``num_classes`` classes.

    Accepts an adaptkd checkpoint (the ``key`` learner's weights; architecture and class count
    are checked against its metadata) or a plain ``state_dict``. Raises CheckpointError naming the
    file and the mismatch.
    """
    ckpt = load_checkpoint(path)
    if ckpt.get("format") == FORMAT:
        meta = ckpt.get("meta", {})
        models = ckpt.get("models", {})
        if key not in models:
            raise CheckpointError(f"checkpoint {str(path)!r} holds networks {sorted(models)}, not {key!r}")
        ck_arch = meta.get("arch", {}).get(key)
        if ck_arch is not None and ck_arch != arch:
            raise CheckpointError(f"checkpoint {str(path)!r} is a {ck_arch!r} network, but the "
                                  f"config asks for {arch!r}")
        ck_classes = meta.get("num_classes")
        if ck_classes is not None and int(ck_classes) != int(num_classes):
            raise CheckpointError(
                f"checkpoint {str(path)!r} was trained for {ck_classes} classes, but the data has {num_classes}"
            )
        return models[key]
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    for k in ("state_dict", "model"):
        if isinstance(ckpt.get(k), dict):
            return ckpt[k]
    raise CheckpointError(f"checkpoint {str(path)!r} is neither an adaptkd checkpoint nor a state_dict "
                          f"(keys: {sorted(ckpt)[:8]})")


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str, arch: str) -> None:
    """``load_state_dict`` (strict) with the mismatch explained in one message."""
    adapt = getattr(model, "adapt_state", None)  # ecosystem adapters also take their library model's keys
    if callable(adapt):
        state = adapt(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    not_tensors = [k for k in own if k in state and not isinstance(state[k], torch.Tensor)]
    wrong = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    # a float weight must come as a real float (int/bool would truncate, complex drop a part); an
    # integer buffer (BatchNorm's step count) as an integer. Lower float precision is accepted.
    kinds = [
        f"{k}: {state[k].dtype} where {v.dtype} is expected"
        for k, v in own.items()
        if k in state and isinstance(state[k], torch.Tensor)
        and (state[k].is_floating_point() != v.is_floating_point() or state[k].is_complex() != v.is_complex())
    ]
    if not_tensors:
        raise CheckpointError(f"checkpoint {source!r}: entries {not_tensors[:3]} are not tensors")
    if kinds:
        raise CheckpointError(f"checkpoint {source!r} does not fit model {arch!r}: {len(kinds)} tensor(s) of the wrong "
                              f"kind of number (e.g. {kinds[:2]})")
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:2]})")
        raise CheckpointError(f"checkpoint {source!r} does not fit model {arch!r}: " + "; ".join(parts))
    # NaN anywhere, or ±inf in a parameter, is never a usable weight: refuse it here rather than
    # stop at the first training step with non-finite outputs.
    params = {k for k, _ in model.named_parameters()}
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            bad = torch.isnan(v) if k not in params else ~torch.isfinite(v)
            if bool(bad.any()):
                raise CheckpointError(
                    f"checkpoint {source!r}: tensor {k!r} holds {int(bad.sum())} non-finite value(s) (NaN/Inf); "
                    "the weights are unusable (was the run that wrote it diverging?)"
                )
    model.load_state_dict(state, strict=True)
