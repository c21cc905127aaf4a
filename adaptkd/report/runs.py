"""Reading run folders: the one place the report learns what a run wrote (config, summary, metrics)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptkd.errors import RunFolderError

__all__ = ["ReportError", "RunData", "load_run", "run_labels"]


class ReportError(RunFolderError):
    """A run folder that cannot be read, or an output path that is unsafe to write."""


@dataclass
class RunData:
    """One run folder: its resolved config, ``summary.json`` (may be empty) and metrics records."""

    path: Path
    label: str
    config: dict[str, Any]
    summary: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def method(self) -> str:
        return str(self.config.get("method", {}).get("name", "?"))

    def networks(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(name, role, net_config)`` for student, teachers and peers, in config order."""
        out = [(self.config.get("student", {}).get("name") or "student", "student", self.config.get("student", {}))]
        for i, t in enumerate(self.config.get("teachers") or []):
            out.append((t.get("name") or f"teacher{i}", "teacher", t))
        for i, p in enumerate(self.config.get("peers") or []):
            out.append((p.get("name") or f"peer{i}", "peer", p))
        return out


def load_run(path: str | os.PathLike[str], label: str | None = None) -> RunData:
    """Read a run folder; :class:`ReportError` when it is not one."""
    from adaptkd.engine import rundir

    p = Path(os.path.expanduser(str(path)))
    if not p.is_dir():
        raise ReportError(f"run folder {str(path)!r} does not exist")
    try:
        config, summary, records = rundir.read_config(p), rundir.read_summary(p), rundir.read_metrics(p)
    except RunFolderError as exc:
        raise ReportError(str(exc)) from None
    return RunData(path=p, label=label or p.name or str(p), config=config, summary=summary, records=records)


def run_labels(paths: list[Path]) -> list[str]:
    """Short unique labels: each folder's name, with as many of its parents as it needs to differ from
    the others (``teacher``, ``kd/seed0``, ``ce/seed0``)."""
    parts = [list(p.resolve().parts) for p in paths]
    labels = []
    for i, pp in enumerate(parts):
        depth = 1
        while depth < len(pp) and any(pp[-depth:] == qq[-depth:] for j, qq in enumerate(parts) if j != i):
            depth += 1
        labels.append("/".join(pp[-depth:]))
    return labels
