"""Training views made one batch ahead, on a background thread.

:class:`ViewsAhead` walks an epoch's ``(x uint8, y)`` batches and, while the training thread runs
step ``k``, takes batch ``k + 1`` and makes its training view (the random crop and flip drawn
from the augmentation generator, then applied and normalised) on one background thread. Torch
releases the GIL inside its operators, so the two threads overlap.

Exactness. The views are the ones the training thread would have made itself: the background
thread draws from its own generator, started from the run's generator's state and advanced by the
same draws in the same order. The run's generator is set to the state after batch ``k``'s draws
when batch ``k`` is handed out, so at any point between steps it is where it would be without the
prefetch, never ahead: a checkpoint written after step ``k`` records the state before batch
``k + 1``'s draws, and a resumed run draws the same views.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

__all__ = ["ViewsAhead"]

Batch = tuple[Tensor, Tensor]


class ViewsAhead:
    """Iterate ``(xb, yb, view)`` over ``batches``, each ``view = make(xb, generator)`` computed one
    batch ahead on a background thread.

    Args:
        batches: the epoch's ``(x uint8 [B, C, H, W], y int64 [B])`` batches (pulled on the
            background thread: an in-memory source, whose ``index_select`` also leaves the
            training thread).
        make: ``(xb, generator) -> view``: the training view of a batch, drawing its random
            parameters from ``generator`` only.
        gen: the run's augmentation generator. When a batch is handed out, ``gen`` holds the
            state after that batch's draws (as if ``make`` had run on the training thread).

    Use in a ``with`` block (or call :meth:`close`): leaving it waits for the batch in
    preparation, so that no background work outlives the epoch. An exception raised while
    preparing a batch is raised on the training thread when that batch is due.
    """

    def __init__(self, batches: Iterable[Batch], make: Callable[[Tensor, torch.Generator], Tensor],
                 gen: torch.Generator) -> None:
        self._batches = iter(batches)
        self._make = make
        self._gen = gen
        self._own = torch.Generator(device=gen.device)
        self._own.set_state(gen.get_state())
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptkd-views")
        self._next: Future | None = self._pool.submit(self._prepare)

    def _prepare(self) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """On the background thread: the next batch, its view and the generator state after its draws."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        xb, yb = batch
        view = self._make(xb, self._own)
        return xb, yb, view, self._own.get_state()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._next is None:
            raise StopIteration
        item = self._next.result()  # an exception of the background thread is raised here
        if item is None:
            self._next = None
            raise StopIteration
        self._next = self._pool.submit(self._prepare)  # batch k + 1 while step k runs
        xb, yb, view, state = item
        self._gen.set_state(state)
        return xb, yb, view

    def close(self) -> None:
        """Wait for the batch in preparation (its result is dropped) and stop the background thread."""
        self._next = None
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ViewsAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
