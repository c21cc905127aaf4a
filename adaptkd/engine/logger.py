"""Run logging: ``metrics.jsonl`` (one JSON object per line), TensorBoard when installed, progress."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import IO, Any

__all__ = ["MetricsLog", "read_metrics", "to_jsonable"]


def to_jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    return v


class MetricsLog:
    """Append-only ``metrics.jsonl``; each record is flushed and fsynced at epoch boundaries.

    On resume, :meth:`truncate_after` drops the records of epochs after the checkpoint's, so the
    file never holds duplicated or half-written epochs.
    """

    def __init__(self, path: Path, *, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = path
        self.enabled = enabled
        self._fh: IO[str] | None = None
        self._tb: Any = None  # a TensorBoard SummaryWriter once opened
        # The TensorBoard writer is created at the first record, so a run refused while it
        # starts (a bad resume checkpoint) leaves no event file behind.
        self._tb_wanted = enabled and tensorboard

    def _open_tb(self) -> None:
        self._tb_wanted = False
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path.parent / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard is an optional extra
            self._tb = None

    def check_resumable(self, epoch: int) -> None:
        """Refuse (by file and line) a history that resuming at ``epoch`` cannot continue exactly:
        an unreadable line, a torn line anywhere but at the end (a crash tears only the last
        one), or a missing epoch record among epochs 1..``epoch``. Reads only."""
        if not self.enabled:
            return
        from adaptkd.errors import RunFolderError

        where = repr(str(self.path))
        if not self.path.exists():
            if epoch > 0:
                raise RunFolderError(f"cannot resume: {where} is missing, but last.pt is at epoch {epoch}; "
                                     "the run's history would be lost")
            return
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise RunFolderError(f"cannot resume: {where} is not UTF-8 text (byte {exc.start}); it was damaged "
                                 "or replaced") from None
        seen: set[int] = set()
        for i, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not a record")
                rec_epoch = int(rec.get("epoch", 0))
            except (ValueError, TypeError):
                if i == len(lines):
                    continue  # the last line torn by a crash: dropped on resume
                raise RunFolderError(f"cannot resume: {where} line {i} of {len(lines)} is not a JSON record (torn or "
                                     "edited in the middle of the history); repair or remove that line") from None
            if rec.get("kind") == "epoch":
                seen.add(rec_epoch)
        missing = [e for e in range(1, epoch + 1) if e not in seen]
        if missing:
            raise RunFolderError(f"cannot resume: {where} has no record of epoch(s) {missing[:5]} although last.pt "
                                 f"is at epoch {epoch}; it does not belong to this checkpoint")

    def truncate_after(self, epoch: int, step: int | None = None) -> None:
        """Keep only records with epoch ≤ ``epoch`` (and drop a torn last line); with ``step`` (a
        checkpoint written inside epoch ``epoch + 1``) also that epoch's step records up to ``step``."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            e = int(rec.get("epoch", 0))
            if e <= epoch or (step is not None and e == epoch + 1 and rec.get("kind") == "step"
                              and int(rec.get("step", 0)) <= step):
                keep.append(line)
        from adaptkd.engine.checkpoint import atomic_write_text

        # temp file with a fresh random name (O_EXCL) + rename: never writes through a planted link
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any], *, sync: bool = False) -> None:
        if not self.enabled:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlink planted at metrics.jsonl is refused, not written through.
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as exc:
                if not self.path.is_symlink():
                    raise
                from adaptkd.errors import RunFolderError

                raise RunFolderError(f"{str(self.path)!r} is a symbolic link planted in the run folder; "
                                     "refusing to write through it") from exc
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        if sync:  # at each epoch: the file written is still the one at metrics.jsonl (no link planted since)
            try:
                same = os.path.samestat(os.fstat(self._fh.fileno()), os.lstat(self.path))
            except OSError:
                same = False
            if not same:
                from adaptkd.errors import RunFolderError

                raise RunFolderError(f"{str(self.path)!r} was replaced during the run (removed, or a symbolic link "
                                     "planted); refusing to go on writing the run's history")
        try:
            self._fh.write(json.dumps(to_jsonable(record), sort_keys=False) + "\n")
            self._fh.flush()
            if sync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            from adaptkd.errors import RunFolderError

            raise RunFolderError(f"cannot write {str(self.path)!r}: {exc.strerror or exc}; the records written "
                                 "before are intact (free some space, then resume with --resume)") from None
        if self._tb_wanted:
            self._open_tb()
        if self._tb is not None:
            step = int(record.get("step", record.get("epoch", 0)))
            prefix = "epoch/" if record.get("kind") == "epoch" else "step/"
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self._tb.add_scalar(prefix + k, v, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (torn lines skipped)."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
