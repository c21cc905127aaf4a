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

Besides the registered methods and balancers, a bench can time variants of a method with other
options (``--variant LABEL=METHOD:key=value``), several teachers of different architectures
(``--teacher a,b:key=value,hf:FOLDER``), each method alone on one step's fixed logits and features
(:class:`AloneVariant`) and each method in a hand-written loop over :class:`adaptkd.Distiller`
(:class:`DistillerVariant`). Balancers, variants and networks share one option syntax,
``NAME:key=value:...`` (:func:`parse_options`). On the CPU every step is timed by both clocks (wall
and process CPU time); ``--clock`` picks the one the ratios use.

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
import re
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptkd.errors import ConfigError

__all__ = ["BenchConfig", "run_bench", "machine_info", "parse_options", "parse_balancer", "parse_variant",
           "parse_network", "split_list", "method_setup", "render_table", "markdown_table"]

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

    teacher: str = "resnet32x4"  # comma-separated network specs (several teachers for multi-teacher methods)
    student: str = "resnet8x4"  # a network spec: ARCH[:key=value:...]
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
    variants: list[str] = field(default_factory=list)  # "LABEL=METHOD:key=value:..." (fixed balancer)
    method_alone: bool = False  # also time each method alone on fixed logits/features (forward + backward)
    distiller: bool = False  # also time each method as a hand-written loop over adaptkd.Distiller


_OPTION = re.compile(r":(?=\s*[A-Za-z_][\w.]*\s*=)")  # a ':' that starts a key=value option


def parse_options(spec: str, what: str = "spec") -> tuple[str, dict[str, Any]]:
    """``"NAME:key=value:key=value"`` → ``(NAME, {key: value})``, values read as YAML.

    The one option syntax of ``adaptkd bench`` (balancers, ``--variant`` methods, networks). A
    ``:`` splits only where ``key=`` follows it, so names (``hf:org/model``) and values (``[1, 2]``,
    ``{a: 1}``) may hold colons. ``what`` names the option in errors (ValueError).
    """
    import yaml

    name, *opts = [p.strip() for p in _OPTION.split(spec.strip())]
    if not name or "=" in name:
        raise ValueError(f"{what} {spec!r}: expected NAME:key=value:..., got no name")
    out: dict[str, Any] = {}
    for o in opts:
        k, _, v = o.partition("=")
        if not v.strip():
            raise ValueError(f"{what} {spec!r}: option {k.strip()!r} has no value (expected key=value; "
                             "key=null for none)")
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what} {spec!r}: option {k.strip()!r}: cannot read value {v!r} "
                             f"({str(exc).splitlines()[0]})") from None
    return name, out


def _plain_name(name: str, spec: str, what: str) -> str:
    """A registry name (method, balancer): no ':' left after the options were split off."""
    if ":" in name:
        raise ValueError(f"{what} {spec!r}: expected name:key=value:..., got {name.partition(':')[2]!r}")
    return name


def parse_balancer(spec: str) -> dict[str, Any]:
    """``"gradient:over=params:every=10"`` → ``{"name": "gradient", "over": "params", "every": 10}``."""
    name, opts = parse_options(spec, "balancer spec")
    return {"name": _plain_name(name, spec, "balancer spec"), **opts}


