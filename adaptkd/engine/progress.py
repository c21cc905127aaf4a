"""Terminal progress: a rich progress bar (loss, accuracy, images/s, ETA) or plain epoch lines."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Progress display for a training run.

    With a terminal and ``enabled``, a rich bar per epoch updated at the logging interval; without
    a terminal (CI, pipes), one line per epoch through ``log``.
    """

    def __init__(self, *, enabled: bool, total_epochs: int, log: Callable[[str], None]) -> None:
        self.enabled = enabled
        self.total_epochs = total_epochs
        self.log = log
        self._bar: Any = None  # a rich Progress while an epoch bar is shown
        self._task: Any = None
        self._rich = enabled and sys.stdout.isatty()

    def __enter__(self) -> "Progress":
        if self._rich:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[info_total]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task("train", total=steps, epoch=epoch, info_total=self.total_epochs, info="")

    def update(self, state: dict[str, Any]) -> None:
        if self._bar is None or self._task is None:
            return
        rec = state["rec"]
        loss = sum(v for k, v in rec.items() if k.startswith("loss/student/") and isinstance(v, float))
        info = f"loss {loss:.3f}  {rec.get('images_per_s', 0):.0f} img/s"
        self._bar.update(self._task, completed=state["i"], info=info)

    def end_epoch(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        parts = [f"epoch {rec['epoch']}/{self.total_epochs}"]
        loss = rec.get("train/loss/student")
        if loss is None:
            loss = sum(v for k, v in rec.items() if k.startswith("train/student/"))
        parts.append(f"loss {loss:.4f}")
        for k, v in rec.items():
            if k.startswith("train/acc/"):
                parts.append(f"train {k.split('/')[-1]} {v:.2f}%")
            if k.startswith("test/acc/"):
                parts.append(f"test {k.split('/')[-1]} {v:.2f}%")
        parts.append(f"{rec.get('images_per_s', 0):.0f} img/s")
        parts.append(f"{rec.get('time/epoch_s', 0):.1f}s")
        line = " | ".join(parts)
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            self.log(line)
