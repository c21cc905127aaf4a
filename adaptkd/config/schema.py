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
import difflib
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adaptkd.constraints import (
    MAX_BATCH_BYTES,
    AspectRatio,
    BatchSize,
    CacheBudgetMB,
    ChannelMean,
    ChannelStd,
    ClassCount,
    Count,
    CropPadding,
    EpochCount,
    Epochs,
    Eps,
    Fraction,
    Gamma,
    ImageSize,
    LearningRate,
    Milestone,
    NonNegative,
    NonNegativeInt,
    Prefetch,
    Ratio,
    Seed,
    Threads,
    TopK,
    WeightDecay,
    Workers,
    short_repr,
)
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
    batch_size: BatchSize = 64
    eval_batch_size: BatchSize = 256
    image_size: ImageSize | None = None
    num_classes: ClassCount | None = None
    train_size: Count | None = None
    test_size: Count | None = None
    data_seed: Seed = 0
    # validation split held out of the training split (class-stratified, by data_seed); chooses best.pt
    val_size: NonNegativeInt = 0
    # augmentation: auto = the dataset's default (stated in the log and written into the run's config)
    augment: bool | Literal["auto", "cifar", "imagenet", "none"] = "auto"
    crop_padding: CropPadding | None = None
    flip: bool | None = None
    crop_ratio: Ratio = 0.875
    rrc_scale: tuple[Ratio, Ratio] = (0.08, 1.0)
    rrc_ratio: tuple[AspectRatio, AspectRatio] = (3 / 4, 4 / 3)
    drop_last: bool = False
    # reading: in memory or streamed through DataLoader workers
    cache: Literal["auto", "memory", "none"] = "auto"
    cache_budget_mb: CacheBudgetMB = 2048
    workers: Workers | None = None
    prefetch: Prefetch = 2
    channels: Literal[1, 3] | None = None
    mean: list[ChannelMean] | None = Field(None, min_length=1, max_length=4)
    std: list[ChannelStd] | None = Field(None, min_length=1, max_length=4)
    stats_samples: Count = 10000
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

    @model_validator(mode="after")
    def _fits(self) -> "DataConfig":
        """The padded input batch must fit a stated memory bound (float32, 3 channels)."""
        pad = self.crop_padding or 0
        if self.image_size is not None:
            if pad > self.image_size:
                raise ValueError(f"crop_padding={pad} exceeds image_size={self.image_size}")
            side = self.image_size + 2 * pad
            for key in ("batch_size", "eval_batch_size"):
                need = getattr(self, key) * 3 * side * side * 4
                if need > MAX_BATCH_BYTES:
                    raise ValueError(f"{key}={getattr(self, key)} at image_size={self.image_size} (padding "
                                     f"{pad}) needs {need / 2**30:.1f} GiB per batch; the bound is "
                                     f"{MAX_BATCH_BYTES / 2**30:.0f} GiB")
        return self


class OptimConfig(_Strict):
    """``optim:`` — optimiser and learning-rate schedule (per learner overrides in ``NetConfig.optim``)."""

    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: LearningRate = 0.05
    momentum: Fraction = 0.9
    nesterov: bool = False
    weight_decay: WeightDecay = 5e-4
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: Eps = 1e-8
    no_decay_1d: bool = False
    epochs: EpochCount = 240
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: list[Milestone] = Field(default_factory=lambda: [150, 180, 210], max_length=1000)
    gamma: Gamma = 0.1
    warmup_epochs: Epochs = 0.0
    min_lr: NonNegative = 0.0

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v) or sorted(v) != v:
            raise ValueError(f"milestones must be increasing epochs ≥ 1, got {short_repr(v)}")
        return v

    @model_validator(mode="after")
    def _min_lr(self) -> "OptimConfig":
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} exceeds lr={self.lr}")
        return self


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
    input_size: ImageSize | list[ImageSize] | None = None
    mean: list[ChannelMean] | None = Field(None, min_length=1, max_length=4)
    std: list[ChannelStd] | None = Field(None, min_length=1, max_length=4)

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


MAX_PATH_CHARS = 1024  #: characters of run.out (the system's own limit is about 4096 bytes)


def _run_out(value: str) -> str:
    if not value.strip():
        raise ValueError("the run folder must not be empty (it would write into the current folder)")
    if "\x00" in value:
        raise ValueError("the run folder contains a NUL character")
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"the run folder path has {len(value)} characters; at most {MAX_PATH_CHARS}")
    long = [part for part in Path(value).parts if len(part.encode("utf-8", "surrogateescape")) > 255]
    if long:
        raise ValueError(f"a folder name longer than 255 bytes: {short_repr(long[0], 40)}")
    return value