def parse_variant(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``"LABEL=METHOD:key=value:..."`` → ``(LABEL, METHOD, options)``: method ``METHOD`` with its
    spec's example options updated by these (``unic_last=unic:student_blocks=[-1]``)."""
    label, eq, rest = spec.partition("=")
    label = label.strip()
    if not eq or not label or not re.fullmatch(r"[\w.-]+", label) or not rest.strip():
        raise ValueError(f"--variant {spec!r}: expected LABEL=METHOD[:key=value:...] with a LABEL of letters, "
                         "digits and _.-, e.g. unic_last=unic:student_blocks=[-1]")
    method, opts = parse_options(rest, f"--variant {label!r}:")
    return label, _plain_name(method, rest, f"--variant {label!r}:"), opts


#: options of a ``--teacher`` / ``--student`` entry that are network fields; any other key is a
#: builder argument (``args``)
NET_FIELDS = ("input_size", "mean", "std")


def parse_network(spec: str) -> dict[str, Any]:
    """``"vit_tiny:img_size=16:depth=4"`` → ``{"arch": "vit_tiny", "args": {"img_size": 16, "depth": 4}}``
    (``input_size``, ``mean`` and ``std`` stay network fields)."""
    arch, opts = parse_options(spec, "network")
    net: dict[str, Any] = {"arch": arch, **{k: v for k, v in opts.items() if k in NET_FIELDS}}
    args = {k: v for k, v in opts.items() if k not in NET_FIELDS}
    return {**net, "args": args} if args else net


def split_list(text: str) -> list[str]:
    """Comma-separated entries; commas inside brackets or braces (``mean=[0.5,0.5,0.5]``) do not split."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth <= 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [t.strip() for t in out if t.strip()]


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
    kind: str  # "method" | "floor" | "alone" | "distiller"

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
        x = fixed_input(trainer, xb)
        views = trainer.distiller.teacher_inputs
        with torch.no_grad():  # each teacher's own input (size, normalisation), prepared outside the timed step
            xt = views(x) if views is not None else {}
        self.x_frozen = [xt.get(n, x) for n in trainer.frozen]
        self.x, self.y = x, yb.to(dev)
        self.autocast = trainer.autocast
        self.scaler = torch.amp.GradScaler(dev.type, enabled=trainer.precision == "fp16")

    def step(self) -> None:
        with self.autocast():
            for net, xf in zip(self.fwd_frozen, self.x_frozen):
                with torch.no_grad():
                    net(xf)
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


class AloneVariant(_Variant):
    """The method alone: its forward and the balancer's backward on the logits and features of one
    step, held fixed (the learners' as leaf tensors, so the backward stops there; no network runs):
    what the method adds to its floor, free of the networks' noise."""

    kind = "alone"

    def __init__(self, mv: MethodVariant) -> None:
        tr = mv.trainer
        self.name, self.of, self.d, self.epoch, self.steps = f"{mv.name}[alone]", mv.name, tr.distiller, mv.epoch, 0
        self.x, self.y = fixed_input(tr, mv.xb), mv.yb.to(tr.device)
        with torch.no_grad():
            logits, feats = tr.forward_all(self.x)
        learners = set(self.d.learner_names)

        def leaf(v: Any, grad: bool) -> Any:
            if not isinstance(v, Tensor):
                return v
            v = v.detach().clone()
            return v.requires_grad_() if grad and v.is_floating_point() else v

        self.logits = {k: leaf(v, k in learners) for k, v in logits.items()}
        self.feats = {n: {k: leaf(v, n in learners) for k, v in f.items()} for n, f in feats.items()}
        self.params = {n: [t for t in (self.logits.get(n), *self.feats.get(n, {}).values())
                           if isinstance(t, Tensor) and t.requires_grad] for n in self.d.learner_names}
        self.zero = [t for ts in self.params.values() for t in ts] + list(self.d.method.parameters())

    def step(self) -> None:
        from adaptkd.balance import BackwardContext
        from adaptkd.methods import StepIn

        for t in self.zero:
            t.grad = None
        d = self.d
        out = d.method(StepIn(x=self.x, y=self.y, epoch=self.epoch, step=self.steps, logits=self.logits,
                              feats=self.feats))
        stepping = [n for n in d.learner_names if out.stepping is None or n in out.stepping]
        params = cast(dict[str, list[nn.Parameter]], self.params)  # leaf tensors: only their gradients are read
        d.balancer.backward(out, BackwardContext(params=params, extra_params=d.extra_params,
                                                 task_terms=d.method.task_terms, stepping=stepping,
                                                 step=self.steps, comm=d.comm))
        self.steps += 1


class DistillerVariant(_Variant):
    """The method in a hand-written loop over :class:`adaptkd.Distiller` (the trainer's, with its
    optimisers) on the already augmented batch: ``out = distiller(x, y)``, ``distiller.backward(out)``,
    ``distiller.step(optimisers, out)`` — the engine's step without augmentation, learning-rate
    schedule and non-finite checks."""

    kind = "distiller"

    def __init__(self, mv: MethodVariant) -> None:
        tr = mv.trainer
        self.name, self.of, self.d, self.epoch = f"{mv.name}[distiller]", mv.name, tr.distiller, mv.epoch
        self.optims, self.autocast, self.scaler = tr.optims, tr.autocast, tr.scaler
        self.x, self.y = fixed_input(tr, mv.xb), mv.yb.to(tr.device)

    def step(self) -> None:
        with self.autocast():
            out = self.d(self.x, self.y, epoch=self.epoch)
        for opt in self.optims.values():
            opt.zero_grad(set_to_none=True)
        self.d.backward(out, scaler=self.scaler)
        self.d.step(self.optims, out, scaler=self.scaler)


def fixed_input(trainer, xb: Tensor) -> Tensor:
    """The batch as the networks see it (normalised, no random augmentation; channels_last if set)."""
    x = trainer.eval_aug(xb.to(trainer.device))
    if trainer.cfg.run.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _net_label(net) -> str:
    args = ",".join(f"{k}={v}" for k, v in net.args.items())
    return net.arch + (f"({args})" if args else "")


def setup_key(trainer) -> str:
    frozen = "+".join(_net_label(trainer.net_cfgs[n]) for n in trainer.frozen) or "-"
    learners = "+".join(_net_label(trainer.net_cfgs[n]) for n in trainer.learners)
    return f"{frozen}→{learners}"


# --------------------------------------------------------------------------------------------
# Timing and memory


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


def method_setup(method: str, options: dict[str, Any] | None = None, teachers: int = 1) -> dict[str, Any]:
    """The networks and options of ``method``'s example run (its spec's ``example``), its options
    updated by ``options`` (a ``--variant``). Network entries are slots (None) that
    :func:`build_config` fills from ``--teacher`` / ``--student``. With ``teachers`` > 1 (several
    ``--teacher`` networks) a method that takes frozen teachers gets as many as it accepts, at least
    its example's count."""
    from pydantic import ValidationError

    from adaptkd.methods import method_class

    cls = method_class(method)
    ex = cls.spec.example
    opts = {**ex.options, **(options or {})}
    try:
        needs = cls.network_needs(cls.Params.model_validate(opts))
    except ValidationError:  # bad options: the config check names them (the setup here is never run)
        needs = cls.network_needs(cls.Params.model_validate(dict(ex.options)))
    pick = [(ex.frozen, needs.frozen), (ex.trainable, needs.trainable), (ex.peers, needs.peers)]
    frozen, trainable, peers = (given if given is not None else count[0] for given, count in pick)
    if frozen and teachers > frozen:
        most = needs.frozen[1]
        frozen = teachers if most is None else max(frozen, min(teachers, most))
    return {"frozen": [None] * frozen, "trainable": [None] * trainable, "peers": [None] * peers, "options": opts}


def _net_list(entries: list[Any], nets: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    """Slot i: its own network if given, else ``nets[i]`` (cycling), with ``extra`` fields."""
    return [{**(a if a is not None else nets[i % len(nets)]), **extra} for i, a in enumerate(entries)]


def build_config(cfg: BenchConfig, method: str, setup: dict[str, Any], balancer: dict[str, Any], out: str) -> dict:
    """The experiment config of one variant (random-init teachers, synthetic data, no logging)."""
    tnets = [parse_network(t) for t in split_list(cfg.teacher)]
    student = parse_network(cfg.student)
    teachers = _net_list(setup.get("frozen", []), tnets, random_init=True)
    teachers += _net_list(setup.get("trainable", []), tnets, trainable=True)
    return {
        "data": {"name": "synthetic", "batch_size": cfg.batch, "image_size": cfg.image_size,
                 "num_classes": cfg.num_classes, "augment": True},
        "student": dict(setup.get("student", student)),
        "teachers": teachers,
        "peers": _net_list(setup.get("peers", []), [student]),
        "method": {"name": method, **setup.get("options", {})},
        "balance": dict(balancer),
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 240,
                  "milestones": [150, 180, 210]},
        "run": {"out": out, "seed": 0, "device": cfg.device, "precision": cfg.precision, "log_every": 1_000_000,
                "progress": False, "tensorboard": False, "latency": False, "overwrite": True,
                "channels_last": cfg.channels_last, "compile": cfg.compile, "threads": cfg.threads},
    }


def _resolve_setup(cfg: BenchConfig, method: str, balancer: dict[str, Any], tmp: str,
                   options: dict[str, Any] | None = None) -> tuple[dict, dict] | str:
    """(setup, validated config dict) of the method's example (updated by ``options``), or why it was refused."""
    from adaptkd.config import load_config

    setup = method_setup(method, options, teachers=len(split_list(cfg.teacher)))
    raw = build_config(cfg, method, setup, balancer, tmp)
    try:
        load_config(raw)
    except ConfigError as exc:
        return str(exc).splitlines()[0]
    return setup, raw


# --------------------------------------------------------------------------------------------


def _check_variants(cfg: BenchConfig, known: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """The parsed ``--variant`` entries; ConfigError naming the entry, the option and its value."""
    from pydantic import ValidationError

    from adaptkd.methods import list_methods, method_class

    out: list[tuple[str, str, dict[str, Any]]] = []
    for spec in cfg.variants:
        try:
            label, method, opts = parse_variant(spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if method not in list_methods():
            raise ConfigError(f"--variant {spec!r}: unknown method {method!r}; registered: {', '.join(list_methods())}")
        if label in list_methods() or label in known or label in [v[0] for v in out]:
            raise ConfigError(f"--variant {spec!r}: the label {label!r} is already taken (a method or another "
                              "variant); choose another")
        cls = method_class(method)
        try:
            cls.Params.model_validate({**cls.spec.example.options, **opts})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err.get("loc", ())) or "?"
            given = opts.get(str(err["loc"][0]), "(missing)") if err.get("loc") else "(missing)"
            raise ConfigError(f"--variant {spec!r}: method {method!r} option {key}={given!r}: {err.get('msg')}; "
                              f"its options: {', '.join(cls.Params.model_fields)}") from None
        out.append((label, method, opts))
    return out


def _check_networks(cfg: BenchConfig) -> None:
    """ConfigError naming the flag and the entry for a network that does not parse or (zoo models,
    built on the meta device: no memory, no time) cannot be built with its args."""
    from pydantic import ValidationError

    from adaptkd.config.schema import NetConfig
    from adaptkd.engine.networks import build_network
    from adaptkd.models.registry import namespace_of

    for flag, text in (("--teacher", cfg.teacher), ("--student", cfg.student)):
        entries = split_list(text)
        if not entries or (flag == "--student" and len(entries) > 1):
            raise ConfigError(f"{flag}: {text!r}: expected {'one network' if flag == '--student' else 'networks'} "
                              "ARCH[:key=value:...]" + (", comma-separated" if flag == "--teacher" else ""))
        for e in entries:
            try:
                net = NetConfig.model_validate(parse_network(e))
            except ValueError as exc:
                if isinstance(exc, ValidationError):
                    err = exc.errors()[0]
                    key = err["loc"][0] if err.get("loc") else "?"
                    exc = ValueError(f"network {e!r}: {key}={err.get('input')!r}: {err['msg']}")
                raise ConfigError(f"{flag}: {exc}") from None
            if namespace_of(net.arch) is None:  # ecosystem models are checked when the engine loads them
                with torch.device("meta"):
                    build_network(net, cfg.num_classes, 3, field=f"{flag} {e}")


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
    _check_networks(cfg)
    methods = list(cfg.methods) if cfg.methods else list_methods()
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {unknown}; registered: {', '.join(list_methods())}")
    balancers = []
    for spec in cfg.balancers:
        try:
            balancers.append(parse_balancer(spec))
        except ValueError as exc:
            raise ConfigError(f"--balancers: {exc}") from None
    for b in balancers:
        if b["name"] not in list_balancers():
            raise ConfigError(f"--balancers: unknown balancer {b['name']!r}; registered: {', '.join(list_balancers())}")
    if not any(b["name"] == "fixed" and len(b) == 1 for b in balancers):
        balancers.insert(0, {"name": "fixed"})
    variant_specs = _check_variants(cfg, methods)
    # references: kd for offline methods, dml for online ones
    kinds = {m: method_class(m).kind for m in [*methods, *(v[1] for v in variant_specs)]}
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
        plan: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []  # label, method, balancer, options
        for m in methods:
            for b in balancers:
                is_fixed = b["name"] == "fixed" and len(b) == 1
                if not is_fixed and cfg.balancer_methods is not None and m not in cfg.balancer_methods:
                    continue
                plan.append((m if is_fixed else f"{m}+{_balancer_label(b)}", m, b, None))
        plan += [(label, m, {"name": "fixed"}, opts) for label, m, opts in variant_specs]
        for label, m, b, opts in plan:
            res = _resolve_setup(cfg, m, b, os.path.join(tmp, "check"), opts)
            if isinstance(res, str):
                if opts is not None:  # the user's own variant: refused, not skipped
                    raise ConfigError(f"--variant {label!r}: {res}")
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
                           "method_params": sum(p.numel() for p in tr.method.parameters()),
                           "options": {k: v for k, v in (opts or {}).items()}}
            if key not in floors:
                floors[key] = FloorVariant(f"floor[{key}]", tr, xb, yb)
                variants.append(floors[key])
                meta[floors[key].name] = {"method": None, "balancer": None, "kind": "floor", "setup": key}
            extras: list[type[_Variant]] = ([AloneVariant] if cfg.method_alone else []) + \
                ([DistillerVariant] if cfg.distiller else [])
            for kind in extras:
                try:
                    ev = kind(mv)  # type: ignore[call-arg]
                    ev.step()
                except Exception as exc:  # noqa: BLE001 - the extra measurement of one method may not apply
                    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    if kind is AloneVariant:
                        reason = (f"the method alone (fixed logits and features, no networks) cannot run with "
                                  f"balancer {_balancer_label(b)}: {reason}")
                    skipped.append({"name": f"{label}[{kind.kind}]", "reason": reason})
                    log(f"bench: {label}[{kind.kind}] failed: {reason}")
                    continue
                variants.append(ev)
                meta[ev.name] = {**meta[label], "kind": ev.kind, "of": label}
        if not any(v.kind == "method" for v in variants):
            raise ConfigError("bench: no method could be benchmarked with these settings: "
                              + "; ".join(f"{s['name']}: {s['reason']}" for s in skipped))

        log(f"bench: {sum(v.kind != 'floor' for v in variants)} variant(s), {len(floors)} floor(s); "
            f"{cfg.warmup} warm-up + {cfg.steps} timed steps each, blocks of {cfg.block}, interleaved")
        for v in variants:
            for _ in range(cfg.warmup):
                v.step()
        rounds = max(1, math.ceil(cfg.steps / cfg.block))
        times: dict[str, list[list[float]]] = {v.name: [] for v in variants}
        other: dict[str, list[list[float]]] = {v.name: [] for v in variants}
        t_start = time.perf_counter()
        for r in range(rounds):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                main, second = _time_block(v.step, cfg.block, device, cfg.clock)
                times[v.name].append(main)
                if second is not None:
                    other[v.name].append(second)
            for v in variants:
                if isinstance(v, MethodVariant):
                    v.check()
            if (r + 1) % max(1, rounds // 10) == 0 or r + 1 == rounds:
                log(f"bench: round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")
        mem: dict[str, tuple[int | None, str]] = {}
        if cfg.memory:
            for v in variants:
                if v.kind != "alone":
                    mem[v.name] = step_peak_memory(v.step, device)

        results = _summarise(cfg, variants, times, other, mem, meta, floors)
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
                   "process CPU time (time.process_time) around each step, wall time beside it"
                   if cfg.clock == "cpu" else "time.perf_counter around each step, process CPU time beside it"),
        "other_clock": None if device.type == "cuda" else ("wall" if cfg.clock == "cpu" else "cpu"),
    }
    out = Path(os.path.expanduser(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "bench.md").write_text(markdown_table(report) + "\n", encoding="utf-8")
    report["path"] = str(out / "bench.json")
    return report


def _summarise(cfg, variants, times, other, mem, meta, floors) -> list[dict[str, Any]]:
    by_name = {v.name: v for v in variants}
    med_round = {n: [_median(b) for b in blocks] for n, blocks in times.items()}
    med_other = {n: [_median(b) for b in blocks] for n, blocks in other.items() if blocks}
    flat = {n: [t for blk in blocks for t in blk] for n, blocks in times.items()}

    def paired(a: str, b: str, rounds: dict[str, list[float]] = med_round) -> tuple[float, float, float] | None:
        if a not in rounds or b not in rounds:
            return None
        rs = [x / y for x, y in zip(rounds[a], rounds[b]) if y > 0]
        if not rs:
            return None
        lo, hi = _quartiles(rs)
        return _median(rs), lo, hi

    def ratios(row: dict[str, Any], a: str, b: str, key: str) -> None:
        """x_KEY (+ IQR): paired median ratio; x_KEY_means: ratio of mean step times (steps that are
        dearer every N-th time count); x_KEY_other: the paired ratio by the other clock (CPU)."""
        p = paired(a, b)
        if p is None:
            return
        row[f"x_{key}"], row[f"x_{key}_q1"], row[f"x_{key}_q3"] = p
        row[f"x_{key}_means"] = statistics.fmean(flat[a]) / statistics.fmean(flat[b])
        q = paired(a, b, med_other)
        if q is not None:
            row[f"x_{key}_other"] = q[0]

    alone = {meta[v.name]["of"]: v.name for v in variants if v.kind == "alone"}
    results = []
    for v in variants:
        if v.kind == "alone":
            continue
        med = _median(flat[v.name])
        lo, hi = _quartiles(flat[v.name])
        m = meta[v.name]
        row: dict[str, Any] = {
            "name": v.name, **m,
            "median_ms": med * 1e3, "mean_ms": statistics.fmean(flat[v.name]) * 1e3, "q1_ms": lo * 1e3,
            "q3_ms": hi * 1e3, "timed_steps": len(flat[v.name]), "images_per_s": cfg.batch / med if med > 0 else None,
            "times_s": times[v.name],  # raw step times, one list per round (in the order run)
        }
        if other[v.name]:
            other_med = _median([t for blk in other[v.name] for t in blk]) * 1e3
            row["cpu_median_ms"], row["wall_median_ms"] = ((med * 1e3, other_med) if cfg.clock == "cpu"
                                                           else (other_med, med * 1e3))
            row["times_other_s"] = other[v.name]
        if v.name in mem:
            row["peak_mem_mb"] = mem[v.name][0] / 2**20 if mem[v.name][0] is not None else None
        if isinstance(v, DistillerVariant):
            ratios(row, v.name, floors[m["setup"]].name, "floor")
            ratios(row, v.name, v.of, "engine")
        if isinstance(v, MethodVariant):
            fl = floors[m["setup"]].name
            for ref_name, key in ((fl, "floor"), ("kd", "kd"), ("dml", "dml")):
                if ref_name == v.name or ref_name not in by_name:
                    continue
                if key == "kd" and (m["kind"] != "offline" or meta["kd"]["setup"] != m["setup"]):
                    continue
                if key == "dml" and (m["kind"] != "online" or meta["dml"]["setup"] != m["setup"]):
                    continue
                ratios(row, v.name, ref_name, key)
            if m["balancer"] != "fixed" and m["method"] in by_name:
                ratios(row, v.name, m["method"], "fixed")
            if v.name in alone:
                a_name = alone[v.name]
                row["alone_ms"] = _median(flat[a_name]) * 1e3
                rs = [(f + x) / f for f, x in zip(med_round[fl], med_round[a_name]) if f > 0]
                row["x_floor_with_alone"] = _median(rs)  # (floor + the method alone) / floor, paired over rounds
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


def _variant_cell(r: dict[str, Any]) -> str:
    """The row's label, with the method and options of a ``--variant``."""
    opts = r.get("options") or {}
    if not opts:
        return r["name"]
    return f"{r['name']} ({r['method']}: {', '.join(f'{k}={v}' for k, v in opts.items())})"


def _columns(report: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """(header, cell) of every column of the bench table; the other clock's median and the
    method-alone columns only when measured."""

    def fmt(x: Any, spec: str = ".3f") -> str:
        return "" if x is None else format(x, spec)

    def ratio(key: str) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            if f"x_{key}" not in r:
                return ""
            return f"{r[f'x_{key}']:.3f} ({r[f'x_{key}_q1']:.3f}–{r[f'x_{key}_q3']:.3f})"
        return cell

    rows = report["results"]
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("variant", _variant_cell), ("networks (frozen→learners)", lambda r: r["setup"]),
        ("median ms", lambda r: fmt(r["median_ms"], ".1f"))]
    oc = report.get("other_clock")
    if oc and any(f"{oc}_median_ms" in r for r in rows):
        cols.append((f"{'CPU' if oc == 'cpu' else 'wall'} ms", lambda r: fmt(r.get(f"{oc}_median_ms"), ".1f")))
    cols += [("×floor (IQR)", ratio("floor")), ("×kd (IQR)", ratio("kd")), ("×dml (IQR)", ratio("dml")),
             ("×fixed (IQR)", ratio("fixed"))]
    if any("x_engine" in r for r in rows):
        cols.append(("×engine (IQR)", ratio("engine")))
    if any("alone_ms" in r for r in rows):
        cols += [("alone ms", lambda r: fmt(r.get("alone_ms"), ".2f")),
                 ("(floor+alone)/floor", lambda r: fmt(r.get("x_floor_with_alone")))]
    cols += [("peak MB", lambda r: fmt(r.get("peak_mem_mb"), ".1f")),
             ("img/s", lambda r: fmt(r.get("images_per_s"), ".1f")),
             ("target", lambda r: r.get("target", "")),
             ("met", lambda r: "" if r.get("met") is None else ("yes" if r["met"] else "no"))]
    return cols


def render_table(report: dict[str, Any]):
    """A rich Table of a bench report."""
    from rich.markup import escape
    from rich.table import Table

    mi = report["machine"]
    st = report["settings"]
    t = Table(title=f"adaptkd bench — {st['teacher']}→{st['student']}, batch {st['batch']}, {mi['device']}, "
                    f"{st['precision']}, {mi['threads']} thread(s), {mi['cpu']}")
    cols = _columns(report)
    for col, _ in cols:
        head = col.replace(" (IQR)", "")
        t.add_column(head, justify="left" if col in ("variant", "networks (frozen→learners)", "target") else "right",
                     no_wrap=col != "networks (frozen→learners)")
    for r in report["results"]:
        cells = [cell(r) for _, cell in cols]
        cells = [c.split(" (")[0] if h.endswith("(IQR)") else c for (h, _), c in zip(cols, cells)]
        cells[-1] = {"no": "NO"}.get(cells[-1], cells[-1])
        t.add_row(*[escape(c) for c in cells])
    for s in report.get("skipped", []):
        t.add_row(escape(s["name"]), escape("skipped: " + s["reason"][:90]), *[""] * (len(cols) - 2))
    return t


def markdown_table(report: dict[str, Any]) -> str:
    """The bench report as a Markdown table (ratios with their interquartile range over rounds)."""
    mi, st = report["machine"], report["settings"]
    cols = _columns(report)
    lines = [
        f"{st['teacher']}→{st['student']}, batch {st['batch']}, {st['image_size']}px, {st['num_classes']} classes, "
        f"{mi['device']}, {st['precision']}, {mi['threads']} thread(s); {mi['cpu']}, {mi['cores']} cores, "
        f"torch {mi['torch']}; {st['warmup']} warm-up + {st['steps']} timed steps per variant in blocks of "
        f"{st['block']}, interleaved; {report.get('timing')}; load average at the end {mi.get('load_avg')}.",
        "",
        "| " + " | ".join(h for h, _ in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in report["results"]:
        lines.append("| " + " | ".join(cell(r) for _, cell in cols) + " |")
    for sk in report.get("skipped", []):
        lines.append(f"| {sk['name']} | skipped: {sk['reason']} |" + " |" * (len(cols) - 2))
    return "\n".join(lines)
