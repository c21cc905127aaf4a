"""Model cards: parameters, size, FLOPs and CPU latency, measured with torch's own tools."""

from __future__ import annotations

import copy
import io
from typing import Any

import torch
from torch import nn

__all__ = ["model_card", "cpu_latency", "cpu_latency_interleaved", "flops_per_image", "checkpoint_size_bytes"]


def checkpoint_size_bytes(model: nn.Module) -> int:
    """Size in bytes of ``torch.save(model.state_dict())`` (what the deployable file weighs)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def flops_per_image(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """FLOPs of one forward on one image (``torch.utils.flop_counter``); None if unsupported."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        m = copy.deepcopy(model).cpu().eval()
        x = torch.zeros(1, *input_shape)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m(x)
        return int(fc.get_total_flops())
    except Exception:  # noqa: BLE001 - a model the counter cannot trace
        return None


def cpu_latency(model: nn.Module, input_shape: tuple[int, ...], *, batch: int = 1, threads: int = 1,
                min_run_time: float = 0.3, min_runs: int = 10, max_extra_s: float = 10.0) -> dict[str, float]:
    """Median CPU latency (ms) of an eval-mode forward at ``batch``, with ``threads`` threads.

    Uses ``torch.utils.benchmark.Timer.blocked_autorange``; when a forward is so slow that it
    yields fewer than ``min_runs`` measurements, single-forward timings are added (for at most
    ``max_extra_s`` seconds) so the median is never that of one or two runs.
    """
    import statistics

    import torch.utils.benchmark as tb

    m = copy.deepcopy(model).cpu().eval()
    x = torch.randn(batch, *input_shape)
    with torch.inference_mode():
        m(x)  # warm-up
        t = tb.Timer(stmt="m(x)", globals={"m": m, "x": x}, num_threads=threads)
        r = t.blocked_autorange(min_run_time=min_run_time)
        times = list(r.times)
        spent = 0.0
        while len(times) < min_runs and spent < max_extra_s:
            one = t.timeit(1).median
            times.append(one)
            spent += one
    med = statistics.median(times)
    return {"median_ms": med * 1e3, "images_per_s": batch / med, "threads": threads, "batch": batch, "runs": len(times)}


def cpu_latency_interleaved(models: list[nn.Module], input_shapes: list[tuple[int, ...]], *, batch: int = 1,
                            threads: int = 1, rounds: int = 15, block_s: float = 0.1,
                            max_s: float = 30.0) -> list[dict[str, float]]:
    """Median CPU latency of several models, timed in interleaved rounds (one block of each model
    per round), so that a machine whose load changes while it measures slows every model alike and
    their ratios stay meaningful. Same result fields as :func:`cpu_latency` (``interleaved``: True).

    Each block runs the forward ``number`` times (chosen so a block takes about ``block_s``; blocks
    much longer than the scheduler's time slices keep the ratios stable on a shared machine);
    ``rounds`` blocks per model (at least 10 when ``max_s`` runs out first).
    """
    import statistics
    import time

    import torch.utils.benchmark as tb

    timers = []
    with torch.inference_mode():
        for model, shape in zip(models, input_shapes):
            m = copy.deepcopy(model).cpu().eval()
            x = torch.randn(batch, *shape)
            m(x)  # warm-up
            t = tb.Timer(stmt="m(x)", globals={"m": m, "x": x}, num_threads=threads)
            one = statistics.median(t.timeit(1).median for _ in range(3))
            timers.append((t, max(1, int(block_s / max(one, 1e-7)))))
        times: list[list[float]] = [[] for _ in timers]
        start = time.perf_counter()
        for r in range(rounds):
            for i, (t, number) in enumerate(timers):
                times[i].append(t.timeit(number).median)
            if r >= 9 and time.perf_counter() - start > max_s:
                break
    out = []
    for ts, (_, number) in zip(times, timers):
        med = statistics.median(ts)
        out.append({"median_ms": med * 1e3, "images_per_s": batch / med, "threads": threads, "batch": batch,
                    "runs": len(ts), "per_run": number, "interleaved": True})
    return out


def model_card(model: nn.Module, input_shape: tuple[int, ...], *, latency: bool = True) -> dict[str, Any]:
    card: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "size_bytes": checkpoint_size_bytes(model),
        "flops": flops_per_image(model, input_shape),
    }
    if latency:
        card["latency_b1"] = cpu_latency(model, input_shape, batch=1, threads=1)
        card["throughput_b64"] = cpu_latency(model, input_shape, batch=64, threads=torch.get_num_threads())
    return card
