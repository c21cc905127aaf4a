"""``adaptkd bench``: the step time of every method (and balancer) against its physical floor.

Every method runs through the real engine — a :class:`~adaptkd.engine.trainer.Trainer` built
from a config with random-init teachers, fed one fixed random batch — and
:meth:`Trainer.train_step` is timed: augmentation, every network's forward, the method, the
balancer's backward and the optimiser steps, i.e. what a user's training step costs.

The **physical floor** of a network setup is what no distillation method can avoid: every frozen
teacher's forward without grad, every learner's forward and backward (of a plain cross-entropy)
and its optimiser step, on the same (already normalised) batch, with the same optimiser settings,
precision and memory format, in the same process. Floors and methods are measured *interleaved*
(round-robin blocks of steps, the starting variant rotating every round) so that drift of the
machine's speed hits all of them alike; ratios are the median over rounds of the per-round ratio
of medians (paired), which cancels drift that a ratio of global medians would not.

Peak memory is the peak of tensor memory allocated during one step above what was allocated
when the step began (activations, gradients, temporaries; weights and optimiser state excluded):
on CUDA from ``torch.cuda.max_memory_allocated``, on CPU from the allocator's events recorded by
``torch.profiler`` (``profile_memory=True``), in a separate, untimed step. The process's peak
resident set size (``resource.getrusage``) is reported beside it for the whole run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptkd.errors import ConfigError

__all__ = ["BenchConfig", "run_bench", "machine_info", "parse_balancer", "method_setup", "render_table",
           "markdown_table"]

# Each method runs with the networks and options of its spec's example (``MethodSpec.example``:
# random-init teachers of the bench's --teacher architecture, peers of its --student) and is held
# to its spec's ``speed_target``; the balancers' targets are below.

BALANCER_TARGETS: list[tuple[dict[str, Any], tuple[str, float]]] = [
    ({"name": "gradient", "over": "logits"}, ("fixed", 1.05)),
    ({"name": "gradient", "over": "params", "every": 10}, ("fixed", 1.10)),
]


@dataclass
class BenchConfig:
    """What ``adaptkd bench`` measures (the CLI flags of the same names)."""

    teacher: str = "resnet32x4"
    student: str = "resnet8x4"
    batch: int = 64
    methods: list[str] | None = None  # None: every registered method
    balancers: list[str] = field(default_factory=lambda: ["fixed"])
    balancer_methods: list[str] | None = field(default_factory=lambda: ["kd"])  # None: every method
    steps: int = 20
    warmup: int = 3
    block: int = 2
    device: str = "cpu"
    threads: int | None = None
    out: str = "runs/bench"
    image_size: int = 32
    num_classes: int = 100
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    memory: bool = True
    clock: str = "wall"  # "wall" (perf_counter / CUDA events) or "cpu" (process CPU time; CPU device only)
    epoch: int = 30  # the epoch the step believes it is in (after the usual 20-epoch warm-ups)


def parse_balancer(spec: str) -> dict[str, Any]:
    """``"gradient:over=params:every=10"`` → ``{"name": "gradient", "over": "params", "every": 10}``."""
    import yaml

    name, *opts = [p for p in spec.strip().split(":") if p]
    out: dict[str, Any] = {"name": name}
    for o in opts:
        if "=" not in o:
            raise ValueError(f"balancer spec {spec!r}: expected name:key=value:..., got {o!r}")
        k, _, v = o.partition("=")
        out[k.strip()] = yaml.safe_load(v)
    return out


def _balancer_label(b: dict[str, Any]) -> str:
    opts = ",".join(f"{k}={v}" for k, v in b.items() if k != "name")
    return b["name"] + (f"({opts})" if opts else "")


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


# --------------------------------------------------------------------------------------------
# Variants: a method through the engine, or a physical floor


class _Variant:
    name: str
    kind: str  # "method" | "floor"

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class MethodVariant(_Variant):
    kind = "method"

    def __init__(self, name: str, method: str, balancer: dict[str, Any], setup: dict[str, Any], trainer, xb: Tensor,
                 yb: Tensor, epoch: int) -> None:
        self.name, self.method, self.balancer, self.setup = name, method, balancer, setup
        self.trainer, self.xb, self.yb, self.epoch = trainer, xb, yb, epoch
        self.steps = 0
        self.paused = 0  # steps in which some learner did not step (SwitOKD's expert mode)

    def step(self) -> None:
        tr = self.trainer
        out, _ = tr.train_step(self.xb, self.yb, self.epoch, 0.5)
        tr.global_step += 1
        self.steps += 1
        if out.stepping is not None and len(set(tr.learners) - set(out.stepping)) > 0:
            self.paused += 1

    def check(self) -> None:
        self.trainer.raise_if_nonfinite()


class FloorVariant(_Variant):
    """Frozen forwards (no grad) + learners' forward/backward of CE + optimiser steps."""

    kind = "floor"

    def __init__(self, name: str, trainer, xb: Tensor, yb: Tensor) -> None:
        from adaptkd.engine.networks import build_network, freeze
        from adaptkd.engine.optim import build_optimizer
        from adaptkd.engine.runtime import maybe_compile

        self.name = name
        self.key = setup_key(trainer)
        dev = trainer.device

        def fresh(n: str) -> nn.Module:  # the same architecture, built anew (no hooks of the method's taps)
            net = build_network(trainer.net_cfgs[n], trainer.num_classes, trainer.data.in_channels, field=n).to(dev)
            return net.to(memory_format=torch.channels_last) if trainer.cfg.run.channels_last else net  # type: ignore[call-overload, unused-ignore]  # Module.to takes memory_format; torch's stub omits it

        self.frozen = [freeze(fresh(n)) for n in trainer.frozen]
        self.learners = [fresh(n).train() for n in trainer.learners]
        self.opts = [build_optimizer([p for p in net.parameters() if p.requires_grad], trainer.optim_cfgs[n])
                     for n, net in zip(trainer.learners, self.learners)]
        self.fwd_frozen, self.fwd_learners = list(self.frozen), list(self.learners)
        if trainer.cfg.run.compile:
            self.fwd_frozen = [maybe_compile(m, f"floor.{n}") for n, m in zip(trainer.frozen, self.frozen)]
            self.fwd_learners = [maybe_compile(m, f"floor.{n}") for n, m in zip(trainer.learners, self.learners)]
        x = trainer.eval_aug(xb.to(dev))
        if trainer.cfg.run.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.y = x, yb.to(dev)
        self.autocast = trainer.autocast
        self.scaler = torch.amp.GradScaler(dev.type, enabled=trainer.precision == "fp16")

    def step(self) -> None:
        with self.autocast():
            for net in self.fwd_frozen:
                with torch.no_grad():
                    net(self.x)
            outs = [net(self.x) for net in self.fwd_learners]
        loss = F.cross_entropy(outs[0].float(), self.y)
        for o in outs[1:]:
            loss = loss + F.cross_entropy(o.float(), self.y)
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in self.opts:
            self.scaler.step(opt)
        self.scaler.update()

    def check(self) -> None:
        return None


