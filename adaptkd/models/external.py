"""``timm:NAME`` and ``torchvision:NAME`` models with the zoo contract (optional extra ``vision``).

``args`` go to ``timm.create_model`` / ``torchvision.models.get_model``. Pretrained weights:
``args.pretrained: true`` (timm) or ``args.weights: DEFAULT`` (or a weights name, torchvision). A
pretrained teacher keeps its own head, whose class count must equal the data's; a learner's head is
made for the data's classes (timm resets it; torchvision's is replaced), stated in the log.

Taps (``blocks.K``): timm's ``feature_info`` modules (its stages, or a ViT's blocks); torchvision's
``layer1..4`` (ResNets), the ViT's encoder layers, else the children of ``features`` or
``trunk_output``. Token layout: timm ViTs give ``num_prefix_tokens`` (class token first, then
register tokens, left out of the tap); torchvision ViTs have one class token.

Input spec: timm's ``pretrained_cfg`` (``input_size``, ``mean``, ``std``); torchvision's
``weights.transforms()`` (``crop_size``, ``mean``, ``std``). Without pretrained weights the model is
trained by adaptkd and sees the data as it is.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .adapters import Adapted, HookedStages, pooled
from .inputs import InputSpec, spec_size

__all__ = ["build_timm", "build_torchvision"]


def _import(lib: str):
    from adaptkd.errors import MissingExtraError

    try:
        if lib == "timm":
            import timm

            return timm
        import torchvision

        return torchvision
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken compiled extension
        raise MissingExtraError(
            f"{lib}: models need {lib}, which is not importable here ({type(exc).__name__}); "
            "install the extra: pip install 'adaptkd[vision]'"
        ) from None


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if m is module:
            return name
    return None


def _linear_in(module: nn.Module | None) -> tuple[str, nn.Linear] | None:
    if isinstance(module, nn.Linear):
        return "", module
    if module is None:
        return None
    lin = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return lin[-1] if lin else None


class StagedModel(Adapted):
    """A timm or torchvision model whose tap outputs are collected with forward hooks on its stages."""

    def __init__(self, model: nn.Module, stages: list[str], final: str | None, **kw: Any) -> None:
        super().__init__(model, num_blocks=len(stages), tokens=final is not None, **kw)
        self._stages = HookedStages(model, stages + ([final] if final else []))
        self._n = len(stages)

    def run(self, x: Tensor) -> tuple[Tensor, list[Any], Tensor | None]:
        out = self.model(x)
        got = self._stages.take()
        blocks, final = got[: self._n], (got[self._n] if self.tokens is not None else None)
        if isinstance(final, Tensor) and final.dim() != 3:
            final = None
        if not self.has_logits:
            out = pooled(final, blocks[-1], self.patch_grid)
        return out, blocks, final


def _head_check(lib: str, name: str, have: int | None, num_classes: int) -> None:
    if have is not None and have != num_classes:
        raise ValueError(f"teacher {lib}:{name} classifies {have} classes, but the data has {num_classes}; a frozen "
                         "teacher's head cannot be replaced (it would be untrained): use weights fine-tuned on your "
                         "classes, or a feature method with a head-less teacher")


def build_timm(name: str, num_classes: int, *, teacher: bool = False, head: str = "auto", **args: Any) -> StagedModel:
    """``timm:<name>``: ``timm.create_model(name, **args)`` adapted (see the module docstring)."""
    if "trust_remote_code" in args:
        raise ValueError("`trust_remote_code` is refused: adaptkd never runs code from a model repository")
    timm = _import("timm")
    pretrained = bool(args.get("pretrained", False))
    notes: list[str] = []
    if head == "backbone":
        model = timm.create_model(name, num_classes=0, **args)
    elif teacher and pretrained:
        model = timm.create_model(name, **args)
        _head_check("timm", name, getattr(model, "num_classes", None), num_classes)
    else:
        model = timm.create_model(name, num_classes=num_classes, **args)
        if pretrained:
            notes.append(f"timm:{name}: classifier head made for {num_classes} classes (randomly initialised)")
    cls = model.get_classifier() if hasattr(model, "get_classifier") else None
    found = _linear_in(cls)
    if found is not None and cls is not None:
        base = _module_name(model, cls) or ""
        head_name: str | None = ".".join(p for p in (base, found[0]) if p)
        dim = found[1].in_features
    else:
        head_name, dim = None, int(getattr(model, "num_features", 0))
    info = getattr(model, "feature_info", None) or []
    stages = [f["module"] for f in info if isinstance(f, dict) and f.get("module")]
    tokens = hasattr(model, "num_prefix_tokens") and hasattr(model, "blocks")
    if tokens:
        stages = [f"blocks.{i}" for i in range(len(model.blocks))]
    if not stages:
        raise ValueError(f"timm:{name} has no feature_info to tap; tap its modules by path (list_taps)")
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None) if tokens else None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    spec = None
    if pretrained and cfg.get("input_size") and cfg.get("mean") and cfg.get("std"):
        spec = InputSpec(spec_size(cfg["input_size"]), tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"])),
                         source=f"timm pretrained_cfg of {name}")
    final = "norm" if tokens and isinstance(getattr(model, "norm", None), nn.Module) else None
    return StagedModel(model, stages, final, head_name=head_name, feature_dim=dim,
                       patch_size=spec_size(patch) if patch is not None else None,
                       input_spec=spec, source=f"timm:{name}", pretrained=pretrained, notes=notes)


def _tv_stages(model: nn.Module) -> tuple[list[str], str | None]:
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):
        return [f"layer{i}" for i in range(1, 5)], None
    enc = getattr(model, "encoder", None)
    if enc is not None and hasattr(enc, "layers") and hasattr(model, "patch_size"):
        return [f"encoder.layers.{n}" for n, _ in enc.layers.named_children()], "encoder"
    for container in ("features", "trunk_output"):
        mod = children.get(container)
        if isinstance(mod, nn.Sequential):
            return [f"{container}.{n}" for n, _ in mod.named_children()], None
    raise ValueError(f"torchvision model {type(model).__name__}: no known stage layout to tap; tap modules by path")


def build_torchvision(name: str, num_classes: int, *, teacher: bool = False, head: str = "auto",
                      **args: Any) -> StagedModel:
    """``torchvision:<name>``: ``torchvision.models.get_model(name, **args)`` adapted (see the module docstring)."""
    tv = _import("torchvision")
    weights = args.get("weights")
    notes: list[str] = []
    if weights is None:
        model = tv.models.get_model(name, num_classes=num_classes, **args)
    else:
        model = tv.models.get_model(name, **args)
    stages, final = _tv_stages(model)
    head_mod = None
    for attr in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, attr, None), nn.Module):
            head_mod = getattr(model, attr)
            break
    found = _linear_in(head_mod)
    if found is None or head_mod is None:
        raise ValueError(f"torchvision:{name}: no nn.Linear classifier found")
    base = _module_name(model, head_mod) or ""
    head_name = ".".join(p for p in (base, found[0]) if p)
    lin = found[1]
    if weights is not None and lin.out_features != num_classes:
        if teacher and head != "backbone":
            _head_check("torchvision", name, lin.out_features, num_classes)
        new = nn.Linear(lin.in_features, num_classes)
        parent = model.get_submodule(head_name.rpartition(".")[0]) if "." in head_name else model
        setattr(parent, head_name.rpartition(".")[2], new)
        notes.append(f"torchvision:{name}: classifier head replaced ({lin.out_features} -> {num_classes} classes, "
                     "randomly initialised)")
    spec = None
    if weights is not None:
        if isinstance(weights, str):
            w = tv.models.get_weight(weights) if "." in weights else tv.models.get_model_weights(name)[weights]
        else:
            w = weights
        t = w.transforms()
        crop = getattr(t, "crop_size", None)
        if crop is not None and getattr(t, "mean", None) is not None:
            spec = InputSpec(spec_size(crop[0] if len(crop) == 1 else crop), tuple(map(float, t.mean)),
                             tuple(map(float, t.std)), source=f"torchvision weights {w}")
    patch = getattr(model, "patch_size", None)
    adapted = StagedModel(model, stages, final, head_name=head_name if head != "backbone" else None,
                          feature_dim=lin.in_features, patch_size=spec_size(patch) if patch else None,
                          input_spec=spec, source=f"torchvision:{name}", pretrained=weights is not None,
                          notes=notes)
    return adapted
