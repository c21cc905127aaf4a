"""The configuration schema: pydantic models of every section, YAML reading and overrides.

One YAML file describes one experiment. It is read with ``yaml.safe_load`` (nothing in a config
can import or execute code), merged with ``key=value`` overrides, and validated by pydantic
before anything runs. Every error is a :class:`ConfigError` whose message names the field, the
value and what was expected.

This module knows no registry: checking names and options against the registered models,
methods, balancers and datasets is :mod:`adaptkd.config.validate`'s job.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adaptkd.errors import ConfigError

__all__ = [
    "ConfigError",
    "Config",
    "DataConfig",
    "NetConfig",
    "MethodConfig",
    "BalanceConfig",
    "OptimConfig",
    "RunConfig",
    "TeachersCacheConfig",
    "apply_overrides",
    "format_validation_error",
    "config_to_dict",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """``data:`` — which dataset, where, how it is batched and augmented."""

    name: str = "digits"
    root: str | None = None
    download: bool = False
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    image_size: int | None = Field(None, ge=4)
    num_classes: int | None = Field(None, ge=2)
    train_size: int | None = Field(None, ge=1)
    test_size: int | None = Field(None, ge=1)
    data_seed: int = 0
    # validation split held out of the training split (class-stratified, by data_seed); chooses best.pt
    val_size: int = Field(0, ge=0)
    # augmentation: auto = the dataset's default (stated in the log and written into the run's config)
    augment: bool | Literal["auto", "cifar", "imagenet", "none"] = "auto"
    crop_padding: int | None = Field(None, ge=0)
    flip: bool | None = None
    crop_ratio: float = Field(0.875, gt=0, le=1)
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    drop_last: bool = False
    # reading: in memory or streamed through DataLoader workers
    cache: Literal["auto", "memory", "none"] = "auto"
    cache_budget_mb: int = Field(2048, ge=0)
    workers: int | None = Field(None, ge=0)
    prefetch: int = Field(2, ge=1)
    channels: Literal[1, 3] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    stats_samples: int = Field(10000, ge=1)
    on_bad_image: Literal["stop", "skip"] = "stop"
    # sources: hf (hub id or local path in root), webdataset (shard patterns in root / test_root)
    test_root: str | None = None
    split: str = "train"
    test_split: str | None = None
    image_key: str = "image"
    label_key: str = "label"
    streaming: bool = False
    source: str | None = None  # what data passed from Python was (name: python); informational

    @field_validator("rrc_scale", "rrc_ratio")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"must be a range (low, high) with 0 < low <= high, got {list(v)}")
        return v


class OptimConfig(_Strict):
    """``optim:`` — optimiser and learning-rate schedule (per learner overrides in ``NetConfig.optim``)."""

    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    no_decay_1d: bool = False
    epochs: int = Field(240, ge=1)
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(0.0, ge=0)

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v) or sorted(v) != v:
            raise ValueError(f"milestones must be increasing epochs ≥ 1, got {v}")
        return v


class NetConfig(_Strict):
    """A network: the student, a teacher or an online peer."""

    arch: str
    checkpoint: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    trainable: bool = False
    random_init: bool = False
    optim: dict[str, Any] | None = None
    name: str | None = None
    #: what a frozen teacher was trained for (overrides its model's own spec; see docs/ecosystem.md)
    input_size: int | list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: int | list[int] | None) -> int | list[int] | None:
        if v is not None and not ((isinstance(v, int) and v >= 1) or (isinstance(v, list) and len(v) == 2
                                                                       and all(i >= 1 for i in v))):
            raise ValueError(f"input_size is an int >= 1 or [height, width], got {v!r}")
        return v


class MethodConfig(BaseModel):
    """``method:`` — ``name`` plus that method's own options (validated by the method)."""

    model_config = ConfigDict(extra="allow")
    name: str = "kd"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BalanceConfig(BaseModel):
    """``balance:`` — ``name`` plus the balancer's own options (validated by the balancer)."""

    model_config = ConfigDict(extra="allow")
    name: str = "fixed"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RunConfig(_Strict):
    """``run:`` — output folder, seed, device, precision, logging."""

    out: str = "runs/exp"
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    log_every: int = Field(50, ge=1)
    eval_every: int = Field(1, ge=1)
    nonfinite: Literal["stop", "skip"] = "stop"
    deterministic: bool = False
    compile: bool = False
    channels_last: bool = False
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = Field(None, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    checkpoint_every_steps: int | None = Field(None, ge=1)  # also write last.pt inside an epoch, every N steps
    latency: bool = True
    overwrite: bool = False


class TeachersCacheConfig(_Strict):
    """``teachers_cache:`` — replay the frozen teachers' outputs from files written by
    ``adaptkd cache-teacher`` instead of running the teachers each step (see docs/replay.md)."""

    path: str
    epochs: int | None = Field(None, ge=1)
    dtype: Literal["fp16", "fp32"] = "fp16"
    topk: int | None = Field(None, ge=1)


class Config(_Strict):
    """A whole experiment."""

    data: DataConfig = Field(default_factory=DataConfig)
    student: NetConfig = Field(default_factory=lambda: NetConfig(arch="cnn_small"))
    teachers: list[NetConfig] = Field(default_factory=list)
    peers: list[NetConfig] = Field(default_factory=list)
    method: MethodConfig = Field(default_factory=MethodConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    teachers_cache: TeachersCacheConfig | None = None

    @model_validator(mode="after")
    def _names(self) -> "Config":
        names = [self.student.name or "student"]
        names += [t.name or f"teacher{i}" for i, t in enumerate(self.teachers)]
        names += [p.name or f"peer{i}" for i, p in enumerate(self.peers)]
        if len(set(names)) != len(names):
            raise ValueError(f"network names must be unique, got {names}")
        return self

    def network_names(self) -> dict[str, NetConfig]:
        """Ordered {name: NetConfig}: student, teacher0.., peer0.. (or their ``name`` fields)."""
        out = {self.student.name or "student": self.student}
        for i, t in enumerate(self.teachers):
            out[t.name or f"teacher{i}"] = t
        for i, p in enumerate(self.peers):
            out[p.name or f"peer{i}"] = p
        return out


# --------------------------------------------------------------------------------------------
# Loading, overrides, error formatting


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("function-after", "function-before")]
    return ".".join(parts) if parts else "<root>"


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One readable line per problem: ``field `a.b`: value 'x' — expected ...``."""
    lines = []
    for e in err.errors():
        field = _loc_to_field(e.get("loc", ()))
        if prefix:
            field = f"{prefix}.{field}" if field != "<root>" else prefix
        value = e.get("input")
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            if "." not in field:
                lines.append(f"field `{field}`: unknown section (the sections are {', '.join(Config.model_fields)})")
                continue
            parent = field.rsplit(".", 1)[0]
            lines.append(f"field `{field}`: unknown key (not a setting of `{parent}`)")
            continue
        if e.get("type") == "missing":
            lines.append(f"field `{field}`: required, but missing")
            continue
        if e.get("type") in ("value_error", "assertion_error"):  # a validator's own message
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        shown = repr(value)
        if field == "<root>":  # a check across sections: the whole config is no useful "value"
            lines.append(f"config: {msg}")
            continue
        if isinstance(value, dict) and len(shown) > 80:
            lines.append(f"field `{field}`: {msg}")
            continue
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"field `{field}`: value {shown} is invalid: {msg}")
    return "\n".join(lines)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def merge_config(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base``: nested mappings merged key by key, anything else replaced
    (inputs untouched). How recipes combine their ``common``/``teacher``/``student`` sections."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars/lists) to a raw dict.

    List entries are addressed by index (``teachers.0.checkpoint=t.pt``).
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optim.lr=0.1)")
        key, _, text = item.partition("=")
        path = [p for p in key.strip().split(".") if p]
        if not path:
            raise ConfigError(f"override {item!r}: empty key")
        node: Any = out
        for i, part in enumerate(path[:-1]):
            nxt_is_index = path[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part) if part.isdigit() else -1
                if idx == len(node):  # extend a list by one entry (teachers.1.arch=...)
                    node.append([] if nxt_is_index else {})
                if not 0 <= idx < len(node):
                    raise ConfigError(f"override {item!r}: `{'.'.join(path[: i + 1])}` is not an index of a list of {len(node)}")
                node = node[idx]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: `{'.'.join(path[:i])}` is not a section")
            if part not in node or node[part] is None:
                node[part] = [] if nxt_is_index else {}
            node = node[part]
        last = path[-1]
        value = _parse_scalar(text)
        if isinstance(node, list):
            if not last.isdigit() or int(last) > len(node):
                raise ConfigError(f"override {item!r}: bad list index {last}")
            if int(last) == len(node):
                node.append(value)
            else:
                node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {item!r}: `{'.'.join(path[:-1])}` is not a section")
    return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; clear errors for missing/malformed files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r}: expected a mapping of sections (data:, student:, ...), got {type(raw).__name__}")
    return raw


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain, YAML-serialisable dict of a Config (method/balance options included)."""
    return cfg.model_dump(mode="json")


CUSTOM_ARCH = "custom"  # default arch label of a network passed as an nn.Module from Python