def setup_key(trainer) -> str:
    frozen = "+".join(trainer.net_cfgs[n].arch for n in trainer.frozen) or "-"
    learners = "+".join(trainer.net_cfgs[n].arch for n in trainer.learners)
    return f"{frozen}→{learners}"


# --------------------------------------------------------------------------------------------
# Timing and memory


def _time_block(fn: Callable[[], None], n: int, device: torch.device, clock: str = "wall") -> list[float]:
    """Seconds of each of ``n`` calls. CUDA: events around each call, one synchronise per block.
    CPU: ``time.perf_counter`` (``clock="wall"``) or the process's CPU time (``clock="cpu"``:
    insensitive to how much of the machine other processes take)."""
    if device.type == "cuda":
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        torch.cuda.synchronize(device)
        for start, end in ev:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1000.0 for s, e in ev]
    timer = time.process_time if clock == "cpu" else time.perf_counter
    out = []
    for _ in range(n):
        t0 = timer()
        fn()
        out.append(timer() - t0)
    return out


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


# --------------------------------------------------------------------------------------------
# Building the variants


def _random_data(cfg: BenchConfig, in_channels: int = 3):
    from adaptkd.data import DataBundle
    from adaptkd.data._core import Split

    g = torch.Generator().manual_seed(0)
    n = cfg.batch * 2
    shape = (in_channels, cfg.image_size, cfg.image_size)

    def split(k: int) -> Split:
        x = torch.randint(0, 256, (k, *shape), dtype=torch.uint8, generator=g)
        y = torch.arange(k, dtype=torch.int64) % cfg.num_classes
        return Split(x, y[torch.randperm(k, generator=g)])

    return DataBundle(name="synthetic", train=split(n), test=split(cfg.batch), num_classes=cfg.num_classes,
                      in_channels=in_channels, image_size=cfg.image_size, mean=(0.5,) * in_channels,
                      std=(0.25,) * in_channels)


