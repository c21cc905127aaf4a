"""Non-finite detection: which input, output, loss term or weight first went NaN/Inf, read lazily.

:class:`NonFiniteWatch` records, on the device, the first step at which each named quantity was
non-finite (no host synchronisation per step); :meth:`NonFiniteWatch.raise_if_any` reads it at the
logging interval and stops the run with a message naming the earliest offender. Under
``run.nonfinite: skip`` the engine uses the step's flag to skip it instead.

:func:`first_nonfinite` is the state check made before every checkpoint: a weight or a BatchNorm
running statistic can overflow although every loss stayed finite (a huge learning rate, skipped
steps), so every parameter and floating buffer of every learner and of the method's modules is
checked on its device (one ``isfinite().all()`` per tensor, stacked, one host read) and a
non-finite state is never saved as "the last good checkpoint", whatever ``run.nonfinite`` says.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from adaptkd.errors import NonFiniteError
from adaptkd.methods import StepOut

__all__ = ["NonFiniteWatch", "first_nonfinite", "raise_if_state_nonfinite"]

_NEVER = torch.iinfo(torch.long).max  # NonFiniteWatch's running "first non-finite step" of a name never non-finite


class NonFiniteWatch:
    """First non-finite step per name (input, ``<net>.logits``, ``<learner>.<term>``, ``<learner>.<term>.weight``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._keys: tuple[str, ...] = ()
        self._first: dict[str, Tensor] = {}  # names no longer checked each step (the method's terms changed)
        self._vec: Tensor | None = None

    def check(self, x: Tensor | None, logits: dict[str, Tensor], out: StepOut, step: int) -> Tensor:
        """Record this step's flags; returns a 0-d bool tensor: everything finite (no host sync).

        ``x``: the step's input, or None where it cannot be non-finite (the engine's views of uint8
        images with bounded normalisation, :attr:`adaptkd.data.Augment.bounded`): then ``input`` is not
        checked, and a large image batch is not summed every step.

        Every checked tensor becomes one number: a whole tensor (input, logits, a non-scalar term)
        its float32 sum, which a NaN/Inf anywhere makes non-finite (finite values cannot overflow
        it: the normalised images are bounded, and logits would have to exceed 1e34, where every
        softmax loss is infinite already); the numbers are stacked and checked at once (``v - v == 0``,
        false exactly for NaN and Inf), and the "first non-finite step" per name is one vector
        updated by a few ops per step, however many terms the method returns.
        """
        keys: list[str] = [*(["input"] if x is not None else []), *(f"{n}.logits" for n in logits)]
        sums: list[Tensor] = [*([x.detach().sum(dtype=torch.float32)] if x is not None else []),
                              *(v.detach().sum(dtype=torch.float32) for v in logits.values())]
        scalar_keys: list[str] = []
        scalars: list[Tensor] = []

        def add(key: str, v: Tensor) -> None:
            if v.dim() == 0:
                scalar_keys.append(key)
                scalars.append(v.detach())
            else:
                keys.append(key)
                sums.append(v.detach().sum(dtype=torch.float32))

        for learner, terms in out.losses.items():
            for term, v in terms.items():
                add(f"{learner}.{term}", v)
        for learner, ws in out.weights.items():  # adaptive weights (tensors) and float weights
            for term, w in ws.items():
                if isinstance(w, Tensor):
                    add(f"{learner}.{term}.weight", w)
                elif isinstance(w, float) and not math.isfinite(w):
                    keys.append(f"{learner}.{term}.weight")
                    sums.append(torch.full((), w, device=self.device))
        keys += scalar_keys
        stacked = torch.stack([*sums, *(s.to(self.device, torch.float32) for s in scalars)])
        flag_t = (stacked - stacked) == 0  # isfinite in two kernels (it takes four): v - v is 0, or NaN for NaN/Inf
        key_t = tuple(keys)
        if key_t != self._keys or self._vec is None:  # first step, or the method's terms changed
            self._first = self.record()
            never = torch.full((), -1, dtype=torch.long, device=self.device)
            prev = torch.stack([self._first.get(k, never) for k in keys])
            prev = torch.where(prev < 0, _NEVER, prev)
            self._keys = key_t
        else:
            prev = self._vec
        # _vec holds _NEVER for "never": the first step is a running minimum (two ops per step)
        self._vec = torch.minimum(prev, torch.where(flag_t, _NEVER, step))
        return flag_t.all()

    def record(self) -> dict[str, Tensor]:
        """{name: first step at which it was non-finite (-1: never)} as device tensors."""
        rec = dict(self._first)
        if self._vec is not None:
            vec = torch.where(self._vec == _NEVER, -1, self._vec)
            for i, k in enumerate(self._keys):
                rec[k] = vec[i]
        return rec

    def raise_if_any(self, *, epoch: int, out: Path,
                     earliest: Callable[[Tensor], Tensor] | None = None) -> None:
        """Raise :class:`NonFiniteError` naming the earliest non-finite quantity (one host read).

        ``epoch``: the last completed epoch; ``out``: the run folder (its ``last.pt`` is named as
        kept); ``earliest``: the element-wise minimum of the first-steps over ranks under DDP
        (every rank stops at once), None on one process.
        """
        record = self.record()
        if not record:
            return
        keys = list(record)
        firsts_t = torch.stack([record[k] for k in keys])
        if earliest is not None:
            firsts_t = earliest(firsts_t)
        firsts = firsts_t.tolist()
        bad = [(s, k) for k, s in zip(keys, firsts) if s >= 0]
        if bad:
            bad.sort(key=lambda sk: (sk[0], keys.index(sk[1])))  # earliest step, then data-flow order
            step, key = bad[0]
            where = f"epoch {epoch + 1}, step {step}"
            kept = (f"the last good checkpoint {str(out / 'last.pt')!r} (epoch {epoch}) is kept"
                    if epoch > 0 else "no checkpoint had been written yet (it stopped in epoch 1)")
            raise NonFiniteError(
                f"non-finite value in `{key}` at {where} (also: {', '.join(k for _, k in bad[1:]) or 'none'}); "
                f"training stopped; {kept}. "
                "Lower the learning rate, check the data, or set run.nonfinite=skip to skip such steps."
            )


def _named_state(modules: dict[str, nn.Module]) -> list[tuple[str, Tensor]]:
    seen: set[int] = set()
    out: list[tuple[str, Tensor]] = []
    for prefix, module in modules.items():
        for name, t in itertools.chain(module.named_parameters(), module.named_buffers()):
            if t.is_floating_point() and t.numel() and id(t) not in seen:
                seen.add(id(t))
                out.append((f"{prefix}.{name}", t.detach()))
    return out


def first_nonfinite(modules: dict[str, nn.Module], *, all_ranks: bool = False) -> tuple[str, int] | None:
    """``(tensor name, number of non-finite values)`` of the first tensor of ``modules`` (``{prefix:
    module}``) holding NaN/Inf, or None when every one is finite. ``all_ranks``: under DDP, every
    rank gets the same answer (a rank that is fine learns that another one is not)."""
    named = _named_state(modules)
    if not named:
        return None
    flags = torch.stack([torch.isfinite(t).all() for _, t in named]).to(torch.int32)
    if all_ranks:
        import torch.distributed as tdist

        local_ok = flags.min().reshape(1)
        tdist.all_reduce(local_ok, op=tdist.ReduceOp.MIN)
        if int(local_ok.item()) == 1:
            return None
    if bool(flags.all()):
        return ("a tensor of another process", 0) if all_ranks else None
    i = int((flags == 0).nonzero()[0, 0])
    name, t = named[i]
    return name, int((~torch.isfinite(t)).sum())


def raise_if_state_nonfinite(modules: dict[str, nn.Module], *, all_ranks: bool, epoch: int, step: int, last: Path,
                             saved_epoch: int, skipped: int = 0) -> None:
    """``NonFiniteError`` when a parameter or floating buffer of ``modules`` is NaN/Inf (checked before every
    checkpoint, so none is ever saved): names the tensor, ``epoch`` / ``step``, the checkpoint ``last``
    that is kept (written at epoch ``saved_epoch``) and the ``skipped`` non-finite steps, if any."""
    bad = first_nonfinite(modules, all_ranks=all_ranks)
    if bad is None:
        return
    name, count = bad
    kept = (f"the last good checkpoint {str(last)!r} (epoch {saved_epoch}) is kept" if last.is_file()
            else "no checkpoint had been written yet")
    skipped_note = f" ({skipped} step(s) were skipped as non-finite)" if skipped else ""
    raise NonFiniteError(
        f"non-finite weights: `{name}` holds {count} NaN/Inf value(s) in epoch {epoch} at step {step}"
        f"{skipped_note}; training stopped before writing a checkpoint; {kept}. The model diverged: lower the "
        "learning rate (or the loss weights), then resume or start again."
    )
