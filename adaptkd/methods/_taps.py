"""Which layers a feature method taps, and the shapes they give: shared by ``afd``, ``rtk`` and ``fitnet``.

A method option (``student_taps`` / ``teacher_taps``) names module paths; left unset, a zoo model's
``tap_blocks`` are used (:func:`default_taps`: all of them; :func:`middle_tap`: the middle one).
:func:`probe_shapes` runs the network once on the context's sample batch (no grad, eval mode; see
:meth:`~adaptkd.methods.base.MethodContext.probe_features`) and checks each tap gives a feature map.
Every error is a ``ValueError`` naming the option (the engine reports it as a config error).
"""

from __future__ import annotations

from torch import Tensor

from adaptkd.methods.base import MethodContext

__all__ = ["default_taps", "middle_tap", "probe_shapes"]


def default_taps(ctx: MethodContext, network: str, given: list[str] | None, option: str) -> list[str]:
    """The taps named in the config (``given``), else the zoo model's ``tap_blocks`` (clear error otherwise)."""
    if given:
        return list(given)
    net = ctx.networks[network]
    blocks = getattr(net, "tap_blocks", None)
    if not blocks:
        raise ValueError(
            f"method option `{option}`: network {network!r} ({type(net).__name__}) has no `tap_blocks`; "
            f"list the module paths to tap in `{option}` (see adaptkd.taps.list_taps)"
        )
    return list(blocks)


def middle_tap(ctx: MethodContext, network: str, given: str | None, option: str) -> str:
    """The one tap named in the config (``given``), else the middle entry of the zoo model's ``tap_blocks``
    (the lower one of an even count)."""
    if given:
        return given
    blocks = default_taps(ctx, network, None, option)
    return blocks[(len(blocks) - 1) // 2]


def probe_shapes(ctx: MethodContext, network: str, taps: list[str], option: str) -> list[tuple[int, int, int]]:
    """``(C, H, W)`` of each tap of ``network`` on the sample input; 4-D features only."""
    try:
        feats = ctx.probe_features(network, taps)
    except KeyError as exc:
        raise ValueError(f"method option `{option}`: {exc.args[0]}") from None
    shapes = []
    for name in taps:
        f = feats.get(name)
        if not isinstance(f, Tensor) or f.dim() != 4:
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(
                f"method option `{option}`: tap {name!r} of {network!r} gives {got}; feature distillation "
                "needs [B, C, H, W] feature maps (tap a convolutional block)"
            )
        shapes.append((int(f.shape[1]), int(f.shape[2]), int(f.shape[3])))
    return shapes