def method_setup(method: str) -> dict[str, Any]:
    """The networks (None: the bench's --teacher / --student architecture) and options of ``method``'s
    example run (its spec)."""
    from adaptkd.methods import example_networks, method_class

    frozen, trainable, peers = example_networks(method)
    return {"frozen": [None] * frozen, "trainable": [None] * trainable, "peers": [None] * peers,
            "options": dict(method_class(method).spec.example.options)}


def _net_list(entries: list[Any], default: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"arch": a if a is not None else default, **extra} for a in entries]


def build_config(cfg: BenchConfig, method: str, setup: dict[str, Any], balancer: dict[str, Any], out: str) -> dict:
    """The experiment config of one variant (random-init teachers, synthetic data, no logging)."""
    teachers = _net_list(setup.get("frozen", []), cfg.teacher, random_init=True)
    teachers += _net_list(setup.get("trainable", []), cfg.teacher, trainable=True)
    return {
        "data": {"name": "synthetic", "batch_size": cfg.batch, "image_size": cfg.image_size,
                 "num_classes": cfg.num_classes, "augment": True},
        "student": {"arch": setup.get("student", cfg.student)},
        "teachers": teachers,
        "peers": _net_list(setup.get("peers", []), cfg.student),
        "method": {"name": method, **setup.get("options", {})},
        "balance": dict(balancer),
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 240,
                  "milestones": [150, 180, 210]},
        "run": {"out": out, "seed": 0, "device": cfg.device, "precision": cfg.precision, "log_every": 1_000_000,
                "progress": False, "tensorboard": False, "latency": False, "overwrite": True,
                "channels_last": cfg.channels_last, "compile": cfg.compile, "threads": cfg.threads},
    }


def _resolve_setup(cfg: BenchConfig, method: str, balancer: dict[str, Any], tmp: str) -> tuple[dict, dict] | str:
    """(setup, validated config dict) for the first setup the method accepts, or the reasons it refused."""
    from adaptkd.config import load_config

    errors = []
    for setup in [method_setup(method)]:
        raw = build_config(cfg, method, setup, balancer, tmp)
        try:
            load_config(raw)
        except ConfigError as exc:
            errors.append(str(exc).splitlines()[0])
            continue
        return setup, raw
    return "; ".join(dict.fromkeys(errors))


