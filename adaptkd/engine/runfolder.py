"""Run folders: checked before anything is built, created once every input is valid, locked while
a run writes them.

Rules (docs/reliability.md):

* ``run.out`` must lead to a folder that can be created and written: no regular file on the way,
  a writable parent, no symbolic link planted for a run file.
* A fresh start writes only into a new or empty folder, or into the folder of an adaptkd run that
  stopped before its first checkpoint (it holds only run files and adaptkd's lock file). A folder
  holding anything else is refused, naming what it holds; ``run.overwrite: true`` replaces the run
  files (:data:`RUN_FILES`) and never touches any other file.
* One writer per folder: the writer holds an exclusive lock (``fcntl.flock``) on
  :data:`LOCK_NAME` for as long as it runs, with its process id written in the file. A second
  writer is refused naming that process; the kernel drops the lock of a process that dies, so a
  killed run never leaves a stale lock (the file stays, unlocked, and the next run takes it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from adaptkd.errors import RunFolderError

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RUN_FILES", "RUN_DIRS", "LOCK_NAME", "RunLock", "prepare_run_dir", "check_run_out"]

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json")
RUN_DIRS = ("tb", "report")
LOCK_NAME = ".adaptkd.lock"


def _own(name: str) -> bool:
    """A name adaptkd writes in a run folder (its files, folders, lock and interrupted temp files)."""
    if name in RUN_FILES or name in RUN_DIRS or name == LOCK_NAME:
        return True
    return any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in RUN_FILES)


def check_run_out(path: Path) -> None:
    """``run.out`` can be created and written: no regular file on the way, a writable folder above
    it (probed by creating and removing an empty temporary folder there)."""
    ancestor = path
    while not os.path.lexists(ancestor):
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor != path and not ancestor.is_dir():
        raise RunFolderError(f"field `run.out`: {str(path)!r} cannot be created: {str(ancestor)!r} is a file, "
                             "not a folder")
    probe_in = path if path.is_dir() else ancestor
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".adaptkd-probe-", dir=probe_in))
    except OSError as exc:
        raise RunFolderError(f"field `run.out`: cannot write in {str(probe_in)!r} ({exc.strerror or exc}); "
                             "choose a writable run.out") from None


class RunLock:
    """An exclusive, advisory lock on a run folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str | None:
        """``None`` when no live process holds the lock, else a description of the holder."""
        if fcntl is None or not self.path.is_file():
            return None
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                return f"process {pid}"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self) -> None:
        if fcntl is None:
            return
        if self.path.is_symlink():
            raise RunFolderError(f"{str(self.path)!r} is a symbolic link planted in the run folder; refusing it")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise RunFolderError(_busy(self.path.parent, f"process {pid}")) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a run object dropped without fit(): let the next writer in
        try:
            self.release()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def _busy(path: Path, who: str) -> str:
    return (f"run folder {str(path)!r} is in use: {who} is writing it; wait for it to finish, "
            "or choose another run.out")


def prepare_run_dir(out: str | os.PathLike[str], *, resume: bool, overwrite: bool, create: bool = True,
                    lock: RunLock | None = None) -> Path:
    """Check, then (``create=True``) create or reopen a run folder without following symlinks planted in it.

    ``create=False`` only checks and touches nothing: the engine checks before it loads data and
    builds networks and creates the folder once every input is validated, so a refused config
    leaves no files behind. Creating takes ``lock`` (when given), removes the temp files of writes
    interrupted by a crash and, for a fresh start, the run files of a run that stopped before its
    first checkpoint (with ``overwrite``, every run file, ``last.pt`` included; nothing else).
    """
    path = Path(os.path.expanduser(str(out)))
    if path.is_symlink():
        raise RunFolderError(f"run folder {str(path)!r} is a symbolic link; refusing to write through it")
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"run folder {str(path)!r} exists and is not a folder")
    check_run_out(path)
    for name in RUN_FILES + RUN_DIRS + (LOCK_NAME,):
        p = path / name
        if p.is_symlink():
            raise RunFolderError(f"{str(p)!r} is a symbolic link planted in the run folder; "
                                 f"refusing to write through it")
    holder = RunLock(path).holder()
    if holder is not None:
        raise RunFolderError(_busy(path, holder))
    if resume and not (path / "last.pt").is_file():
        raise RunFolderError(
            f"nothing to resume: {str(path / 'last.pt')!r} does not exist (the run stopped before its first "
            "checkpoint, or run.out is wrong); start it again without --resume"
        )
    if not resume and (path / "last.pt").exists() and not overwrite:
        raise RunFolderError(
            f"run folder {str(path)!r} already holds a run (last.pt); resume it with --resume, "
            "choose another run.out, or set run.overwrite=true"
        )
    if not resume and not overwrite and path.is_dir():
        entries = sorted(os.listdir(path))
        ours = (path / LOCK_NAME).is_file()  # written by an adaptkd run (which stopped before last.pt)
        foreign = [e for e in entries if not (ours and _own(e))]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderError(
                f"run folder {str(path)!r} is not empty and was not written by an adaptkd run (it holds {shown}); "
                "a fresh start writes only into a new or empty folder: choose another run.out, or set "
                "run.overwrite=true to replace the run files in it (other files are kept)"
            )
    if not create:
        return path
    path.mkdir(parents=True, exist_ok=True)
    if lock is not None:
        lock.acquire()
    for name in RUN_FILES:
        for stale in path.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    if not resume:
        for name in ("metrics.jsonl", "last.pt", "best.pt", "summary.json"):
            (path / name).unlink(missing_ok=True)
    return path
