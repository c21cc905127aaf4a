"""Training views made ahead: on a background thread for large batches, a chunk of batches at a time for small ones.

:class:`ViewsAhead` walks an epoch's ``(x uint8, y)`` batches and, while the training thread runs
step ``k``, takes the next batches (at most two ahead) and makes their training views (the random
crop and flip drawn from the augmentation generator, then applied and normalised) on one
background thread. Torch releases the GIL inside its operators, so the two threads overlap; the
training thread only takes a ready batch from a queue.

Exactness. The views are the ones the training thread would have made itself: the background
thread draws from its own generator, started from the run's generator's state and advanced by the
same draws in the same order. The run's generator is set to the state after batch ``k``'s draws
when batch ``k`` is handed out, so at any point between steps it is where it would be without the
background thread, never ahead: a checkpoint written after step ``k`` records the state before batch
``k + 1``'s draws, and a resumed run draws the same views.

Small batches. Where a batch's view costs less than handing it over between threads,
:class:`ViewsInChunks` makes the views of several batches at once on the training thread: each
batch's random parameters drawn in turn (the same numbers in the same order), then one crop, flip
and normalisation over the chunk, split back into batches. What a small batch's view costs is
mostly each operator's fixed cost, paid cold after every training step (the step's kernels evict
the augmentation's): about 0.18 ms per step for a 64×1×8×8 batch against 0.05 ms for the same view
in a loop. A chunk pays it once for up to :data:`MAX_CHUNK` batches. The generator is handed over
the same way as by :class:`ViewsAhead`.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from queue import SimpleQueue

import torch
from torch import Tensor

__all__ = ["CHUNK_PIXELS", "MAX_CHUNK", "MIN_PIXELS", "ViewsAhead", "ViewsInChunks", "chunk_batches", "pays"]

Batch = tuple[Tensor, Tensor]

#: the smallest batch (uint8 values: B·C·H·W) whose views are made ahead. Handing a batch over costs the
#: training thread about 0.1 ms of GIL hand-offs on CPU, whatever its size (the background thread's dozen small
#: operations each release and retake the GIL while the step does the same), so making the views ahead pays only
#: where making them costs more: measured on 2 CPU cores with a stand-in step of small operations, batches of
#: 64×1×8×8 and 64×1×28×28 were slower ahead (wall), 32×3×32×32 broke even, 128×3×32×32 gained and freed the
#: training thread of 1.3 ms per step (``benchmarks/step_overhead.md``).
MIN_PIXELS = 1 << 17


def pays(batch_pixels: int, device: torch.device) -> bool:
    """Whether an epoch's views are made ahead: on the CPU, for batches of at least :data:`MIN_PIXELS`
    values. On CUDA the view is a dozen asynchronous launches, cheaper than the hand-over (and not
    measured here): it stays on the training thread."""
    return device.type == "cpu" and batch_pixels >= MIN_PIXELS


#: :class:`ViewsInChunks`: the uint8 values (B·C·H·W) of one chunk at most (4 MiB of float32 views), and its
#: batches at most
CHUNK_PIXELS = 1 << 20
MAX_CHUNK = 32


def chunk_batches(batch_pixels: int) -> int:
    """Batches per chunk for batches of ``batch_pixels`` values: as many as :data:`CHUNK_PIXELS` holds, 1 to
    :data:`MAX_CHUNK`."""
    return max(1, min(MAX_CHUNK, CHUNK_PIXELS // max(batch_pixels, 1)))


class ViewsInChunks:
    """Iterate ``(xb, yb, view)`` over ``batches``, the views made ``chunk`` batches at a time on the calling thread.

    Args:
        batches: the epoch's ``(x uint8 [B, C, H, W], y int64 [B])`` batches.
        draw: ``(batch size, generator) -> params``: one batch's random parameters (``Augment.draw``), or
            None when nothing is random.
        apply: ``(x, params) -> views``: the views of the images ``x`` (several batches concatenated) with the
            concatenated ``params`` (``Augment.apply``).
        gen: the run's augmentation generator; when a batch is handed out it holds the state after that
            batch's draws, as with :class:`ViewsAhead`.
        chunk: batches per chunk (:func:`chunk_batches`).

    The views are those of ``apply(xb, draw(len(xb), gen))`` batch by batch: the same draws in the same
    order, and the crop, flip and normalisation are per image.
    """

    def __init__(self, batches: Iterable[Batch], draw: Callable[[int, torch.Generator], Tensor | None],
                 apply: Callable[[Tensor, Tensor | None], Tensor], gen: torch.Generator, chunk: int) -> None:
        self._batches = iter(batches)
        self._draw, self._apply = draw, apply
        self._gen = gen
        self._own = torch.Generator(device=gen.device)
        self._own.set_state(gen.get_state())
        self._chunk = chunk
        self._ready: deque[tuple[Tensor, Tensor, Tensor, Tensor]] = deque()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor, Tensor]:
        if not self._ready:
            self._fill()
        if not self._ready:
            raise StopIteration
        xb, yb, view, state = self._ready.popleft()
        self._gen.set_state(state)
        return xb, yb, view

    def _fill(self) -> None:
        got = list(itertools.islice(self._batches, self._chunk))
        if not got:
            return
        params, states = [], []
        for xb, _ in got:
            params.append(self._draw(xb.shape[0], self._own))
            states.append(self._own.get_state())
        if len(got) == 1:
            views: tuple[Tensor, ...] = (self._apply(got[0][0], params[0]),)
        else:
            drawn = None if params[0] is None else torch.cat(params)  # type: ignore[arg-type]
            views = self._apply(torch.cat([xb for xb, _ in got]), drawn).split([xb.shape[0] for xb, _ in got])
        self._ready.extend((xb, yb, v, st) for (xb, yb), v, st in zip(got, views, states))

    def close(self) -> None:
        """Nothing runs in the background: dropping the batches not handed out is all."""
        self._ready.clear()


class ViewsAhead:
    """Iterate ``(xb, yb, view)`` over ``batches``, each ``view = make(xb, generator)`` computed ahead
    (at most ``depth`` batches) on a background thread.

    Args:
        batches: the epoch's ``(x uint8 [B, C, H, W], y int64 [B])`` batches (pulled on the
            background thread: an in-memory source, whose ``index_select`` also leaves the
            training thread).
        make: ``(xb, generator) -> view``: the training view of a batch, drawing its random
            parameters from ``generator`` only.
        gen: the run's augmentation generator. When a batch is handed out, ``gen`` holds the
            state after that batch's draws (as if ``make`` had run on the training thread).
        depth: batches prepared but not yet handed out, at most (2: the next batch is usually
            ready when the step asks for it, so the training thread seldom waits).

    Use in a ``with`` block (or call :meth:`close`): leaving it stops the background thread after
    the batch in preparation, so that no background work outlives the epoch. An exception raised
    while preparing a batch is raised on the training thread when that batch is due.
    """

    def __init__(self, batches: Iterable[Batch], make: Callable[[Tensor, torch.Generator], Tensor],
                 gen: torch.Generator, depth: int = 2) -> None:
        self._batches = iter(batches)
        self._make = make
        self._gen = gen
        self._own = torch.Generator(device=gen.device)
        self._own.set_state(gen.get_state())
        self._ready: SimpleQueue = SimpleQueue()  # (xb, yb, view, generator state after it), an error, or None
        self._credits: SimpleQueue = SimpleQueue()  # one per batch the thread may prepare; False: stop
        for _ in range(depth):
            self._credits.put(True)
        self._stop = self._done = False
        self._thread = threading.Thread(target=self._run, name="adaptkd-views", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The background thread: prepare batches while credits allow, then put None (the end)."""
        try:
            while self._credits.get() and not self._stop:
                batch = next(self._batches, None)
                if batch is None:
                    break
                xb, yb = batch
                view = self._make(xb, self._own)
                self._ready.put((xb, yb, view, self._own.get_state()))
        except Exception as exc:  # noqa: BLE001 - handed to the training thread, raised there
            self._ready.put(exc)
            return
        self._ready.put(None)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._done:
            raise StopIteration
        item = self._ready.get()
        if item is None or isinstance(item, Exception):
            self._done = True
            if item is None:
                raise StopIteration
            raise item
        self._credits.put(True)  # the thread may prepare one more while this step runs
        xb, yb, view, state = item
        self._gen.set_state(state)
        return xb, yb, view

    def close(self) -> None:
        """Stop the background thread (after the batch in preparation, whose result is dropped)."""
        self._done = self._stop = True
        self._credits.put(False)
        self._thread.join()

    def __enter__(self) -> ViewsAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