# --------------------------------------------------------------------------------------------


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every variant; write ``bench.json`` into ``cfg.out``; return the result dict."""
    from adaptkd.balance import list_balancers
    from adaptkd.engine.runtime import resolve_device
    from adaptkd.engine.trainer import Trainer
    from adaptkd.methods import list_methods, method_class

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.clock not in ("wall", "cpu") or (cfg.clock == "cpu" and device.type != "cpu"):
        raise ConfigError(f"--clock: {cfg.clock!r} must be 'wall', or 'cpu' on the CPU device "
                          f"(CUDA is timed with events)")
    methods = list(cfg.methods) if cfg.methods else list_methods()
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {unknown}; registered: {', '.join(list_methods())}")
    balancers = [parse_balancer(b) for b in cfg.balancers]
    for b in balancers:
        if b["name"] not in list_balancers():
            raise ConfigError(f"--balancers: unknown balancer {b['name']!r}; registered: {', '.join(list_balancers())}")
    if not any(b["name"] == "fixed" and len(b) == 1 for b in balancers):
        balancers.insert(0, {"name": "fixed"})
    # references: kd for offline methods, dml for online ones
    kinds = {m: method_class(m).kind for m in methods}
    if "kd" in list_methods() and "kd" not in methods and any(k == "offline" for k in kinds.values()):
        methods.insert(0, "kd")
    if "dml" in list_methods() and "dml" not in methods and any(k == "online" for k in kinds.values()):
        methods.append("dml")

    data = _random_data(cfg)
    xb, yb = data.train.x[: cfg.batch], data.train.y[: cfg.batch]
    tmp = tempfile.mkdtemp(prefix="adaptkd-bench-")
    variants: list[_Variant] = []
    floors: dict[str, FloorVariant] = {}
    skipped: list[dict[str, Any]] = []
    meta: dict[str, dict[str, Any]] = {}
    try:
        plan = []
        for m in methods:
            for b in balancers:
                is_fixed = b["name"] == "fixed" and len(b) == 1
                if not is_fixed and cfg.balancer_methods is not None and m not in cfg.balancer_methods:
                    continue
                plan.append((m, b))
        for m, b in plan:
            label = m if b == {"name": "fixed"} else f"{m}+{_balancer_label(b)}"
            res = _resolve_setup(cfg, m, b, os.path.join(tmp, "check"))
            if isinstance(res, str):
                skipped.append({"name": label, "reason": res})
                log(f"bench: skipping {label}: {res}")
                continue
            setup, raw = res
            raw["run"]["out"] = os.path.join(tmp, label.replace("/", "_"))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    tr = Trainer(raw, data=data, log=lambda s: None)
                mv = MethodVariant(label, m, b, setup, tr, xb, yb, cfg.epoch)
                mv.step()  # the first step builds lazy state; errors surface here
                mv.check()
            except Exception as exc:  # noqa: BLE001 - one method's failure must not end the bench
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                skipped.append({"name": label, "reason": reason})
                log(f"bench: {label} failed: {reason}")
                continue
            variants.append(mv)
            key = setup_key(tr)
            meta[label] = {"method": m, "balancer": _balancer_label(b), "kind": kinds.get(m, method_class(m).kind),
                           "setup": key, "taps": bool(tr.taps),
                           "method_params": sum(p.numel() for p in tr.method.parameters())}
            if key not in floors:
                floors[key] = FloorVariant(f"floor[{key}]", tr, xb, yb)
                variants.append(floors[key])
                meta[floors[key].name] = {"method": None, "balancer": None, "kind": "floor", "setup": key}
        if not any(v.kind == "method" for v in variants):
            raise RuntimeError("bench: no method could be benchmarked: " + "; ".join(s["reason"] for s in skipped))

        log(f"bench: {sum(v.kind == 'method' for v in variants)} method variant(s), {len(floors)} floor(s); "
            f"{cfg.warmup} warm-up + {cfg.steps} timed steps each, blocks of {cfg.block}, interleaved")
        for v in variants:
            for _ in range(cfg.warmup):
                v.step()
        rounds = max(1, math.ceil(cfg.steps / cfg.block))
        times: dict[str, list[list[float]]] = {v.name: [] for v in variants}
        t_start = time.perf_counter()
        for r in range(rounds):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                times[v.name].append(_time_block(v.step, cfg.block, device, cfg.clock))
            for v in variants:
                if isinstance(v, MethodVariant):
                    v.check()
            if (r + 1) % max(1, rounds // 10) == 0 or r + 1 == rounds:
                log(f"bench: round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")
        mem: dict[str, tuple[int | None, str]] = {}
        if cfg.memory:
            for v in variants:
                mem[v.name] = step_peak_memory(v.step, device)

        results = _summarise(cfg, variants, times, mem, meta, floors)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "machine": machine_info(device),
        "settings": {**asdict(cfg), "methods": methods, "balancers": [_balancer_label(b) for b in balancers]},
        "results": results,
        "skipped": skipped,
        "process_maxrss_mb": _maxrss_mb(),
        "memory_method": next(iter(mem.values()))[1] if mem else None,
        "timing": ("cuda events, one synchronise per block" if device.type == "cuda" else
                   "process CPU time (time.process_time) around each step" if cfg.clock == "cpu" else
                   "time.perf_counter around each step"),
    }
    out = Path(os.path.expanduser(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "bench.md").write_text(markdown_table(report) + "\n", encoding="utf-8")
    report["path"] = str(out / "bench.json")
    return report


def _summarise(cfg, variants, times, mem, meta, floors) -> list[dict[str, Any]]:
    by_name = {v.name: v for v in variants}
    med_round = {n: [_median(b) for b in blocks] for n, blocks in times.items()}

    def paired(a: str, b: str) -> tuple[float, float, float] | None:
        if a not in med_round or b not in med_round:
            return None
        rs = [x / y for x, y in zip(med_round[a], med_round[b]) if y > 0]
        if not rs:
            return None
        lo, hi = _quartiles(rs)
        return _median(rs), lo, hi

    results = []
    for v in variants:
        flat = [t for blk in times[v.name] for t in blk]
        med = _median(flat)
        lo, hi = _quartiles(flat)
        m = meta[v.name]
        row: dict[str, Any] = {
            "name": v.name, **m,
            "median_ms": med * 1e3, "mean_ms": statistics.fmean(flat) * 1e3, "q1_ms": lo * 1e3, "q3_ms": hi * 1e3,
            "timed_steps": len(flat), "images_per_s": cfg.batch / med if med > 0 else None,
            "times_s": times[v.name],  # raw step times, one list per round (in the order run)
        }
        if v.name in mem:
            row["peak_mem_mb"] = mem[v.name][0] / 2**20 if mem[v.name][0] is not None else None
        if isinstance(v, MethodVariant):
            fl = floors[m["setup"]].name
            for ref_name, key in ((fl, "floor"), ("kd", "kd"), ("dml", "dml")):
                if ref_name == v.name or ref_name not in by_name:
                    continue
                if key == "kd" and (m["kind"] != "offline" or meta["kd"]["setup"] != m["setup"]):
                    continue
                if key == "dml" and (m["kind"] != "online" or meta["dml"]["setup"] != m["setup"]):
                    continue
                p = paired(v.name, ref_name)
                if p:
                    row[f"x_{key}"], row[f"x_{key}_q1"], row[f"x_{key}_q3"] = p
            if m["balancer"] != "fixed" and m["method"] in by_name:
                p = paired(v.name, m["method"])
                if p:
                    row["x_fixed"], row["x_fixed_q1"], row["x_fixed_q3"] = p
            row["paused_frac"] = v.paused / max(v.steps, 1)
            if m["kind"] == "online" and "dml" in by_name and v.name != "dml":
                # epoch time ∝ mean step time: SwitOKD's expert steps are cheaper than its learning steps
                rs = [statistics.fmean(a) / statistics.fmean(b) for a, b in zip(times[v.name], times["dml"])]
                row["x_dml_mean"] = _median(rs)
            tgt = _target(m["method"], v.balancer, m)
            if tgt:
                ref, limit = tgt
                got = row.get(f"x_{ref}")
                row["target"] = f"≤ {limit:.2f}× {ref}"
                row["met"] = None if got is None else bool(got <= limit)
        results.append(row)
    return results


def _target(method: str, balancer: dict[str, Any], m: dict[str, Any]) -> tuple[str, float] | None:
    if balancer != {"name": "fixed"}:
        for pattern, tgt in BALANCER_TARGETS:
            opts = {"over": "logits", "every": 1, **balancer}
            if all(opts.get(k) == v for k, v in pattern.items()):
                return tgt
        return None
    from adaptkd.methods import method_class

    target = method_class(method).spec.speed_target
    if target is not None:
        return target
    if m["kind"] == "offline" and not m["taps"] and not m["method_params"] and method != "ce":
        return ("floor", 1.05)  # an offline logit method
    return None


def render_table(report: dict[str, Any]):
    """A rich Table of a bench report."""
    from rich.table import Table

    mi = report["machine"]
    st = report["settings"]
    t = Table(title=f"adaptkd bench — {st['teacher']}→{st['student']}, batch {st['batch']}, {mi['device']}, "
                    f"{st['precision']}, {mi['threads']} thread(s), {mi['cpu']}")
    for col in ("variant", "networks (frozen→learners)", "median ms", "×floor", "×kd", "×dml", "×fixed", "peak MB",
                "img/s", "target", "met"):
        t.add_column(col, justify="left" if col in ("variant", "networks (frozen→learners)", "target") else "right",
                     no_wrap=col != "networks (frozen→learners)")

    def fmt(x, spec=".3f"):
        return "" if x is None else format(x, spec)

    from rich.markup import escape

    for r in report["results"]:
        met = r.get("met")
        t.add_row(
            escape(r["name"]), escape(r["setup"]), fmt(r["median_ms"], ".1f"),
            fmt(r.get("x_floor")), fmt(r.get("x_kd")),
            fmt(r.get("x_dml")), fmt(r.get("x_fixed")), fmt(r.get("peak_mem_mb"), ".1f"),
            fmt(r.get("images_per_s"), ".1f"),
            r.get("target", ""), "" if met is None else ("yes" if met else "NO"),
        )
    for s in report.get("skipped", []):
        t.add_row(escape(s["name"]), escape("skipped: " + s["reason"][:90]), *[""] * 9)
    return t


def markdown_table(report: dict[str, Any]) -> str:
    """The bench report as a Markdown table (ratios with their interquartile range over rounds)."""
    mi, st = report["machine"], report["settings"]

    def ratio(r: dict[str, Any], key: str) -> str:
        if f"x_{key}" not in r:
            return ""
        return f"{r[f'x_{key}']:.3f} ({r[f'x_{key}_q1']:.3f}–{r[f'x_{key}_q3']:.3f})"

    lines = [
        f"{st['teacher']}→{st['student']}, batch {st['batch']}, {st['image_size']}px, {st['num_classes']} classes, "
        f"{mi['device']}, {st['precision']}, {mi['threads']} thread(s); {mi['cpu']}, {mi['cores']} cores, "
        f"torch {mi['torch']}; {st['warmup']} warm-up + {st['steps']} timed steps per variant in blocks of "
        f"{st['block']}, interleaved; {report.get('timing')}; load average at the end {mi.get('load_avg')}.",
        "",
        "| variant | networks (frozen→learners) | median ms | ×floor (IQR) | ×kd (IQR) | ×dml (IQR) | ×fixed (IQR) "
        "| peak MB | img/s | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        met = r.get("met")
        mem = r.get("peak_mem_mb")
        lines.append(
            f"| {r['name']} | {r['setup']} | {r['median_ms']:.1f} | {ratio(r, 'floor')} | {ratio(r, 'kd')} | "
            f"{ratio(r, 'dml')} | {ratio(r, 'fixed')} | {'' if mem is None else f'{mem:.1f}'} | "
            f"{r['images_per_s']:.1f} | {r.get('target', '')} | {'' if met is None else ('yes' if met else 'no')} |")
    for sk in report.get("skipped", []):
        lines.append(f"| {sk['name']} | skipped: {sk['reason']} | | | | | | | | | |")
    return "\n".join(lines)
