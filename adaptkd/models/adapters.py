"""Ecosystem models (Hugging Face, timm, torchvision) wrapped with the zoo's feature contract.

An :class:`Adapted` module holds the library's model as ``model`` and adds what the methods read:

* ``tap_blocks``: ``blocks.0`` ... ``blocks.{L-1}``, one tap point per transformer layer or CNN
  stage. A ViT-style layer's tap gives tokens ``[B, 1 + N, D]`` in the zoo's layout (class token
  first, then the N patch tokens row-major over ``patch_grid``); a CNN stage's tap gives its map
  ``[B, C, H, W]``.
* ``final_tokens``: ``"tokens"`` for ViT-style models: the final normalised tokens in the same
  layout (what UNIC distils from by default); ``None`` for CNNs.
* ``head_name`` / ``feature_dim``: the classifier ``nn.Linear`` and its input width; ``None`` /
  hidden width for a backbone without a head (``has_logits`` False).
* ``input_spec``: the :class:`~adaptkd.models.inputs.InputSpec` the weights were trained for
  (``None`` when unknown), ``source`` and ``family`` for messages and the report.

Token layout, the same rule for every family: with N patch tokens on the grid, a layer output of
T tokens has P = T - N prefix tokens; the first prefix token is the class token and the other
prefix tokens (a DeiT's distillation token, DINOv2's or timm's register tokens) are left out of
the tap (they stay readable on the library's own modules). With no prefix token the class token
is the mean of the patch tokens. Every raw submodule of the library model stays tappable too
(``model.<path>``; see :func:`adaptkd.taps.list_taps`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .inputs import InputSpec

__all__ = ["Adapted", "TokenView", "token_layout"]


def token_layout(tokens: int, grid: tuple[int, int] | None) -> int:
    """Number of prefix tokens in a layer output of ``tokens`` tokens over ``grid`` (0 when unknown)."""
    if grid is None:
        return 0
    return max(tokens - grid[0] * grid[1], 0)


class TokenView(nn.Module):
    """A tap point: one layer's output in the zoo layout (see the module docstring).

    ``forward(h, prefix)``: tokens [B, T, D] with ``prefix`` leading non-patch tokens ->
    [B, 1 + N, D]; a feature map [B, C, H, W] (or anything else) is returned unchanged.
    For the common case (one class token) the output is the input itself: no copy.
    """

    def forward(self, h: Any, prefix: int = 1) -> Any:
        if not isinstance(h, Tensor) or h.dim() != 3 or prefix == 1:
            return h
        if prefix == 0:
            return torch.cat([h.mean(1, keepdim=True), h], 1)
        return torch.cat([h[:, :1], h[:, prefix:]], 1)


class Adapted(nn.Module):
    """Base of the ecosystem adapters: subclasses implement :meth:`run`.

    ``run(x)`` returns ``(out, blocks, final)``: the logits [B, K] (or, for a backbone, its
    pooled feature [B, D]), the per-layer/stage outputs in forward order, and the final
    normalised tokens (``None`` for CNNs). ``forward`` passes the outputs through the tap views
    and returns ``out``.
    """

    family: str = ""

    def __init__(self, model: nn.Module, *, num_blocks: int, head_name: str | None, feature_dim: int,
                 tokens: bool, patch_size: tuple[int, int] | None, input_spec: InputSpec | None,
                 source: str, pretrained: bool = False, notes: list[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.blocks = nn.ModuleList(TokenView() for _ in range(num_blocks))
        self.tokens = TokenView() if tokens else None
        self.tap_blocks = [f"blocks.{i}" for i in range(num_blocks)]
        self.final_tokens = "tokens" if tokens else None
        self.head_name = f"model.{head_name}" if head_name else None
        self.has_logits = head_name is not None
        self.feature_dim = int(feature_dim)
        self.patch_size = patch_size
        self.patch_grid: tuple[int, int] | None = None
        self.input_spec = input_spec
        self.source = source
        self.pretrained = bool(pretrained)  # weights from elsewhere (not trained by adaptkd)
        self.trained_here = False  # set when an adaptkd checkpoint of this adapter is loaded
        self.notes = list(notes or [])
        self.label_names: list[str] | None = None  # a pretrained head's own class names, in order

    def adapt_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A state_dict of the library's model itself (keys without ``model.``) as this adapter's.

        So a plain ``torch.save(hf_or_timm_model.state_dict())`` loads as ``checkpoint:`` (trained
        elsewhere: the model keeps its own input spec); an adapter's own state_dict (every key under
        ``model.``, as adaptkd saves it) is returned unchanged and marks the model as trained by
        adaptkd on the run's data (``trained_here``: as a teacher it is then fed the data as is).
        """
        if any(k.startswith("model.") for k in state):
            self.trained_here = True
            return state
        return {f"model.{k}": v for k, v in state.items()}

    def run(self, x: Tensor) -> tuple[Tensor, list[Any], Tensor | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.patch_size is not None:
            self.patch_grid = (x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1])
        out, blocks, final = self.run(x)
        for view, h in zip(self.blocks, blocks):
            view(h, token_layout(h.shape[1], self.patch_grid) if isinstance(h, Tensor) and h.dim() == 3 else 1)
        if self.tokens is not None and final is not None:
            self.tokens(final, token_layout(final.shape[1], self.patch_grid))
        return out

    def extra_repr(self) -> str:
        return f"family={self.family!r}, source={self.source!r}, logits={self.has_logits}"


def pooled(final: Tensor | None, last: Any, grid: tuple[int, int] | None) -> Tensor:
    """A backbone's pooled feature [B, D]: the class token of its final tokens, or the mean of its last map."""
    if final is not None and final.dim() == 3:
        return final[:, 0] if token_layout(final.shape[1], grid) >= 1 else final.mean(1)
    if isinstance(last, Tensor) and last.dim() == 4:
        return last.mean((2, 3))
    raise ValueError(f"cannot pool a backbone output of shape {getattr(last, 'shape', None)}")


class HookedStages:
    """Forward hooks collecting the outputs of ``names`` (submodules of ``model``) in one forward.

    Used by the timm and torchvision adapters, whose stage modules return plain tensors.
    """

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"stage modules {missing} do not exist in {type(model).__name__}")
        self.names = list(names)
        self.outputs: dict[str, Any] = {}
        for n in names:
            modules[n].register_forward_hook(self._hook(n))

    def _hook(self, name: str):
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[name] = output

        return fn

    def take(self) -> list[Any]:
        out = [self.outputs.get(n) for n in self.names]
        self.outputs = {}
        return out
