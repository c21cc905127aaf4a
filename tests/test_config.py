"""Config loading, overrides and every error a user can make before training starts."""

from __future__ import annotations

import pytest
import yaml

from adaptkd.config import ConfigError, apply_overrides, load_config


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "method: {name: ce}\n"), ["optim.lr=0.1", "data.batch_size=16", "run.seed=3"])
    assert cfg.optim.lr == 0.1 and cfg.data.batch_size == 16 and cfg.run.seed == 3
    assert cfg.optim.milestones == [150, 180, 210] and cfg.optim.epochs == 240


def test_list_index_override():
    raw = apply_overrides({"teachers": [{"arch": "a"}]}, ["teachers.0.checkpoint=t.pt", "teachers.1.arch=b"])
    assert raw["teachers"] == [{"arch": "a", "checkpoint": "t.pt"}, {"arch": "b"}]


@pytest.mark.parametrize(
    "text, overrides, needle",
    [
        ("data: {name: digits, batch_sise: 3}\n", [], "data.batch_sise"),
        ("optim: {lr: fast}\n", [], "optim.lr"),
        ("optim: {lr: -1}\n", [], "optim.lr"),
        ("data: {name: cifar1000}\n", [], "data.name"),
        ("student: {arch: resnet9000}\n", [], "student.arch"),
        ("method: {name: kdd}\n", [], "method.name"),
        ("method: {name: kd, temperature: -4}\n", [], "method.temperature"),
        ("method: {name: kd, temprature: 4}\n", [], "method.temprature"),
        ("method: {name: dkd, warmup_epochs: 0}\n", [], "method.warmup_epochs"),
        ("balance: {name: magic}\n", [], "balance.name"),
        ("teachers: [{arch: cnn_small, checkpoint: nope.pt}]\nmethod: {name: kd}\n", [], "teachers.0.checkpoint"),
        ("teachers: [{arch: cnn_small}]\nmethod: {name: kd}\n", [], "teachers.0.checkpoint"),
        ("method: {name: kd}\n", [], "teachers"),
        ("data: {name: cifar100}\n", [], "data.root"),
        ("optim: {milestones: [30, 10]}\n", [], "optim.milestones"),
        ("unknown_section: 1\n", [], "unknown_section"),
        ("", ["optim.epochs=zero"], "optim.epochs"),
    ],
)
def test_errors_name_field_and_value(tmp_path, text, overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), overrides)
    assert needle in str(err.value)


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_config(write(tmp_path, "data:\n  name: [digits\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="key=value"):
        load_config(write(tmp_path, ""), ["optim.lr"])


def test_yaml_cannot_execute_code(tmp_path):
    evil = "data: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, evil))


def test_every_recipe_in_configs_validates():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert files, "no recipes found"
    for f in files:
        raw = yaml.safe_load(f.read_text())
        # Recipes reference teacher checkpoints and dataset folders that exist only on a
        # user's machine: validate everything else.
        cfg = load_config(raw, check=False)
        from adaptkd.methods import method_class
        from adaptkd.models import model_exists

        method_class(cfg.method.name).Params.model_validate(cfg.method.options())
        for net in [cfg.student, *cfg.teachers, *cfg.peers]:
            assert model_exists(net.arch), (f, net.arch)
