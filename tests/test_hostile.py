"""Hostile values: a property-based test over every numeric option of every registered section,
and the quick part of the hostile-config campaign (``tests/hostile_cases.py``) through the CLI."""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from adaptkd.balance import BALANCERS
from adaptkd.config import Config, ConfigError, load_config
from adaptkd.methods.base import METHODS
from tests.hostile_cases import METHOD_SETUP, base_config, cases, run_case

ROOT = Path(__file__).resolve().parents[1]


def _kinds(annotation: Any) -> set[type]:
    """The scalar types an annotation admits (through Annotated, Optional, unions, tuples)."""
    if annotation in (int, float, bool, str):
        return {annotation}
    out: set[type] = set()
    for arg in typing.get_args(annotation):
        out |= _kinds(arg)
    return out


def _is_tuple(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return True
    return any(_is_tuple(a) for a in typing.get_args(annotation))


def numeric_fields() -> list[tuple[str, str, str, bool]]:
    """(section, method or balancer name, field, is a pair) for every numeric option registered."""
    out = []
    models: list[tuple[str, str, type[BaseModel]]] = [
        (section, "", Config.model_fields[section].annotation) for section in ("data", "optim", "run")
    ]
    models += [("method", name, METHODS.get(name).Params) for name in METHOD_SETUP if name in METHODS.names()]
    models += [("balance", name, BALANCERS.get(name).Params) for name in BALANCERS.names()]
    for section, owner, model in models:
        for name, info in model.model_fields.items():
            kinds = _kinds(info.annotation)
            if kinds & {int, float}:
                out.append((section, owner, name, _is_tuple(info.annotation)))
    return out


FIELDS = numeric_fields()
#: a balancer option that only one controller takes, and that controller
CONTROLLER = {"kappa": "ratio", "task_safe": "ratio", "w0": "cosine_gate", "gate": "cosine_gate"}
HOSTILE = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -1, -1e-9, 1e300, 10**20, 2**64, True, False, "text",
                     [1], {"a": 1}, None]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)


def _raw(tmp: Path, section: str, owner: str, name: str, pair: bool, value: Any) -> dict:
    value = [value, 0.5] if pair else value
    if section == "method":
        teachers, opts = METHOD_SETUP[owner]
        return base_config(tmp, {"name": owner, **opts, name: value}, teachers)
    if section == "balance":
        extra = {"controller": CONTROLLER[name]} if name in CONTROLLER else {}
        return base_config(tmp, {"name": "kd"}, METHOD_SETUP["kd"][0], balance={"name": owner, **extra, name: value})
    return base_config(tmp, **{section: {name: value}})


def test_every_registered_section_has_its_numeric_options_found():
    names = {f"{s}.{o}.{n}" for s, o, n, _ in FIELDS}
    for expected in ("optim..lr", "optim..betas", "data..image_size", "run..seed", "run..threads",
                     "method.kd.temperature",
                     "method.rtk.k", "method.rtk.threshold", "method.afd.qk_dim", "method.unic.hidden_mult",
                     "balance.gradient.rho", "balance.gradient.lambda0"):
        assert expected in names, expected
    assert len(FIELDS) >= 60


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=HOSTILE)
def test_a_hostile_value_is_refused_naming_the_field_or_is_sane(tmp_path, field, value):
    """NaN, ±inf, 0, negatives, huge numbers, booleans and wrong types in any numeric option:
    refused naming the option, or accepted as a finite number of the option's type."""
    section, owner, name, pair = field
    try:
        cfg = load_config(_raw(tmp_path / "run", section, owner, name, pair, value))
    except ConfigError as exc:
        msg = str(exc)  # names the option: `section.name`, or `name` / name=value in a check across options
        assert f"{section}.{name}" in msg or f"`{name}`" in msg or f"{name}=" in msg, msg
        return
    assert not isinstance(value, bool), f"{section}.{name} took the boolean {value} as a number"
    node: Any = getattr(cfg, section)
    got = (node.options() if section in ("method", "balance") else node.model_dump()).get(name, value)
    for v in (got if isinstance(got, (list, tuple)) else [got]):
        if isinstance(v, float):
            assert math.isfinite(v), (name, value)
        if isinstance(v, int) and not isinstance(v, bool):
            assert abs(v) <= 2**64, (name, value)


# ----------------------------------------------------------------------------------------------
# the campaign's quick part, through the CLI

QUICK = [c for i, c in enumerate(cases())
         if c.category in ("yaml", "run folder", "device", "model/data", "unknown name", "wrong type")
         or c.label in ("lr at its bound (1000)", "kd temperature 0.01", "seed 2**32-1")
         or (not c.trains and i % 4 == 0)]


@pytest.mark.parametrize("case", QUICK, ids=[f"{c.category}: {c.label}" for c in QUICK])
def test_campaign_case_is_clean(case, tmp_path):
    outcome, rc, err = run_case(case, tmp_path)
    if case.trains:
        assert outcome == "finite", (outcome, rc, err)
        return
    assert outcome == "refused", (outcome, rc, err)
    assert err.startswith("adaptkd: error: ") and err.count("\n") <= 3, err
    msg = err.strip().splitlines()[-1][:300].replace(str(tmp_path), "<case>")
    cell = msg.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    stale = "docs/errors.md is out of date (python tests/bad_input_cases.py --markdown)"
    assert _volatile_free(cell) in DOCUMENTED, f"{stale}: {msg}"


def _volatile_free(text: str) -> str:
    """A message without what depends on the folder it ran in (a value quoting the path, sizes)."""
    text = re.sub(r"value '.*?' is invalid", "value ... is invalid", text)
    return re.sub(r"\d[\d,]*", "N", text)[:200]


DOCUMENTED = {_volatile_free(line.split(" | ")[-1].rstrip(" |")) for line in
              (ROOT / "docs" / "errors.md").read_text(encoding="utf-8").splitlines() if line.startswith("| ")}


def test_unknown_keys_get_a_suggestion_at_every_level(tmp_path):
    for over, hint in [("optim.epoch=3", "`epochs`"), ("optim.learning_rate=0.1", "`lr`"),
                       ("data.batchsize=8", "`batch_size`"), ("runn.seed=1", "`run`"),
                       ("student.argz={}", "`args`")]:
        with pytest.raises(ConfigError, match=f"did you mean {hint}"):
            load_config(base_config(tmp_path / "r"), [over])
    with pytest.raises(ConfigError, match="did you mean `temperature`"):
        load_config(base_config(tmp_path / "r", {"name": "kd", "temprature": 4}, METHOD_SETUP["kd"][0]))
    with pytest.raises(ConfigError, match="did you mean `student_taps`"):  # FitNet's old spelling
        load_config(base_config(tmp_path / "r", {"name": "fitnet", "student_tap": "stages.1"}, METHOD_SETUP["kd"][0]))
    with pytest.raises(ConfigError, match="did you mean `rho`"):
        load_config(base_config(tmp_path / "r", {"name": "kd"}, METHOD_SETUP["kd"][0],
                                balance={"name": "gradient", "rhoo": 1.0}))


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    import time

    from tests.hostile_cases import _alias_bomb

    path = tmp_path / "c.yaml"
    path.write_text(_alias_bomb("student.args")(tmp_path))
    assert len(path.read_bytes()) < 1024
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases"):
        load_config(path)
    assert time.perf_counter() - t0 < 5