def _device(value: str) -> str:
    kind, colon, index = value.partition(":")
    ok = value in ("auto", "cpu", "mps") or (kind == "cuda" and (not colon or (index.isdigit() and len(index) <= 3)))
    if not ok:
        raise ValueError(f"{short_repr(value)} is not a device (expected auto, cpu, cuda, cuda:N or mps)")
    return value


class RunConfig(_Strict):
    """``run:`` — output folder, seed, device, precision, logging."""

    out: Annotated[str, AfterValidator(_run_out)] = "runs/exp"
    seed: Seed = 0
    device: Annotated[str, AfterValidator(_device)] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    log_every: Count = 50
    eval_every: Count = 1
    nonfinite: Literal["stop", "skip"] = "stop"
    deterministic: bool = False
    compile: bool = False
    channels_last: bool = False
    progress: bool = True
    tensorboard: bool = True
    threads: Threads | None = None
    max_steps_per_epoch: Count | None = None
    checkpoint_every_steps: Count | None = None  # also write last.pt inside an epoch, every N steps
    latency: bool = True
    overwrite: bool = False


class TeachersCacheConfig(_Strict):
    """``teachers_cache:`` — replay the frozen teachers' outputs from files written by
    ``adaptkd cache-teacher`` instead of running the teachers each step (see docs/replay.md)."""

    path: str
    epochs: EpochCount | None = None
    dtype: Literal["fp16", "fp32"] = "fp16"
    topk: TopK | None = None


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
    """``a.b.0.c`` from a pydantic error location (the tags of union members and validators dropped)."""
    parts = [str(p) for p in loc if isinstance(p, int) or str(p).isidentifier()]
    parts = [p for p in parts if p not in ("function-after", "function-before")]
    return ".".join(parts) if parts else "<root>"


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``NetConfig``, ``list[NetConfig]``, ``X | None``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _keys_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The setting names of the (sub)model that ``loc`` (a key path) leads into."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int) or part not in model.model_fields:
            continue  # list indices and validator tags
        model = _submodel(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


#: names other libraries use for a setting, and the name adaptkd uses (for "did you mean")
SYNONYMS = {"learning_rate": "lr", "lr_min": "min_lr", "wd": "weight_decay", "num_epochs": "epochs",
            "n_epochs": "epochs", "max_epochs": "epochs", "bs": "batch_size", "temp": "temperature", "t": "temperature",
            "tau": "temperature", "warmup": "warmup_epochs", "optimizer": "name", "optimiser": "name",
            "output": "out", "output_dir": "out", "workers": "threads", "num_threads": "threads",
            "student_tap": "student_taps", "teacher_tap": "teacher_taps", "model": "arch", "architecture": "arch"}


def did_you_mean(key: str, known: list[str], *, list_known: bool = True) -> str:
    """`` (did you mean `x`?)`` for the closest known name, or a list of the known names."""
    if SYNONYMS.get(key.lower()) in known:
        return f" (did you mean `{SYNONYMS[key.lower()]}`?)"
    close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean `{close[0]}`?)"
    if known and list_known:
        return f" (known: {', '.join(known)})"
    return ""


