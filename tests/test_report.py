"""The report card: a page per run or comparison, its figures, its numbers, its text version, safety."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import torch

from adaptkd.engine.logger import read_metrics
from adaptkd.methods import list_methods
from adaptkd.report import ReportError, build_report, load_run, print_report, signal_keys, sparkline
from tests.conftest import tiny_config

TEACHER = {"arch": "cnn_small"}

# One tiny run per method family present: (name, method, how to build its config, dedicated figure)
FAMILIES = [
    ("ce", "ce", "plain", None),
    ("kd", "kd", "teacher", None),
    ("dkd", "dkd", "teacher", None),
    ("dtkd", "dtkd", "teacher", "signal-dtkd-dtkd.png"),
    ("compose", "compose", "compose", "signal-dtkd-dtkd.png"),
    ("afd", "afd", "teacher", None),
    ("rtk", "rtk", "teacher", "signal-rtk.png"),
    ("fitnet", "fitnet", "teacher", None),
    ("dml", "dml", "peer", None),
    ("switokd", "switokd", "online", "signal-switokd-teacher0-student.png"),
    ("unic", "unic", "unic", "signal-unic.png"),
    ("gradient", "kd", "gradient", "signal-balance-student.png"),
]
PRESENT = [f for f in FAMILIES if f[1] in list_methods()]


def family_config(out, method: str, how: str, ckpt: str) -> dict:
    teachers = [{**TEACHER, "checkpoint": ckpt}] if how in ("teacher", "compose", "gradient") else None
    if how == "online":
        teachers = [{**TEACHER, "trainable": True}]
    if how == "unic":
        teachers = [{**TEACHER, "random_init": True},
                    {"arch": "vit_tiny", "random_init": True, "args": {"img_size": 8, "patch_size": 4, "depth": 2}}]
    cfg = tiny_config(out, method, teachers=teachers)
    if how == "peer":
        cfg["peers"] = [{"arch": "cnn_tiny"}]
    if how == "compose":
        cfg["method"]["terms"] = [{"loss": "ce"}, {"loss": "dtkd"}]
    if how == "gradient":
        cfg["balance"] = {"name": "gradient"}
    if how == "unic":
        cfg["student"] = {"arch": "vit_tiny", "args": {"img_size": 8, "patch_size": 2, "depth": 2}}
        cfg["optim"].update({"name": "adamw", "lr": 1e-3, "weight_decay": 0.03})
    cfg["run"].update(max_steps_per_epoch=2, log_every=1)
    cfg["data"]["test_size"] = 120  # every network is evaluated several times: keep it small
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory, teacher_ckpt):
    """Tiny trained runs, one per method family present (2 epochs of 2 steps)."""
    from adaptkd.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("families")
    out = {}
    for name, method, how, _ in PRESENT:
        Trainer(family_config(root / name, method, how, teacher_ckpt), log=lambda s: None).fit()
        out[name] = root / name
    return out


def png_pixels(path):
    from PIL import Image

    import numpy as np

    with Image.open(path) as im:
        return im.size, torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32))


def referenced_images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", [f[0] for f in PRESENT])
def test_report_renders_for_each_method_family(runs, family):
    dedicated = dict((f[0], f[3]) for f in PRESENT)[family]
    rep = build_report(runs[family], evaluate=False, measure=False)
    assert rep.out == runs[family] / "report"
    html = rep.html.read_text()
    imgs = referenced_images(html)
    assert imgs and sorted(imgs) == sorted(p.name for p in rep.figures)
    for name in imgs:
        assert (rep.out / name).is_file() and (rep.out / name).stat().st_size > 2000, name
    assert "curves.png" in imgs and "accuracy.png" in imgs
    if dedicated:
        assert dedicated in imgs
    # every signal the run logged is drawn somewhere (generic panels catch new methods' signals)
    found = signal_keys(load_run(runs[family]))
    assert set(found) <= set(rep.plotted[family]), set(found) - set(rep.plotted[family])
    if family in ("dtkd", "switokd", "unic", "rtk", "gradient", "afd"):
        assert found, f"{family} logged no signals"
    md = rep.markdown.read_text()
    for name in imgs:
        assert f"]({name})" in md


def test_single_run_report_numbers_are_right(runs, teacher_ckpt):
    """kd: evaluation, agreement and per-class match an independent computation; PNGs are real."""
    from adaptkd.data import Augment, build_data
    from adaptkd.engine.evaluate import load_run_model, predict

    run = runs["kd"]
    rep = build_report(run, measure=True)
    man = json.loads(rep.manifest.read_text())
    by_role = {m["role"]: m for m in man["models"]}
    assert set(by_role) == {"student", "teacher"} and all(m["evaluated"] for m in man["models"])
    for m in man["models"]:
        assert m["params"] > 0 and m["size_bytes"] > 0 and m["flops"] > 0
        assert m["latency_b1"]["median_ms"] > 0 and m["latency_b1"]["threads"] == 1 and m["latency_b1"]["runs"] >= 10
        assert m["throughput_b64"]["images_per_s"] > 0 and m["throughput_b64"]["batch"] == 64
    data = build_data("digits", test_size=120)
    aug = Augment(data.mean, data.std, train=False)
    student, _ = load_run_model(str(run), "student")
    teacher, _ = load_run_model(teacher_ckpt, "student")
    ps = predict(student, data.test.x, aug).argmax(1)
    pt = predict(teacher, data.test.x, aug).argmax(1)
    y = data.test.y
    n = len(y)

    def pct(mask):
        return 100.0 * int(mask.sum()) / n

    assert by_role["student"]["top1"] == pytest.approx(pct(ps == y), abs=1e-5)  # engine: float32 mean
    assert by_role["teacher"]["top1"] == pytest.approx(pct(pt == y), abs=1e-5)
    (pair,) = man["agreement"]
    assert pair["agree"] == pytest.approx(pct(ps == pt), abs=1e-9)
    assert pair["teacher_only"] == pytest.approx(pct((ps != pt) & (pt == y) & (ps != y)), abs=1e-9)
    parts = ("agree_right", "agree_wrong", "teacher_only", "student_only", "disagree_wrong")
    assert sum(pair[k] for k in parts) == pytest.approx(100.0, abs=1e-9)
    names = {p.name for p in rep.figures}
    assert {"accuracy.png", "per_class.png", "agreement.png", "tradeoff.png", "curves.png"} <= names
    size, px = png_pixels(rep.out / "curves.png")
    assert 600 <= size[0] <= 2000 and 300 <= size[1] <= 1500
    assert px.std() > 10, "curves.png is blank"
    html = rep.html.read_text()
    assert "cnn_small" in html and "cnn_tiny" in html and "Agreement" in html and "thr)" in html
    assert "<script" not in html and "http" not in html  # self-contained, nothing fetched


def test_text_version_terminal_and_markdown(runs):
    from rich.console import Console

    rep = build_report(runs["dtkd"] if "dtkd" in runs else runs["kd"], evaluate=False, measure=False)
    con = Console(record=True, width=140)
    print_report(rep, con)
    text = con.export_text()
    md = rep.markdown.read_text()
    for out in (text, md):
        assert "Models: teacher vs student" in out and "cnn_tiny" in out
        assert any(ch in out for ch in "▁▂▃▄▅▆▇█")  # curves as sparklines
    assert str(rep.html) in text.replace("\n", "")
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, float("nan"), 1.0]) == "▄ ▄"


def test_comparison_overlays_runs(runs, tmp_path):
    names = [n for n in ("ce", "kd", "dtkd", "switokd") if n in runs]
    rep = build_report([runs[n] for n in names], tmp_path / "cmp", evaluate=False, measure=False)
    assert rep.out == tmp_path / "cmp"
    runs_table = rep.sections[0].blocks[[type(b).__name__ for b in rep.sections[0].blocks].index("Table")]
    assert [r[0] for r in runs_table.rows] == names
    curves = next(b for s in rep.sections for b in getattr(s, "blocks", []) if getattr(b, "file", "") == "curves.png")
    acc_lines = {s.label for s in curves.series if s.label.startswith("accuracy %")}
    assert {f"accuracy %: {n} test" for n in names} <= acc_lines
    html = rep.html.read_text()
    assert all((rep.out / f).is_file() for f in referenced_images(html))
    with pytest.raises(ReportError, match="--out"):
        build_report([runs[n] for n in names])


# ----------------------------------------------------------------------------------------------
# Output safety


def test_refuses_unsafe_outputs(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["kd"], run, ignore=shutil.ignore_patterns("report"))
    victim = tmp_path / "victim"
    victim.mkdir()
    # report folder planted as a link to elsewhere
    os.symlink(victim, run / "report")
    with pytest.raises(ReportError, match="symbolic link"):
        build_report(run, evaluate=False, measure=False)
    os.unlink(run / "report")
    # a file planted as a link inside the report folder
    (run / "report").mkdir()
    target = victim / "keep.txt"
    target.write_text("untouched")
    os.symlink(target, run / "report" / "accuracy.png")
    with pytest.raises(ReportError, match="symbolic link"):
        build_report(run, evaluate=False, measure=False)
    assert target.read_text() == "untouched"
    # --out itself a link
    os.symlink(victim, tmp_path / "outlink")
    with pytest.raises(ReportError, match="symbolic link"):
        build_report(runs["kd"], tmp_path / "outlink", evaluate=False, measure=False)
    with pytest.raises(ReportError, match="not an adaptkd run folder"):
        build_report(victim, tmp_path / "o", evaluate=False, measure=False)


def test_signal_names_cannot_escape_the_report_folder(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["kd"], run, ignore=shutil.ignore_patterns("report"))
    recs = read_metrics(run / "metrics.jsonl")
    step = dict(next(r for r in recs if r["kind"] == "step"))
    step.update({"../../escape/x": 1.0, "/abs/y": [0.5, 0.25], "newmethod/weird name": 2.0})
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(step) + "\n")
    before = set(os.listdir(tmp_path))
    rep = build_report(run, evaluate=False, measure=False)
    assert set(os.listdir(tmp_path)) == before
    assert {p.parent for p in rep.figures} == {run / "report"}
    assert {"../../escape/x", "/abs/y", "newmethod/weird name"} <= set(rep.plotted["run"])


def test_cli_report(runs, tmp_path, capsys):
    from adaptkd.cli import main

    assert main(["report", str(runs["kd"]), "--no-eval", "--no-measure", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    assert main(["report", str(runs["kd"]), str(runs["ce"])]) == 2
    assert "--out" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Headless browser: every image of the page loads


CHECK = ("<script>window.addEventListener('load',()=>{const r=Array.from(document.images).map(i=>({src:"
         "i.getAttribute('src'),ok:i.complete&&i.naturalWidth>0}));const p=document.createElement('pre');"
         "p.id='imgcheck';p.textContent=JSON.stringify(r);document.body.appendChild(p);});</script>")


def browser_image_status(page) -> list[dict]:
    """Open ``page`` (a copy with CHECK injected) in headless Chromium; each image's load status."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    probe = page.with_name("_probe.html")
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    try:
        res = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', res.stdout, re.S)
    assert m, f"chromium printed no check result: {res.stderr[-500:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="Chromium is not installed (apt-get install chromium): headless page check skipped")
def test_every_image_loads_in_headless_chromium(runs, tmp_path):
    rep = build_report(runs["kd"], tmp_path / "page", evaluate=False, measure=False)
    status = browser_image_status(rep.html)
    assert len(status) == len(rep.figures) and all(s["ok"] for s in status), status
    (rep.out / "curves.png").unlink()  # the check can fail: a missing figure is reported as not loaded
    status = browser_image_status(rep.html)
    assert [s["src"] for s in status if not s["ok"]] == ["curves.png"]
