"""The clocks and memory probes of ``adaptkd bench``: timing a block of steps, one step's peak
memory, the process's peak RSS, medians and quartiles, and the machine the bench ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, torch version, threads (and the GPU when on CUDA)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "load_avg": [round(x, 1) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _time_block(fn: Callable[[], None], n: int, device: torch.device,
                clock: str = "wall") -> tuple[list[float], list[float] | None]:
    """Seconds of each of ``n`` calls: (by ``clock``, by the other clock or None). CUDA: events
    around each call, one synchronise per block (no other clock). CPU: ``time.perf_counter``
    (``clock="wall"``) and the process's CPU time (``clock="cpu"``: insensitive to how much of the
    machine other processes take), both read around every call."""
    if device.type == "cuda":
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        torch.cuda.synchronize(device)
        for start, end in ev:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1000.0 for s, e in ev], None
    wall, cpu = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn()
        c, w = time.process_time() - c, time.perf_counter() - w
        wall.append(w)
        cpu.append(c)
    return (cpu, wall) if clock == "cpu" else (wall, cpu)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines (written to file descriptor 2) for one step."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def step_peak_memory(fn: Callable[[], None], device: torch.device) -> tuple[int | None, str]:
    """(bytes, how): peak tensor memory allocated during one call of ``fn`` above its start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base), "cuda.max_memory_allocated"
    try:
        from torch.profiler import ProfilerActivity, profile

        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                fn()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        cur = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            cur += e.nbytes()
            peak = max(peak, cur)
        return int(peak), "torch.profiler allocator events"
    except Exception:  # noqa: BLE001 - a profiler without memory events: fall back to the RSS high-water mark
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int((after - before) * 1024), "getrusage maxrss delta (a lower bound)"


def _maxrss_mb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # noqa: BLE001 - not on this platform
        return None


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (float("nan"), float("nan"))
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]