def format_validation_error(err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One readable line per problem: ``field `a.b`: value 'x' — expected ...``.

    ``model``: the model that was validated (default :class:`Config` without a prefix), used to
    suggest the closest known name for an unknown key. Values are shown cut short, never by
    building their full repr."""
    if model is None and not prefix:
        model = Config
    lines = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        field = _loc_to_field(loc)
        if prefix:
            field = f"{prefix}.{field}" if field != "<root>" else prefix
        value = e.get("input")
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            key = str(loc[-1]) if loc else field
            known = _keys_at(model, loc[:-1])
            if "." not in field:
                lines.append(f"field `{field}`: unknown "
                             f"section{did_you_mean(key, list(Config.model_fields), list_known=False)} "
                             f"(the sections are {', '.join(Config.model_fields)})")
                continue
            parent = field.rsplit(".", 1)[0]
            lines.append(f"field `{field}`: unknown key (not a setting of `{parent}`){did_you_mean(key, known)}")
            continue
        if e.get("type") == "missing":
            lines.append(f"field `{field}`: required, but missing")
            continue
        if e.get("type") in ("value_error", "assertion_error"):  # a validator's own message
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if field == "<root>":  # a check across sections: the whole config is no useful "value"
            lines.append(f"config: {msg}")
            continue
        if isinstance(value, (dict, list)) and len(value) > 3:
            lines.append(f"field `{field}`: {msg}")
            continue
        lines.append(f"field `{field}`: value {short_repr(value)} is invalid: {msg}")
    return "\n".join(lines)


MAX_YAML_BYTES = 1_000_000  #: a config file is text of a few kilobytes
MAX_YAML_DEPTH = 64  #: nesting of mappings and lists
MAX_YAML_VALUES = 100_000  #: values after aliases are expanded (a YAML alias bomb is small until expanded)


class YAMLBoundsError(ValueError):
    """YAML text that is too large, too deep or expands to too many values (see :func:`bounded_yaml`)."""


def _expanded_size(root: Any, limit: int) -> int:
    """How many values ``root`` holds with every shared (aliased) node counted each time it is
    reached; stops counting past ``limit`` (iterative: no recursion, no copies)."""
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def bounded_yaml(text: str) -> Any:
    """``yaml.safe_load`` of ``text`` with bounds on its size, its nesting depth and the number of
    values its aliases expand to (each bound raises :class:`YAMLBoundsError` saying which)."""
    if len(text) > MAX_YAML_BYTES:
        raise YAMLBoundsError(f"it holds {len(text):,} characters; a config is at most {MAX_YAML_BYTES:,}")
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # the parser is iterative; composing is not
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise YAMLBoundsError(f"it nests mappings/lists more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    value = yaml.safe_load(text)
    if _expanded_size(value, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise YAMLBoundsError(f"its aliases (*name) expand to more than {MAX_YAML_VALUES:,} values")
    return value


def _parse_scalar(text: str) -> Any:
    try:
        return bounded_yaml(text)
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
            raise ConfigError(f"override {short_repr(item)}: expected key=value (e.g. optim.lr=0.1)")
        if len(item) > 10_000:
            raise ConfigError(f"override {short_repr(item)}: {len(item):,} characters; at most 10,000")
        key, _, text = item.partition("=")
        path = [p for p in key.strip().split(".") if p]
        if len(path) > MAX_YAML_DEPTH:
            raise ConfigError(f"override {short_repr(item)}: more than {MAX_YAML_DEPTH} levels of keys")
        if not path:
            raise ConfigError(f"override {short_repr(item)}: empty key")
        node: Any = out
        for i, part in enumerate(path[:-1]):
            nxt_is_index = path[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part) if part.isdigit() else -1
                if idx == len(node):  # extend a list by one entry (teachers.1.arch=...)
                    node.append([] if nxt_is_index else {})
                if not 0 <= idx < len(node):
                    raise ConfigError(f"override {short_repr(item)}: `{'.'.join(path[: i + 1])}` is not an index "
                                      f"of a list of {len(node)}")
                node = node[idx]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {short_repr(item)}: `{'.'.join(path[:i])}` is not a section")
            if part not in node or node[part] is None:
                node[part] = [] if nxt_is_index else {}
            node = node[part]
        last = path[-1]
        try:
            value = _parse_scalar(text)
        except YAMLBoundsError as exc:
            raise ConfigError(f"override {short_repr(item)}: the value is refused: {exc}") from None
        if isinstance(node, list):
            if not last.isdigit() or int(last) > len(node):
                raise ConfigError(f"override {short_repr(item)}: bad list index {last}")
            if int(last) == len(node):
                node.append(value)
            else:
                node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {short_repr(item)}: `{'.'.join(path[:-1])}` is not a section")
    return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; clear errors for missing/malformed files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if p.stat().st_size > MAX_YAML_BYTES * 4:
        raise ConfigError(f"config file {str(p)!r} is refused: it is {p.stat().st_size:,} bytes; a config is at most "
                          f"{MAX_YAML_BYTES:,} characters")
    try:
        raw = bounded_yaml(p.read_text(encoding="utf-8"))
    except YAMLBoundsError as exc:
        raise ConfigError(f"config file {str(p)!r} is refused: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} is refused: it nests too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r}: expected a mapping of sections (data:, student:, ...), "
                          f"got {type(raw).__name__}")
    return raw


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain, YAML-serialisable dict of a Config (method/balance options included)."""
    return cfg.model_dump(mode="json")


CUSTOM_ARCH = "custom"  # default arch label of a network passed as an nn.Module from Python
