"""The command line end to end: demo (shortened), list, train, eval."""

from __future__ import annotations

import json

import yaml

from adaptkd.cli import main
from adaptkd.methods import list_methods
from tests.helpers import tiny_config


def test_demo_quick_end_to_end_runs_through_compare(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("teacher (ce)", "student (ce)", "student (kd)", "student (dkd)"):
        assert row in text
    assert (out / "teacher" / "last.pt").is_file()
    for run in ("ce", "kd", "dkd"):
        assert (out / run / "seed0" / "best.pt").is_file() and (out / run / "seed0" / "summary.json").is_file()
    res = json.loads((out / "compare.json").read_text())
    assert list(res["methods"]) == ["ce", "kd", "dkd"] and list(res["teachers"]) == ["teacher"]
    cfg = yaml.safe_load((out / "kd" / "seed0" / "config.yaml").read_text())
    assert cfg["teachers"][0]["checkpoint"].endswith("last.pt")  # distilled from the final-epoch teacher
    assert (out / "report" / "report.html").is_file() and "report.html" in text


def test_demo_table_shows_each_model_against_ce():
    from rich.console import Console

    from adaptkd.compare import terminal_table

    def card():
        return {"params": 10, "size_bytes": 2048, "latency_b1_ms": None}

    def method(acc):
        return {"arch": "s", "final_mean": acc, "final_std": None, "best_val_mean": None, "best_val_std": None,
                "final": {0: acc}, "card": card()}

    summary = {"teachers": {"teacher": {"arch": "t", "final_acc": 99.0, "card": card()}},
               "methods": {"ce": method(95.0), "kd": {**method(96.5), "vs_ce": paired_one(1.5)},
                           "dkd": {**method(94.25), "vs_ce": paired_one(-0.75)}}}
    console = Console(width=200, record=True)
    console.print(terminal_table(summary, "t"))
    lines = console.export_text().splitlines()
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in lines if "│" in line}
    assert cells["teacher (ce)"][2] == "+4.00"
    assert cells["student (ce)"][2] == "-"
    assert cells["student (kd)"][2] == "+1.50" and cells["student (dkd)"][2] == "-0.75"


def paired_one(diff):
    return {"mean": diff, "ci": None, "seeds": [0], "diffs": [diff], "wins": int(diff > 0), "verdict": "too few seeds"}


def test_list_names_every_registry(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for line in ("methods:", "models:", "datasets:", "balancers:"):
        assert line in text
    for m in list_methods():
        assert m in text
    assert "resnet32x4" in text and "synthetic" in text and "fixed" in text


def test_train_then_eval_then_resume_with_override_after_option(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", "ce", optim__epochs=1)
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
