"""``hf:`` models: Hugging Face ``transformers`` vision models as teachers, students and peers.

    arch: hf:<hub id or local folder>        # weights (and preprocessing) from the Hub or a folder
    arch: hf:<model type>  + args.hf_config  # a fresh, randomly initialised model from a config alone

``args``: ``pretrained`` (default true: load the weights; false: the folder's/Hub's ``config.json``
only, random init), ``revision`` (a branch, tag or commit of a Hub repository), ``hf_config``
(inline config keys, with the model type as the id: ``arch: hf:vit``), ``head`` (``auto``,
``classifier`` or ``backbone``). ``HF_HUB_OFFLINE=1`` (the Hub's offline switch) is honoured: only
local folders and the local cache are read. ``trust_remote_code`` is refused: no code from a model
repository ever runs, and only ``safetensors`` weights are read (no pickle).

Classifiers (``AutoModelForImageClassification``) give their logits; a teacher's label count must
equal the data's class count, a learner's head is replaced when it differs (stated in the log).
Checkpoints without an image-classification head load as backbones (``AutoModel``): they serve
feature and token methods, never as a source of logits. See ``docs/ecosystem.md``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .adapters import Adapted, pooled
from .inputs import InputSpec, spec_size

__all__ = ["HFModel", "build_hf", "hf_input_spec", "require_transformers"]

_HEADS = ("auto", "classifier", "backbone")


def require_transformers():
    """The ``transformers`` module, or a one-line error naming the extra."""
    from adaptkd.errors import MissingExtraError

    try:
        import transformers
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken compiled extension
        raise MissingExtraError(
            f"hf: models need transformers, which is not importable here ({type(exc).__name__}); "
            "install the extra: pip install 'adaptkd[hf]'"
        ) from None
    return transformers


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _quiet():
    """Silence transformers' load reports and progress bars (errors still raise)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        if not was_disabled:
            enable_progress_bars()


def _unreachable(ref: str, exc: Exception) -> ValueError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = "offline (HF_HUB_OFFLINE=1)" if _offline() else "not found or the Hub is unreachable"
    return ValueError(
        f"model 'hf:{ref}' cannot be loaded: it is not a local folder with a config.json, and it is {where} "
        f"({first}). To use it offline, on a machine with internet save it to a folder once: "
        f"python -c \"from transformers import AutoModelForImageClassification as M, AutoImageProcessor as P; "
        f"M.from_pretrained('{ref}').save_pretrained('models/X'); "
        f"P.from_pretrained('{ref}').save_pretrained('models/X')\" "
        f"(AutoModel for a backbone), copy the folder and use arch: hf:models/X"
    )


def _load_kwargs(revision: str | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"trust_remote_code": False}
    if revision is not None:
        kw["revision"] = revision
    if _offline():
        kw["local_files_only"] = True
    return kw


def hf_input_spec(ref: str, revision: str | None = None) -> InputSpec | None:
    """The input spec in ``ref``'s ``preprocessor_config.json`` (``None`` when it has none).

    Size: ``crop_size`` when the processor center-crops, else ``size`` (``{height, width}``,
    ``{shortest_edge}`` or an int); mean/std: ``image_mean``/``image_std`` (0/1 when it does not
    normalise). Only the JSON is read: no image-processor class is instantiated.
    """
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        with _quiet():
            cfg, _ = ImageProcessingMixin.get_image_processor_dict(ref, **_load_kwargs(revision))
    except (OSError, ValueError):
        return None
    size = cfg.get("crop_size") if cfg.get("do_center_crop") and cfg.get("crop_size") else cfg.get("size")
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            size = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            size = int(size["shortest_edge"])
        else:
            return None
    if size is None:
        return None
    mean: Any
    std: Any
    if cfg.get("do_normalize", True):
        mean, std = cfg.get("image_mean"), cfg.get("image_std")
        if mean is None or std is None:
            return None
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if isinstance(mean, (int, float)):
        mean, std = [float(mean)] * 3, [float(std)] * 3
    return InputSpec(spec_size(size), tuple(float(v) for v in mean), tuple(float(v) for v in std),
                     source=f"preprocessor_config.json of hf:{ref}")


