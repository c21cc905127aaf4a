"""The command line end to end: demo (shortened), list, train, eval."""

from __future__ import annotations

import json

import yaml

from adaptkd.cli import main
from adaptkd.methods import list_methods
from tests.conftest import tiny_config


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("teacher (ce)", "student (ce)", "student (kd)", "student (dkd)"):
        assert row in text
    for run in ("teacher", "ce", "kd", "dkd"):
        assert (out / run / "best.pt").is_file() and (out / run / "summary.json").is_file()
    demo = json.loads((out / "demo.json").read_text())
    assert [r["model"] for r in demo["rows"]] == ["teacher (ce)", "student (ce)", "student (kd)", "student (dkd)"]
    assert (out / "report" / "report.html").is_file()
    assert "report.html" in text


def test_demo_table_shows_each_model_against_ce():
    from rich.console import Console

    from adaptkd.commands.demo import comparison_table

    def row(acc):
        return {"final_acc": acc, "params": 10, "size_bytes": 2048}

    rows = [("teacher (ce)", "t", row(99.0)), ("student (ce)", "s", row(95.0)), ("student (kd)", "s", row(96.5)),
            ("student (dkd)", "s", row(94.25))]
    console = Console(width=200, record=True)
    console.print(comparison_table(rows))
    lines = console.export_text().splitlines()
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in lines if "│" in line}
    assert cells["teacher (ce)"][2] == "+4.00"
    assert cells["student (ce)"][2] == "-"
    assert cells["student (kd)"][2] == "+1.50" and cells["student (dkd)"][2] == "-0.75"


def test_list_names_every_registry(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for line in ("methods:", "models:", "datasets:", "balancers:"):
        assert line in text
    for m in list_methods():
        assert m in text
    assert "resnet32x4" in text and "synthetic" in text and "fixed" in text


def test_train_then_eval_then_resume_with_override_after_option(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", "ce", **{"optim__epochs": 1})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line)["out"].endswith("run")
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= res["networks"]["student"]["top1"] <= 100
    # one more epoch: overrides may follow --resume
    assert main(["train", str(path), "--resume", "optim.epochs=2"]) == 0


def test_bad_override_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run", "ce")))
    assert main(["train", str(path), "optim.lr=-3"]) == 2
    err = capsys.readouterr().err
    assert "adaptkd: error:" in err and "optim.lr" in err
