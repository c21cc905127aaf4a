"""Running ``adaptkd bench``: its settings (:class:`BenchConfig`), each variant's experiment config,
the checks of the flags, the interleaved measurement (:func:`run_bench`) and the summary rows."""

from __future__ import annotations

import json
import math
import os
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

from adaptkd.bench.options import _balancer_label, parse_balancer, parse_network, parse_variant, split_list
from adaptkd.bench.table import markdown_table
from adaptkd.bench.timing import _maxrss_mb, _median, _quartiles, _time_block, machine_info, step_peak_memory
from adaptkd.bench.variants import AloneVariant, DistillerVariant, FloorVariant, MethodVariant, _Variant, setup_key
from adaptkd.errors import ConfigError

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
