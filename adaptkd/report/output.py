"""Safe output: plain files with generated names written only inside the report folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from adaptkd.report.runs import ReportError, RunData

__all__ = ["SAFE_NAME", "Writer", "old_files", "prepare_out", "slug"]

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


class Writer:
    """Writes only plain files with generated names directly inside ``out`` (temp file + rename)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.root = out.resolve()
        self.written: list[str] = []

    def path(self, name: str) -> Path:
        if not SAFE_NAME.match(name) or ".." in name:
            raise ReportError(f"refusing to write {name!r}: not a plain file name")
        target = self.out / name
        if target.is_symlink():
            raise ReportError(f"{str(target)!r} is a symbolic link; refusing to write through it")
        if target.resolve().parent != self.root:
            raise ReportError(f"{str(target)!r} resolves outside the report folder {str(self.out)!r}; refusing")
        return target

    def bytes(self, name: str, data: bytes) -> Path:
        target = self.path(name)
        tmp = self.out / f".{name}.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        self.written.append(name)
        return target

    def text(self, name: str, text: str) -> Path:
        return self.bytes(name, text.encode("utf-8"))


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"
    return s[:80]


def prepare_out(runs: list[RunData], out: str | os.PathLike[str] | None) -> Path:
    if out is None:
        if len(runs) != 1:
            raise ReportError("a comparison of several runs needs --out DIR (the folder for the comparison page)")
        run_root = runs[0].path.resolve()
        target = runs[0].path / "report"
        if target.is_symlink() or not (target.resolve() == run_root / "report"):
            raise ReportError(f"{str(target)!r} is a symbolic link or resolves outside its run folder; "
                              "refusing to write there")
    else:
        target = Path(os.path.expanduser(str(out)))
        if target.is_symlink():
            raise ReportError(f"output folder {str(out)!r} is a symbolic link; refusing to write through it")
        if target.exists() and not target.is_dir():
            raise ReportError(f"output {str(out)!r} exists and is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # created concurrently
        raise ReportError(f"output folder {str(target)!r} is a symbolic link; refusing to write through it")
    return target


def old_files(out_dir: Path) -> set[str]:
    """Files a previous report in this folder wrote (from its manifest), to remove the stale ones."""
    man = out_dir / "report.json"
    if not man.is_file() or man.is_symlink():
        return set()
    try:
        data = json.loads(man.read_text(encoding="utf-8"))
        return {f["file"] for f in data.get("figures", []) if isinstance(f, dict) and isinstance(f.get("file"), str)}
    except (json.JSONDecodeError, OSError, TypeError):
        return set()
