"""What each frozen teacher is fed: the student's augmented view, converted to the teacher's input spec.

:func:`teacher_spec` decides a teacher's :class:`~adaptkd.models.inputs.InputSpec` (its config's
``input_size``/``mean``/``std``, else the model's own, else the data's for networks trained by
adaptkd); :class:`TeacherInputs` converts one batch for every teacher once per step (teachers with
the same spec share one converted batch; a teacher whose spec is the data's gets the batch itself).
"""

from __future__ import annotations

from torch import Tensor, nn

from adaptkd.config import ConfigError, NetConfig
from adaptkd.models.inputs import InputSpec, InputView, spec_size

__all__ = ["data_spec", "teacher_spec", "TeacherInputs"]


def data_spec(data) -> InputSpec:
    """The spec of the run's own batches (after ``data``'s normalisation)."""
    return InputSpec((data.image_size, data.image_size), tuple(data.mean), tuple(data.std),
                     source=f"the data ({data.name})")


def teacher_spec(net_cfg: NetConfig, model: nn.Module, data, *, field: str, name: str) -> InputSpec:
    """The input spec of a frozen teacher; ``ConfigError`` asking for the fields when it cannot be told.

    Order: the config's ``input_size`` / ``mean`` / ``std`` (each one on its own), else the
    model's ``input_spec`` (HF image-processor config, timm pretrained config, torchvision weights)
    unless an adaptkd checkpoint of it was loaded, else, for a network trained by adaptkd (zoo
    models, an adaptkd ``checkpoint``, random init), the data's own spec.
    """
    own = getattr(model, "input_spec", None)
    if getattr(model, "trained_here", False):  # an adaptkd checkpoint: trained on the run's data
        own = None
    trained_here = not getattr(model, "pretrained", False) or net_cfg.checkpoint is not None or net_cfg.random_init
    base = own if own is not None else (data_spec(data) if trained_here else None)
    given = {k: getattr(net_cfg, k) for k in ("input_size", "mean", "std") if getattr(net_cfg, k) is not None}
    if base is None and len(given) < 3:
        missing = [k for k in ("input_size", "mean", "std") if k not in given]
        raise ConfigError(
            f"field `{field}`: cannot tell which input teacher {name!r} ({net_cfg.arch}) was trained for (no image-"
            f"processor config, pretrained config or weights transforms); set {', '.join(missing)} in its config, "
            "e.g. input_size: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]"
        )
    if not given:
        return base  # type: ignore[return-value]
    size = spec_size(given["input_size"]) if "input_size" in given else base.size  # type: ignore[union-attr]
    mean = tuple(float(v) for v in given.get("mean", base.mean if base else ()))
    std = tuple(float(v) for v in given.get("std", base.std if base else ()))
    try:
        return InputSpec(size, mean, std, source=f"{field} config" + (f" over {base.source}" if base else ""))
    except ValueError as exc:
        raise ConfigError(f"field `{field}`: {exc}") from None


class TeacherInputs(nn.Module):
    """``{teacher: InputView}``; ``forward(x)`` -> ``{teacher: its batch}``, each distinct spec converted once."""

    def __init__(self, specs: dict[str, InputSpec], source: InputSpec) -> None:
        super().__init__()
        self.specs = dict(specs)
        self.source = source
        try:
            self.views = nn.ModuleDict({n: InputView(source, s) for n, s in specs.items()})
        except ValueError as exc:
            raise ConfigError(f"teacher input: {exc}") from None

    def view(self, name: str) -> nn.Module:
        """The conversion of teacher ``name`` (identity for a network without a spec of its own)."""
        return self.views[name] if name in self.views else nn.Identity()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        done: dict[tuple, Tensor] = {}
        for name, view in self.views.items():
            s = self.specs[name]
            key = (s.size, s.mean, s.std)
            if key not in done:
                done[key] = view(x)
            out[name] = done[key]
        return out

    def describe(self, arches: dict[str, str]) -> list[str]:
        """One line per teacher: what it is fed (for the log and the summary)."""
        lines = []
        for name, s in self.specs.items():
            same = self.views[name].identity
            what = "the student's view as is" if same else "the student's view resized/renormalised to"
            lines.append(f"{name} ({arches.get(name, '?')}) is fed {what} {s.describe()}")
        return lines
