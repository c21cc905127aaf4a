"""``build_pipeline``: from the ``data:`` settings to a :class:`Pipeline` (in memory or streamed),
with the per-dataset defaults resolved and stated."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ._core import (
    DataBundle,
    DataError,
    check_labels,
    seeded_generator,
    split_off_val,
    stratified_order,
)
from .sources import (
    DatasetSource,
    FileSource,
    HFSource,
    Source,
    TarSource,
    TensorSource,
    class_folders,
    expand_shards,
    index_folder,
)
from .stream import (
    MemoryPipeline,
    Pipeline,
    StreamPipeline,
    StreamSettings,
    bundle_from_stream,
    default_workers,
)
from .transforms import GRAY_MODES, Geometry
from .transforms import image_size as header_size

log = logging.getLogger(__name__)

BUILTIN = ("cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "synthetic")
FILE_SOURCES = ("imagefolder", "hf", "webdataset")
PYTHON = "python"  # data passed as Python objects (Trainer(cfg, data=...)); recorded, not rebuildable
DEFAULT_PHOTO_SIZE = 224
AUGMENTS = ("cifar", "imagenet", "none")


def default_augment(name: str, image_size: int | None) -> dict[str, Any]:
    """Per-dataset augmentation defaults: digits shift by at most one pixel and never flip (mirrored
    digits are other glyphs); synthetic and CIFAR pad 4 + crop + flip; photo sources at 64 px
    and above random-resized-crop + flip, smaller ones pad ``size // 8`` + crop + flip."""
    if name == "digits":
        return {"augment": "cifar", "crop_padding": 1, "flip": False}
    if name in ("mnist", "fashion_mnist"):  # 28 px: shift by 2; mirrored digits are other glyphs
        return {"augment": "cifar", "crop_padding": 2, "flip": name == "fashion_mnist"}
    if name in BUILTIN:
        return {"augment": "cifar", "crop_padding": 4, "flip": True}
    size = image_size or DEFAULT_PHOTO_SIZE
    if size >= 64:
        return {"augment": "imagenet", "crop_padding": 0, "flip": True}
    return {"augment": "cifar", "crop_padding": max(1, size // 8), "flip": True}


def resolve_augment(d: Any, name: str, image_size: int | None) -> dict[str, Any]:
    """``augment`` (``auto``/``true``/``false``/a mode), ``crop_padding`` and ``flip`` with the
    unset ones taken from :func:`default_augment`. ``true`` means pad-and-crop (``cifar``)."""
    base = default_augment(name, image_size)
    aug = d.augment
    if aug is True:
        aug = "cifar"
    elif aug is False:
        aug = "none"
    elif aug == "auto":
        aug = base["augment"]
    pad = d.crop_padding if d.crop_padding is not None else (base["crop_padding"] if aug == "cifar" else 0)
    if aug == "cifar" and d.crop_padding is None and base["augment"] != "cifar":
        pad = max(1, (image_size or DEFAULT_PHOTO_SIZE) // 8)
    flip = d.flip if d.flip is not None else base["flip"]
    if aug == "none":
        pad, flip = 0, False
    return {"augment": aug, "crop_padding": int(pad) if aug == "cifar" else 0, "flip": bool(flip)}


def build_pipeline(d: Any, *, dataset: Any = None, pin_memory: bool = False, need_rgb: bool = False
                   ) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline for the ``data:`` settings ``d`` (a :class:`adaptkd.config.DataConfig`) and the
    settings it resolved (``augment``, ``crop_padding``, ``flip``, ``cache``, ``image_size``,
    ``workers``, ``channels``: written back into the run's config).

    ``dataset``: data passed from Python instead of ``d.name`` — a :class:`DataBundle`, or
    ``(train, test)`` map-style ``torch.utils.data.Dataset`` objects returning ``(image, label)``.
    ``need_rgb``: a network needs three channels (grayscale sources are otherwise kept as one).
    """
    name = PYTHON if dataset is not None else str(d.name).lower()
    if dataset is None and name == PYTHON:
        what = getattr(d, "source", None) or "see data.source"
        raise DataError(f"this run was trained on data passed from Python ({what}), which adaptkd cannot rebuild "
                        "from the config; pass the same data again (Trainer(cfg, data=...), "
                        "adaptkd.engine.evaluate.evaluate(run, data=...))")
    workers = default_workers() if d.workers is None else int(d.workers)
    settings = StreamSettings(workers=workers, prefetch=d.prefetch, pin_memory=pin_memory,
                              on_bad_image=d.on_bad_image)
    if isinstance(dataset, DataBundle) or (dataset is None and name in BUILTIN):
        bundle = dataset if dataset is not None else _builtin(d, name)
        aug = resolve_augment(d, bundle.name if dataset is None else "synthetic", bundle.image_size)
        stream = aug["augment"] == "imagenet" or d.cache == "none"
        if not stream:
            pipe: Pipeline = MemoryPipeline(bundle)
            if d.mean is not None:
                pipe.mean, pipe.std = _given_stats(d, bundle.in_channels)
            return pipe, {**aug, "cache": "memory", "image_size": bundle.image_size, "workers": workers,
                          "channels": bundle.in_channels}
        if bundle.val is not None:
            raise DataError("field `data.val_size`: a validation split needs the dataset in memory, but these "
                            "settings stream it (augment=imagenet or cache=none); use cache=memory or val_size=0")
        train: Source = TensorSource(bundle.train.x, bundle.train.y, f"{bundle.name} train")
        test: Source = TensorSource(bundle.test.x, bundle.test.y, f"{bundle.name} test")
        pipe = _stream(bundle.name, train, test, bundle.image_size, bundle.in_channels, bundle.num_classes,
                       bundle.class_names, aug, d, settings, given=(bundle.mean, bundle.std))
        return pipe, {**aug, "cache": "none", "image_size": bundle.image_size, "workers": workers,
                      "channels": bundle.in_channels}

    if dataset is None and ((name == "webdataset" and d.cache != "memory") or (name == "hf" and d.streaming)):
        return _shard_pipeline(d, name, settings, need_rgb)
    if dataset is not None:
        train, test, class_names = _python_sources(dataset)
    elif name == "imagefolder":
        train, test, class_names = _imagefolder(d)
    elif name == "hf":
        train, test, class_names = _hf(d)
    elif name == "webdataset":
        train, test, class_names = _webdataset(d)
    else:
        raise DataError(f"unknown dataset {d.name!r}")
    num_classes = len(class_names)
    if d.num_classes is not None and d.num_classes != num_classes:
        raise DataError(f"dataset {name!r} has {num_classes} classes, but data.num_classes={d.num_classes}")
    check_labels(train.labels, num_classes, f"dataset {name!r}, train split")
    check_labels(test.labels, num_classes, f"dataset {name!r}, test split")
    train = _subset(train, d.train_size, d.data_seed, f"{name} train_size")
    test = _subset(test, d.test_size, d.data_seed, f"{name} test_size")
    size = d.image_size or DEFAULT_PHOTO_SIZE
    channels = d.channels or (3 if need_rgb else _probe_channels(train))
    aug = resolve_augment(d, name, size)
    if aug["augment"] == "imagenet" and d.cache == "memory":
        raise DataError("field `data.cache`: memory keeps each image as one fixed square, but augment=imagenet "
                        "crops each full image anew every epoch; use cache=none (or auto), or augment=cifar")
    need = (len(train) + len(test)) * channels * size * size
    budget = int(d.cache_budget_mb) * 2**20
    memory = aug["augment"] != "imagenet" and (d.cache == "memory" or (d.cache == "auto" and need <= budget))
    resolved = {**aug, "cache": "memory" if memory else "none", "image_size": size, "workers": workers,
                "channels": channels}
    given = _given_stats(d, channels) if d.mean is not None else None
    pipe = _stream(name, train, test, size, channels, num_classes, class_names, aug, d, settings, given=given,
                   stats=not memory)
    if not memory:
        resolved.update(mean=list(pipe.mean), std=list(pipe.std))
    if getattr(d, "val_size", 0) and not memory:
        pipe.close()
        raise DataError(f"field `data.val_size`: a validation split needs the dataset in memory, but {name!r} is "
                        "streamed here; set data.cache=memory (and augment=cifar), or val_size=0 and hold a "
                        "validation folder out yourself")
    if memory:
        stream = pipe
        bundle = split_off_val(bundle_from_stream(stream), getattr(d, "val_size", 0), d.data_seed)
        stream.close()
        pipe = MemoryPipeline(bundle)
        if given is not None:
            pipe.mean, pipe.std = given
    mb = f"{need / 2**20:.0f} MB decoded"
    if memory:
        pipe.resolved_note = f"{mb}, within data.cache_budget_mb={d.cache_budget_mb}" if d.cache == "auto" else mb
    elif aug["augment"] == "imagenet":
        pipe.resolved_note = "random-resized crops read each full image"
    else:
        pipe.resolved_note = ("data.cache=none" if d.cache == "none"
                              else f"{mb} would exceed data.cache_budget_mb={d.cache_budget_mb}")
    return pipe, resolved


def describe(pipe: Pipeline, resolved: dict[str, Any]) -> str:
    """One log line: what is read, how, and with which augmentation."""
    aug = resolved["augment"]
    if aug == "cifar":
        how = f"pad {resolved['crop_padding']} + random crop" + (" + flip" if resolved["flip"] else "")
    elif aug == "imagenet":
        how = "random-resized crop" + (" + flip" if resolved["flip"] else "")
    else:
        how = "no augmentation"
    where = ("in memory" if pipe.mode == "memory"
             else f"streamed, {resolved['workers']} worker(s)")
    note = getattr(pipe, "resolved_note", "")
    return (f"data: {pipe.name} {pipe.n_train}/{pipe.n_test} images, {pipe.in_channels}x{pipe.image_size}x"
            f"{pipe.image_size}, {pipe.num_classes} classes, {where}" + (f" ({note})" if note else "")
            + f"; augment={aug} ({how})")


# ---------------------------------------------------------------------------------- helpers


def describe_source(data: Any, pipe: Pipeline) -> str:
    """What data passed from Python was, for the run's config (``data.source``): a :class:`DataBundle` by
    name, or the ``(train, test)`` datasets' types; with the pipeline's image and class counts."""
    kind = f"DataBundle {data.name!r}" if isinstance(data, DataBundle) else \
        " / ".join(type(part).__name__ for part in data)
    return f"{kind}: {pipe.n_train} train / {pipe.n_test} test images, {pipe.num_classes} classes"


def _builtin(d: Any, name: str) -> DataBundle:
    from .registry import build_data

    return build_data(name, root=d.root, download=d.download, image_size=d.image_size, num_classes=d.num_classes,
                      train_size=d.train_size, test_size=d.test_size, data_seed=d.data_seed,
                      val_size=getattr(d, "val_size", 0))


def _given_stats(d: Any, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if d.std is None or len(d.mean) != channels or len(d.std) != channels:
        raise DataError(f"fields `data.mean` / `data.std`: need {channels} values each (one per channel), got "
                        f"{d.mean} and {d.std}")
    if any(not s > 0 for s in d.std):
        raise DataError(f"field `data.std`: every value must be > 0, got {d.std}")
    return tuple(float(v) for v in d.mean), tuple(float(v) for v in d.std)


def _stream(name: str, train: Source, test: Source, size: int, channels: int, num_classes: int,
            class_names: list[str], aug: dict[str, Any], d: Any, settings: StreamSettings,
            given: tuple | None = None, stats: bool = True) -> StreamPipeline:
    seed_geo = int(getattr(d, "data_seed", 0))
    if aug["augment"] == "imagenet":
        train_geo = Geometry("random_resized_crop", size, channels, scale=tuple(d.rrc_scale),
                             ratio=tuple(d.rrc_ratio), seed=seed_geo)
        eval_geo = Geometry("center", size, channels, crop_ratio=d.crop_ratio)
    else:
        train_geo = eval_geo = Geometry("center", size, channels)
    pipe = StreamPipeline(name=name, train=train, test=test, train_geo=train_geo, eval_geo=eval_geo,
                          num_classes=num_classes, class_names=class_names, settings=settings,
                          mean=given[0] if given else None, std=given[1] if given else None)
    if given is None and stats:
        pipe.mean, pipe.std = pipe.streamed_stats(d.stats_samples)
    return pipe


def _subset(src: Source, n: int | None, seed: int, what: str) -> Source:
    if n is None or n == len(src):
        return src
    if n < 1 or n > len(src):
        raise DataError(f"{what}: size must be between 1 and {len(src)} (the samples available), got {n}")
    order = stratified_order(src.labels, seeded_generator("subsample", what, seed))
    return src.subset(torch.sort(order[:n]).values)


def _probe_channels(src: Source, limit: int = 32) -> int:
    """1 when the first image of each class (up to ``limit``) is grayscale, else 3. Reads headers
    only; an image that does not open fails here, before training, naming the file."""
    first: dict[int, int] = {}
    for i, y in enumerate(src.labels.tolist()):
        if y not in first:
            first[y] = i
            if len(first) >= limit:
                break
    from PIL import Image

    gray = True
    for i in first.values():
        data = src.load(i)
        header_size(data, src.where(i))  # raises DataError naming the file
        if isinstance(data, Image.Image):
            mode = data.mode
        else:
            import io

            with Image.open(io.BytesIO(data)) as img:
                mode = img.mode
        gray = gray and mode in GRAY_MODES
    return 1 if gray else 3


def _imagefolder(d: Any) -> tuple[Source, Source, list[str]]:
    if d.root is None:
        raise DataError("dataset 'imagefolder' needs root: a folder holding train/<class>/ and val/<class>/")
    root = Path(os.path.expanduser(str(d.root)))
    if not root.is_dir():
        raise DataError(f"imagefolder root {root} does not exist or is not a folder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root}: no train/ folder; expected {root}/train/<class name>/<images>")
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if test_dir is None:
        raise DataError(f"{root}: no val/ (or test/) folder; expected {root}/val/<class name>/<images>")
    if test_dir.name == "val" and (root / "test").is_dir():
        log.warning("%s: both val/ and test/ exist; using val/", root)
    classes = class_folders(train_dir)
    if not classes:
        raise DataError(f"{train_dir}: no class folders; expected {train_dir}/<class name>/<images>")
    if d.num_classes is not None and d.num_classes != len(classes):
        raise DataError(f"{train_dir} has {len(classes)} class folders, but num_classes={d.num_classes}")
    train: FileSource = index_folder(train_dir, classes, "train")
    test: FileSource = index_folder(test_dir, classes, test_dir.name)
    return train, test, classes


def _python_sources(dataset: Any) -> tuple[Source, Source, list[str]]:
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2):
        raise DataError("data passed from Python must be a DataBundle or a (train, test) pair of "
                        f"torch.utils.data.Dataset objects, got {type(dataset).__name__}")
    train = DatasetSource(dataset[0], f"Python train dataset ({type(dataset[0]).__name__})")
    test = DatasetSource(dataset[1], f"Python test dataset ({type(dataset[1]).__name__})")
    names = getattr(dataset[0], "classes", None)
    n = int(max(train.labels.max(), test.labels.max())) + 1
    class_names = [str(c) for c in names] if names is not None and len(names) >= n else [str(i) for i in range(n)]
    return train, test, class_names


# ---------------------------------------------------------------------------------- Hugging Face


def _hf_load(root: str) -> dict[str, Any]:
    """``{split: datasets.Dataset}`` of ``root``: a ``save_to_disk`` folder, a folder of parquet
    files, any other folder (the ``imagefolder`` builder), or a hub id (``load_dataset``)."""
    try:
        import datasets
    except ImportError:
        raise DataError("dataset 'hf' needs the Hugging Face datasets package: pip install 'adaptkd[hf]'") from None
    path = Path(os.path.expanduser(root))
    try:
        if path.is_dir():
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                ds = datasets.load_from_disk(str(path))
            elif glob.glob(str(path / "**" / "*.parquet"), recursive=True):
                ds = datasets.load_dataset("parquet", data_dir=str(path))
            else:
                ds = datasets.load_dataset("imagefolder", data_dir=str(path))
        else:
            ds = datasets.load_dataset(root)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for a path it cannot read
        raise DataError(f"dataset 'hf': cannot open {root!r} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return dict(ds) if isinstance(ds, datasets.DatasetDict) else {"train": ds}


def _hf_source(ds: Any, d: Any, root: str, split: str) -> tuple[HFSource, list[str] | None]:
    import datasets

    for key, field in ((d.image_key, "image_key"), (d.label_key, "label_key")):
        if key not in ds.column_names:
            raise DataError(f"field `data.{field}`: column {key!r} is not in {root!r} split {split!r} "
                            f"(columns: {ds.column_names})")
    feat = ds.features[d.image_key]
    if isinstance(feat, datasets.Image):
        ds = ds.cast_column(d.image_key, datasets.Image(decode=False))
    lab_feat = ds.features[d.label_key]
    names = list(lab_feat.names) if isinstance(lab_feat, datasets.ClassLabel) else None
    raw = ds[d.label_key]
    if raw and isinstance(raw[0], str):
        raise DataError(f"field `data.label_key`: column {d.label_key!r} holds strings; expected integer class "
                        "indices (a ClassLabel column)")
    labels = torch.as_tensor(raw, dtype=torch.int64)
    return HFSource(ds, d.image_key, labels, f"hf {root} [{split}]"), names


def _hf(d: Any) -> tuple[Source, Source, list[str]]:
    if not d.root:
        raise DataError("dataset 'hf' needs root: a hub dataset id or a local folder (save_to_disk, parquet files "
                        "or an image folder)")
    splits = _hf_load(d.root)
    train_ds, test_ds, test_split = _hf_pick(d, splits)
    train, names = _hf_source(train_ds, d, d.root, d.split)
    test, _ = _hf_source(test_ds, d, d.root, test_split)
    n = int(max(train.labels.max(), test.labels.max())) + 1
    class_names = names if names is not None else [str(i) for i in range(n)]
    return train, test, class_names


def _hf_pick(d: Any, splits: dict[str, Any]) -> tuple[Any, Any, str]:
    """The train and test splits named by ``data.split`` / ``data.test_split`` (default: the first of
    validation, valid, val, test)."""
    test_split = d.test_split or next((n for n in ("validation", "valid", "val", "test") if n in splits), None)
    if test_split is None:
        raise DataError(f"dataset 'hf' {d.root!r}: no validation/test split among {sorted(splits)}; "
                        "set data.test_split")
    for field, name in (("split", d.split), ("test_split", test_split)):
        if name not in splits:
            raise DataError(f"field `data.{field}`: dataset 'hf' {d.root!r} has splits {sorted(splits)}; "
                            f"no split {name!r}")
    return splits[d.split], splits[test_split], test_split


# ---------------------------------------------------------------------------------- tar shards


def _webdataset(d: Any) -> tuple[Source, Source, list[str]]:
    if not d.root or not d.test_root:
        raise DataError("dataset 'webdataset' needs root (the train shards, e.g. 'shards/train-{000..099}.tar') "
                        "and test_root (the validation shards)")
    train_shards, test_shards = expand_shards(d.root), expand_shards(d.test_root)
    train = TarSource(train_shards, d.root)
    test = TarSource(test_shards, d.test_root)
    n = int(max(train.labels.max(), test.labels.max())) + 1
    return train, test, [str(i) for i in range(n)]


# ---------------------------------------------------------------------------------- shard streams


def _shard_pipeline(d: Any, name: str, settings: StreamSettings, need_rgb: bool) -> tuple[Pipeline, dict[str, Any]]:
    """WebDataset shards or a Hugging Face ``streaming: true`` dataset, read in order (:mod:`.shards`)."""
    from .shards import ShardPipeline, TarShards
    from .stream import accumulate_stats

    if name == "webdataset":
        if d.train_size is not None or d.test_size is not None:
            raise DataError("fields `data.train_size` / `data.test_size`: not available for streamed shards; "
                            "choose the shards in data.root / data.test_root instead")
        train, test = TarShards(expand_shards(d.root), d.root), TarShards(expand_shards(d.test_root), d.test_root)
        num_classes = max(train.num_classes, test.num_classes)
        class_names = [str(i) for i in range(num_classes)]
    else:
        train, test, class_names = _hf_stream(d)
        num_classes = len(class_names)
    if d.num_classes is not None and d.num_classes != num_classes:
        raise DataError(f"dataset {name!r} has {num_classes} classes, but data.num_classes={d.num_classes}")
    size = d.image_size or DEFAULT_PHOTO_SIZE
    channels = d.channels or (3 if need_rgb else _probe_stream_channels(train))
    aug = resolve_augment(d, name, size)
    if aug["augment"] == "imagenet":
        train_geo = Geometry("random_resized_crop", size, channels, scale=tuple(d.rrc_scale),
                             ratio=tuple(d.rrc_ratio), seed=int(d.data_seed))
        eval_geo = Geometry("center", size, channels, crop_ratio=d.crop_ratio)
    else:
        train_geo = eval_geo = Geometry("center", size, channels)
    given = _given_stats(d, channels) if d.mean is not None else (None, None)
    pipe = ShardPipeline(name=name, train=train, test=test, train_geo=train_geo, eval_geo=eval_geo,
                         num_classes=num_classes, class_names=class_names, settings=settings, seed=0,
                         mean=given[0], std=given[1])
    if given[0] is None:
        pipe.mean, pipe.std = accumulate_stats(pipe.stats_batches(d.stats_samples), channels, name)
    resolved = {**aug, "cache": "none", "image_size": size, "workers": settings.workers, "channels": channels,
                "mean": list(pipe.mean), "std": list(pipe.std)}
    pipe.resolved_note = f"{len(train.shards)} train shard(s), read in order"
    return pipe, resolved


def _probe_stream_channels(reader: Any) -> int:
    """1 when the first sample of the first shard is grayscale, else 3 (one header read)."""
    import io

    from PIL import Image

    for _, data, _, where in reader.read(0):
        if isinstance(data, Image.Image):
            return 1 if data.mode in GRAY_MODES else 3
        header_size(data, where)
        with Image.open(io.BytesIO(data)) as img:
            return 1 if img.mode in GRAY_MODES else 3
    return 3


def _hf_stream(d: Any) -> tuple[Any, Any, list[str]]:
    """Train and test :class:`HFStreamShards` of ``data.root`` with ``streaming: true``: a hub id
    (``load_dataset(..., streaming=True)``) or a ``save_to_disk`` folder (read as an iterable
    dataset). The epoch length comes from the dataset's split info, else ``data.train_size``."""
    import datasets

    from .shards import HFStreamShards

    path = Path(os.path.expanduser(d.root))
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            local = _hf_load(d.root)
            splits = {k: v.to_iterable_dataset(num_shards=max(1, min(64, len(v)))) for k, v in local.items()}
            sizes = {k: len(v) for k, v in local.items()}
        else:
            if path.is_dir():
                kind = "parquet" if glob.glob(str(path / "**" / "*.parquet"), recursive=True) else "imagefolder"
                streamed = datasets.load_dataset(kind, data_dir=str(path), streaming=True)
            else:
                streamed = datasets.load_dataset(d.root, streaming=True)
            splits = dict(streamed)
            info = next(iter(splits.values())).info.splits or {}
            sizes = {k: info[k].num_examples for k in info if info[k].num_examples}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types for a source it cannot read
        raise DataError(f"dataset 'hf': cannot open {d.root!r} as a stream ({type(e).__name__}: "
                        f"{str(e).splitlines()[0]})") from None
    train_ds, test_ds, test_split = _hf_pick(d, splits)
    out = []
    for ds, split, given, field in ((train_ds, d.split, d.train_size, "train_size"),
                                    (test_ds, test_split, d.test_size, "test_size")):
        for key, what in ((d.image_key, "image_key"), (d.label_key, "label_key")):
            if ds.features is not None and key not in ds.features:
                raise DataError(f"field `data.{what}`: column {key!r} is not in {d.root!r} split {split!r} "
                                f"(columns: {list(ds.features)})")
        if ds.features is not None and isinstance(ds.features.get(d.image_key), datasets.Image):
            ds = ds.cast_column(d.image_key, datasets.Image(decode=False))
        count = given or sizes.get(split)
        if not count:
            raise DataError(f"field `data.{field}`: the stream {d.root!r} [{split}] does not state its length; "
                            f"set data.{field} to its number of samples (one epoch)")
        out.append(HFStreamShards(ds, d.image_key, d.label_key, int(count), f"hf {d.root} [{split}]"))
    feat = train_ds.features.get(d.label_key) if train_ds.features is not None else None
    if isinstance(feat, datasets.ClassLabel):
        names = list(feat.names)
    elif d.num_classes:
        names = [str(i) for i in range(d.num_classes)]
    else:
        raise DataError(f"field `data.num_classes`: the stream {d.root!r} has no ClassLabel column "
                        f"{d.label_key!r}; set data.num_classes")
    return out[0], out[1], names


def test_pipeline(config: Any, *, dataset: Any = None, workers: int | None = None) -> Pipeline:
    """The pipeline of a run's saved config (a dict or :class:`adaptkd.config.Config`), for evaluating
    its test split with the same geometry and statistics; ``workers`` overrides ``data.workers``."""
    from adaptkd.config import Config, load_config

    cfg = config if isinstance(config, Config) else load_config(config, check=False)
    d = cfg.data.model_copy(update={"download": False})
    if workers is not None:
        d = d.model_copy(update={"workers": workers})
    if dataset is not None and d.name == PYTHON:
        d = d.model_copy(update={"name": "synthetic"})
    return build_pipeline(d, dataset=dataset)[0]
