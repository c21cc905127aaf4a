"""``adaptkd compare``: recipe checks, statistics, end to end (shortened) with resume, and the demo."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from adaptkd.cli import main
from adaptkd.compare import paired, plan, read_recipe, run_state, t_interval
from adaptkd.config import ConfigError, load_config


def tiny_recipe() -> dict:
    return {
        "common": {"data": {"name": "digits", "batch_size": 32, "crop_padding": 1, "flip": False, "val_size": 200},
                   "optim": {"lr": 0.05, "epochs": 1, "schedule": "cosine", "milestones": []},
                   "run": {"log_every": 5, "progress": False, "latency": False, "max_steps_per_epoch": 4,
                           "tensorboard": False, "threads": 1}},
        "teacher": {"student": {"arch": "cnn_small"}},
        "student": {"student": {"arch": "cnn_tiny"}},
        "seeds": 2,
        "methods": {"ce": {}, "kd": {"method": {"temperature": 4.0}, "baseline": "ce"}},
    }


def test_t_interval_and_verdicts():
    m, lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 df) * sd 1 / sqrt(3)
    assert m == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert t_interval([1.0]) is None
    assert paired({0: 2.0, 1: 2.1, 2: 2.2}, {0: 1.0, 1: 1.0, 2: 1.0, 3: 9.0})["verdict"] == "helps"
    assert paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 2.0, 1: 2.5, 2: 2.2})["verdict"] == "hurts"
    d = paired({0: 1.0, 1: 3.0}, {0: 2.0, 1: 2.0})
    assert d["verdict"] == "no detectable effect" and d["seeds"] == [0, 1] and d["wins"] == 1


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r.update(extra=1), "unknown section"),
    (lambda r: r["methods"]["kd"].update(baseline="nope"), "methods.kd.baseline"),
    (lambda r: r["methods"].update(teacher={}), "name both a teacher and a method"),
    (lambda r: r.update(seeds=0), "`seeds`"),
    (lambda r: r["methods"]["kd"].update(seeds=[1, 1]), "methods.kd.seeds"),
    (lambda r: r["methods"]["kd"].update(teachers=["ghost"]), "methods.kd.teachers.0"),
    (lambda r: r.update(methods={}), "`methods`"),
    (lambda r: r["methods"].update(kdd={}), "methods.kdd"),
])
def test_bad_recipes_name_the_field(tmp_path, change, fragment):
    r = tiny_recipe()
    change(r)
    with pytest.raises(ConfigError, match=fragment.replace("`", "`").replace(".", r"\.")):
        plan(r, tmp_path)


def test_plan_resolves_teachers_seeds_and_overlays(tmp_path):
    r = tiny_recipe()
    r["extra_teachers"] = {"wide": {"student": {"arch": "cnn_medium"}}}
    r["methods"]["mt"] = {"method": {"name": "kd"}, "teachers": ["teacher", "wide"], "seeds": [5]}
    r["methods"]["unused_teacher"] = {"method": {"name": "ce"}}
    p = plan(r, tmp_path / "o", overrides=["optim.lr=0.1"])
    assert [t.label for t in p.teachers] == ["teacher", "wide"]
    by = {(s.label, s.seed): s.config for s in p.students}
    assert sorted(by) == [("ce", 0), ("ce", 1), ("kd", 0), ("kd", 1), ("mt", 5), ("unused_teacher", 0),
                          ("unused_teacher", 1)]
    assert by[("ce", 0)]["teachers"] == [] and by[("kd", 1)]["run"]["seed"] == 1
    assert [t["checkpoint"] for t in by[("mt", 5)]["teachers"]] == [str(tmp_path / "o" / "teacher" / "last.pt"),
                                                                    str(tmp_path / "o" / "wide" / "last.pt")]
    assert by[("mt", 5)]["method"]["name"] == "kd" and by[("kd", 0)]["optim"]["lr"] == 0.1
    assert p.baselines == {"kd": "ce"}
    assert len(plan(r, tmp_path / "o", methods=["ce"], seeds=1).students) == 1


def test_a_recipe_teacher_with_options_starts_from_its_final_epoch(tmp_path):
    """``{name: teacher, trainable: true}``: the trained recipe teacher, trained on online (dml, switokd);
    a mapping with ``arch`` is the config's own teacher, as before."""
    from adaptkd.compare import execute
    from adaptkd.engine.trainer import Trainer

    r = tiny_recipe()
    r["methods"] = {"kd": {"method": {"temperature": 4.0}},
                    "dml_on": {"method": {"name": "dml"}, "teachers": [{"name": "teacher", "trainable": True}]},
                    "dml": {"teachers": [{"name": "peer", "arch": "cnn_tiny", "trainable": True}]}}
    p = plan(r, tmp_path / "o", seeds=1)
    by = {s.label: s for s in p.students}
    last = str(tmp_path / "o" / "teacher" / "last.pt")
    assert [t.label for t in p.teachers] == ["teacher"]
    assert by["dml_on"].config["teachers"] == [{"arch": "cnn_small", "checkpoint": last, "trainable": True}]
    assert by["dml"].config["teachers"] == [{"arch": "cnn_tiny", "trainable": True}]
    execute(p.teachers, log=lambda line: None)
    frozen = Trainer(load_config(by["kd"].config), log=lambda line: None)
    online = Trainer(load_config(by["dml_on"].config), log=lambda line: None)
    assert "teacher0" in online.learners and "teacher0" in frozen.frozen
    want, got = frozen.networks["teacher0"].state_dict(), online.networks["teacher0"].state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_compare_end_to_end_resumes_a_half_finished_comparison(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    out = tmp_path / "cmp"
    assert main(["compare", str(recipe), "--out", str(out), "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "5 run(s)" not in text and "4 run(s) to train" in text
    res = json.loads((out / "compare.json").read_text())
    kd = res["methods"]["kd"]
    assert sorted(kd["final"]) == ["0", "1"] and kd["vs_ce"]["ci"] is not None and len(kd["vs_ce"]["diffs"]) == 2
    assert set(kd["best_val"]) == {"0", "1"}  # a validation split: test top-1 of the best-val epoch too
    md = (out / "compare.md").read_text()
    assert "| student (kd) |" in md and "Protocol" in md and "95 %" in md and "vs ce" in md
    # half-finished: one run lost its summary (stopped after its last epoch), another never started
    (out / "kd" / "seed1" / "summary.json").unlink()
    for f in (out / "ce" / "seed1").iterdir():
        f.unlink()
    specs = {(s.label, s.seed): s for s in plan(tiny_recipe(), out).students}
    assert run_state(specs[("kd", 1)]) == "partial" and run_state(specs[("ce", 1)]) == "new"
    assert run_state(specs[("kd", 0)]) == "done"
    assert main(["compare", str(recipe), "--out", str(out), "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "2 run(s) to train, 2 reused" in text and "kd seed 1 (resuming)" in text
    again = json.loads((out / "compare.json").read_text())
    assert again["methods"]["kd"]["final"] == kd["final"]  # the exact continuation and the rerun agree
    assert again["methods"]["ce"]["final"] == res["methods"]["ce"]["final"]


def test_compare_two_processes_match_one(tmp_path, capsys):
    r = tiny_recipe()
    r["methods"] = {"ce": {}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    assert main(["compare", str(path), "--out", str(tmp_path / "a"), "--no-report", "--jobs", "2"]) == 0
    assert main(["compare", str(path), "--out", str(tmp_path / "b"), "--no-report"]) == 0
    a = json.loads((tmp_path / "a" / "compare.json").read_text())["methods"]["ce"]["final"]
    b = json.loads((tmp_path / "b" / "compare.json").read_text())["methods"]["ce"]["final"]
    assert a == b


def test_bundled_recipes_use_the_compare_schema(tmp_path):
    from pathlib import Path

    from adaptkd.commands.demo import demo_recipe

    root = Path(__file__).resolve().parents[1]
    for name in ("synthetic", "digits", "fashion_mnist", "fashion_mnist_short"):
        recipe = root / "benchmarks" / f"{name}.yaml"
        p = plan(read_recipe(recipe), tmp_path)
        assert p.students and "ce" in {s.label for s in p.students}
        for spec in p.students + p.teachers:  # every run's config is valid (options, networks, registries)
            raw = {**spec.config, "teachers": [{**{k: v for k, v in t.items() if k != "checkpoint"},
                                                **({"random_init": True} if "checkpoint" in t else {})}
                                               for t in spec.config.get("teachers", [])]}
            load_config(raw)
    p = plan(demo_recipe(), tmp_path)
    assert [s.label for s in p.students] == ["ce", "kd", "dkd"] and [t.label for t in p.teachers] == ["teacher"]


def test_no_train_reports_what_finished_and_lists_the_rest(tmp_path, capsys):
    r = tiny_recipe()
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    out = tmp_path / "o"
    assert main(["compare", str(path), "--out", str(out), "--no-report", "--methods", "ce", "--seeds", "1"]) == 0
    capsys.readouterr()
    assert main(["compare", str(path), "--out", str(out), "--no-report", "--no-train"]) == 0
    text = capsys.readouterr().out
    assert "missing: student kd seed 0" in text and "missing: student ce seed 1" in text
    assert "missing: student ce seed 0" not in text
    res = json.loads((out / "compare.json").read_text())
    assert list(res["methods"]) == ["ce"] and not (out / "kd").exists()