class HFModel(Adapted):
    """A ``transformers`` vision model with the zoo contract (see :mod:`adaptkd.models.adapters`).

    Layer taps come from the model's ``hidden_states`` (index 0, the embeddings, is not a tap);
    the final tokens are ``last_hidden_state`` (after the final norm) for token models.
    """

    family = "hf"

    def __init__(self, model: nn.Module, **kw: Any) -> None:
        super().__init__(model, **kw)
        params = inspect.signature(model.forward).parameters
        self._interpolate = "interpolate_pos_encoding" in params
        size = getattr(model.config, "image_size", None)
        self._native = spec_size(size) if isinstance(size, (int, list, tuple)) else None

    def run(self, x: Tensor) -> tuple[Tensor, list[Any], Tensor | None]:
        kw: dict[str, Any] = {"output_hidden_states": True}
        if self._interpolate and self._native is not None and tuple(x.shape[-2:]) != self._native:
            kw["interpolate_pos_encoding"] = True  # a ViT fed another resolution than its config's
        out = self.model(pixel_values=x, **kw)
        hidden = list(out.hidden_states or ())[1:]
        last = getattr(out, "last_hidden_state", None)
        final = None
        if self.tokens is not None:
            final = last if last is not None else hidden[-1]
        if self.has_logits:
            return out.logits, hidden, final
        return pooled(final, last if last is not None else hidden[-1], self.patch_grid), hidden, final


