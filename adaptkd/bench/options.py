"""The one option syntax of ``adaptkd bench``: ``NAME:key=value:...`` for balancers, ``--variant``
methods and networks, and comma-separated lists of them."""

from __future__ import annotations

import re
from typing import Any

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