def _head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier ``nn.Linear`` of a ``*ForImageClassification`` model (the one producing logits)."""
    modules = dict(model.named_modules())
    for name in ("classifier", "cls_classifier", "head", "classifier.1", "head.fc", "fc"):
        m = modules.get(name)
        if isinstance(m, nn.Linear):
            return name, m
        if isinstance(m, nn.Sequential):
            last = [(f"{name}.{i}", c) for i, c in enumerate(m) if isinstance(c, nn.Linear)]
            if last:
                return last[-1]
    linears = [(n, m) for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return linears[-1]


def _is_classifier(config: Any) -> bool:
    return any("ForImageClassification" in a for a in (getattr(config, "architectures", None) or []))


def _hidden_width(config: Any) -> int:
    if getattr(config, "hidden_size", None):
        return int(config.hidden_size)
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise ValueError(f"cannot tell the feature width of a {type(config).__name__}")


def _patch_size(config: Any) -> tuple[int, int] | None:
    p = getattr(config, "patch_size", None)
    if p is None:
        return None
    return spec_size(p)


def build_hf(ref: str, num_classes: int, *, pretrained: bool | None = None, revision: str | None = None,
             hf_config: dict[str, Any] | None = None, head: str = "auto", teacher: bool = False,
             **unknown: Any) -> HFModel:
    """Build ``hf:<ref>`` (see the module docstring). ``teacher``: frozen (its head is never replaced).

    Raises ``ValueError`` with one clear message for every refusal (unknown/unreachable id,
    remote code, label-count mismatch of a teacher, bad args).
    """
    if "trust_remote_code" in unknown:
        raise ValueError("`trust_remote_code` is refused: adaptkd never runs code from a model repository; "
                         "use a model whose architecture is part of transformers")
    if unknown:
        raise ValueError(f"unknown hf: args {sorted(unknown)}; the args are pretrained, revision, hf_config, head")
    if head not in _HEADS:
        raise ValueError(f"args.head must be one of {', '.join(_HEADS)}, got {head!r}")
    if not ref:
        raise ValueError("hf: needs a Hub id, a local folder or (with args.hf_config) a model type, e.g. hf:vit")
    require_transformers()
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    notes: list[str] = []
    label_names: list[str] | None = None
    if hf_config is not None:
        if not isinstance(hf_config, dict):
            raise ValueError(f"args.hf_config must be a mapping of config keys, got {type(hf_config).__name__}")
        if pretrained:
            raise ValueError("args.hf_config builds a randomly initialised model; it cannot be `pretrained`")
        pretrained = False
        try:
            config = AutoConfig.for_model(ref, **hf_config)
        except ValueError as exc:
            raise ValueError(f"hf:{ref} with args.hf_config: {ref!r} is not a transformers model type "
                             f"({str(exc).splitlines()[0][:120]}...)") from None
        where = f"an inline config (model type {ref})"
    else:
        pretrained = True if pretrained is None else bool(pretrained)
        local = Path(os.path.expanduser(ref))
        if local.is_dir() and not (local / "config.json").is_file():
            raise ValueError(f"model 'hf:{ref}': the folder has no config.json (save one with save_pretrained)")
        src = str(local) if local.is_dir() else ref
        try:
            with _quiet():
                config = AutoConfig.from_pretrained(src, **_load_kwargs(revision))
        except OSError as exc:
            raise _unreachable(ref, exc) from None
        except ValueError as exc:
            raise ValueError(f"model 'hf:{ref}': {str(exc).splitlines()[0]}") from None
        ref = src
        where = f"hf:{ref}" + (f" at revision {revision}" if revision else "")
    if getattr(config, "auto_map", None):
        raise ValueError(f"model 'hf:{ref}' needs code from its repository (auto_map in config.json); "
                         "`trust_remote_code` is refused: adaptkd never runs code from a model repository")

    want_classifier = head == "classifier" or (head == "auto" and (not teacher or _is_classifier(config)))
    if want_classifier and teacher and pretrained and int(config.num_labels or 0) != int(num_classes):
        raise ValueError(f"teacher hf:{ref} classifies {config.num_labels} labels, but the data has {num_classes} "
                         "classes; a frozen teacher's head cannot be replaced (it would be untrained): use a "
                         "checkpoint fine-tuned on your classes, or a feature method (unic, fitnet, afd, rtk) with "
                         "args.head: backbone")
    kw = _load_kwargs(revision)
    try:
        with _quiet():
            if want_classifier:
                pretrained_head = True
                before = int(config.num_labels or 0)
                if before != num_classes:
                    config.num_labels = num_classes
                    config.id2label = {i: f"LABEL_{i}" for i in range(num_classes)}
                    config.label2id = {v: k for k, v in config.id2label.items()}
                if pretrained:
                    model, info = AutoModelForImageClassification.from_pretrained(
                        ref, config=config, ignore_mismatched_sizes=True, use_safetensors=True,
                        output_loading_info=True, **kw)
                    if not _is_classifier(config):
                        pretrained_head = False
                        notes.append(f"hf:{ref}: a {num_classes}-class classifier head added to the pretrained "
                                     "backbone (randomly initialised)")
                    elif before != num_classes:
                        pretrained_head = False
                        notes.append(f"hf:{ref}: classifier head replaced ({before} -> {num_classes} classes, "
                                     "randomly initialised)")
                    elif info.get("missing_keys"):
                        notes.append(f"hf:{ref}: newly initialised weights: {sorted(info['missing_keys'])[:6]}")
                else:
                    model = AutoModelForImageClassification.from_config(config)
            elif pretrained:
                model, info = AutoModel.from_pretrained(ref, config=config, use_safetensors=True,
                                                        output_loading_info=True, **kw)
                if info.get("missing_keys"):
                    notes.append(f"hf:{ref}: backbone weights not in the checkpoint (unused by adaptkd unless tapped): "
                                 f"{sorted(info['missing_keys'])[:6]}")
            else:
                model = AutoModel.from_config(config)
    except OSError as exc:
        raise _unreachable(ref, exc) from None
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "not recognized" in msg.lower() or "unrecognized" in msg.lower():
            kind = "image classifier" if want_classifier else "vision backbone"
            msg = f"transformers has no {kind} for a {type(config).__name__} ({msg[:100]})"
        raise ValueError(f"model 'hf:{ref}': {msg}") from None
    if not pretrained:
        notes.append(f"hf:{ref}: randomly initialised from {where}")
    spec = hf_input_spec(ref, revision) if pretrained else None
    # Token models (ViT, DeiT, DINOv2, ...) have one width and a patch size; CNNs (ResNet, ConvNeXt)
    # one width per stage.
    tokens = _patch_size(config) is not None and not getattr(config, "hidden_sizes", None)
    probe_layers = getattr(config, "num_hidden_layers", None) or len(getattr(config, "depths", []) or [])
    if not probe_layers:
        raise ValueError(f"model 'hf:{ref}': cannot tell its number of layers or stages from {type(config).__name__}")
    if want_classifier:
        head_name, lin = _head(model)
        dim = lin.in_features
        id2label: dict[Any, Any] = dict(config.id2label or {})
        labels = [str(id2label.get(i, "")) for i in range(int(config.num_labels or 0))]
        if pretrained and pretrained_head and \
                not all(n == f"LABEL_{i}" or not n for i, n in enumerate(labels)):
            label_names = labels  # the checkpoint's own, named labels
    else:
        head_name, dim = None, _hidden_width(config)
    adapted = HFModel(model, num_blocks=int(probe_layers), head_name=head_name, feature_dim=dim, tokens=tokens,
                      patch_size=_patch_size(config) if tokens else None, input_spec=spec, source=where,
                      pretrained=bool(pretrained), notes=notes)
    adapted.label_names = label_names
    return adapted
