"""The report card: a page per run or comparison, its figures, its numbers, its text version, safety."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import torch

from adaptkd.engine.logger import read_metrics
from adaptkd.methods import list_methods
from adaptkd.report import (
    ReportError,
    build_report,
    load_run,
    print_report,
    signal_keys,
    sparkline,
)
from adaptkd.report.figures.base import accuracy_floor
from tests.helpers import tiny_config

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
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return im.size, torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32))


def referenced_images(html: str) -> list[str]:
    """Every <img src> of the page (the report embeds its figures: these are data URIs)."""
    return re.findall(r'<img src="([^"]+)"', html)


def embedded_figures(html: str) -> dict[str, bytes]:
    """``{figure file name: PNG bytes embedded in the page}``."""
    return {name: base64.b64decode(data) for data, name in
            re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*" title="([^"]+)"', html)}


def layout_problems(fig) -> list[str]:
    """Overlapping tick labels on one axis, and legends drawn over plotted data, in a rendered figure."""
    import numpy as np

    r = fig.canvas.get_renderer()  # the figure was drawn when its PNG was saved: the layout is final
    problems = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:
        for name, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
            boxes = [(lab.get_text(), lab.get_window_extent(r)) for lab in labels
                     if lab.get_visible() and lab.get_text()]
            for i, (ta, a) in enumerate(boxes):
                for tb, b in boxes[i + 1:]:
                    if a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1:
                        problems.append(f"{ax.get_title()!r}: {name} tick labels {ta!r} and {tb!r} overlap")
    page = fig.bbox
    for ax in axes:
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
            b = text.get_window_extent(r)
            outside = b.x0 < page.x0 - 1 or b.x1 > page.x1 + 1 or b.y0 < page.y0 - 1 or b.y1 > page.y1 + 1
            if text.get_text() and outside:
                problems.append(f"{text.get_text()!r} is cut at the edge of the figure")
    legends = [(ax.get_legend(), [ax]) for ax in axes if ax.get_legend()] + [(lg, axes) for lg in fig.legends]
    for lg, over in legends:
        box = lg.get_window_extent(r)
        for ax in over:
            pts = [line.get_xydata() for line in ax.get_lines()] + [c.get_offsets() for c in ax.collections
                                                                    if len(c.get_offsets())]
            for xy in pts:
                xy = np.asarray(xy, dtype=float)
                xy = xy[np.isfinite(xy).all(axis=1)]
                if not len(xy):
                    continue
                disp = ax.transData.transform(xy)
                inside = ((disp[:, 0] > box.x0) & (disp[:, 0] < box.x1) & (disp[:, 1] > box.y0) & (disp[:, 1] < box.y1))
                if inside.any():
                    problems.append(f"{ax.get_title()!r}: legend covers {int(inside.sum())} data points")
            for patch in ax.patches:
                pb = patch.get_window_extent(r)
                if pb.width > 0 and pb.height > 0 and pb.overlaps(box):
                    problems.append(f"{ax.get_title()!r}: legend covers a bar")
    return problems


def figure_blocks(rep) -> dict[str, object]:
    return {b.file: b for s in rep.sections for b in s.blocks if hasattr(b, "figure")}


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", [f[0] for f in PRESENT])
def test_report_renders_for_each_method_family(runs, family):
    dedicated = {f[0]: f[3] for f in PRESENT}[family]
    rep = build_report(runs[family], evaluate=False, measure=False)
    assert rep.out == runs[family] / "report"
    html = rep.html.read_text()
    embedded = embedded_figures(html)
    imgs = sorted(embedded)
    assert imgs and imgs == sorted(p.name for p in rep.figures)
    assert len(referenced_images(html)) == len(imgs)  # every <img> is an embedded figure, none links a file
    for name in imgs:
        assert embedded[name] == (rep.out / name).read_bytes() and len(embedded[name]) > 2000, name
    for name, block in figure_blocks(rep).items():
        assert layout_problems(block.figure) == [], name
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
    assert not re.search(r'<img src="(?!data:image/png;base64,)', html)  # figures embedded, no relative links
    assert sorted(embedded_figures(html)) == sorted(names)
    figs = figure_blocks(rep)
    for name, block in figs.items():
        assert layout_problems(block.figure) == [], name
    # accuracy axes: bars from 0; other accuracy axes from the stated floor (a multiple of 10, >= 5 points below)
    acc_ax = figs["accuracy.png"].figure.axes[0]
    assert acc_ax.get_xlim()[0] == 0 and "axis from 0" in acc_ax.get_xlabel()
    assert not any(p.get_hatch() for p in acc_ax.patches), "top-5 of 10 classes is drawn"
    trade_ax = figs["tradeoff.png"].figure.axes[0]
    lowest = min(m["top1"] for m in man["models"])
    assert trade_ax.get_ylim()[0] == accuracy_floor([lowest]) <= lowest - 5
    assert trade_ax.get_ylim()[0] == 0 or f"axis from {trade_ax.get_ylim()[0]:g} %" in trade_ax.get_ylabel()
    curve_titles = [ax.get_title() for ax in figs["curves.png"].figure.axes if ax.get_visible()]
    assert "weighted total (what was minimised)" in curve_titles and "loss term: kd (unweighted)" in curve_titles
    # a copy of the page alone keeps its figures
    copy = rep.out.parent / "copied.html"
    shutil.copy(rep.html, copy)
    assert embedded_figures(copy.read_text()) == {n: (rep.out / n).read_bytes() for n in names}


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
    # per-objective loss panels: one per term, every run that has the term on it; no weighted totals of
    # different objectives on one axis
    panels = {s.label.split(":")[0] for s in curves.series}
    assert "loss ce" in panels and not any("total" in p for p in panels), panels
    ce_runs = {s.label.split(": ")[1] for s in curves.series if s.label.startswith("loss ce:")}
    assert ce_runs == set(names)
    titles = [ax.get_title() for ax in curves.figure.axes if ax.get_visible()]
    assert "loss term: ce (unweighted)" in titles and "loss term: kd (unweighted)" in titles
    for name, block in figure_blocks(rep).items():
        assert layout_problems(block.figure) == [], name
    with pytest.raises(ReportError, match="--out"):
        build_report([runs[n] for n in names])


# ----------------------------------------------------------------------------------------------
# Seeds, figure layout, figure families


def seed_copies(run, root, accs: list[float]) -> list:
    """Copies of ``run`` that differ only in run.seed, with the given final top-1 in summary.json."""
    import yaml

    out = []
    for i, acc in enumerate(accs):
        dst = root / f"kd-s{i}"
        shutil.copytree(run, dst, ignore=shutil.ignore_patterns("report"))
        cfg = yaml.safe_load((dst / "config.yaml").read_text())
        cfg["run"].update(seed=i, out=str(dst))
        (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
        summ = json.loads((dst / "summary.json").read_text())
        summ["learners"]["student"]["final_acc"] = acc
        (dst / "summary.json").write_text(json.dumps(summ))
        recs = read_metrics(dst / "metrics.jsonl")  # a different test curve per seed
        with open(dst / "metrics.jsonl", "w") as fh:
            for r in recs:
                if "test/acc/student" in r:
                    r["test/acc/student"] += i
                fh.write(json.dumps(r) + "\n")
        out.append(dst)
    return out


def test_seeds_of_one_configuration_show_mean_and_spread(runs, tmp_path):
    import statistics

    accs = [61.0, 64.5, 70.25]
    copies = seed_copies(runs["kd"], tmp_path, accs)
    rep = build_report([runs["ce"], *copies], tmp_path / "cmp", evaluate=False, measure=False)
    table = next(b for b in rep.sections[0].blocks if getattr(b, "title", "") == "Across seeds")
    (row,) = table.rows
    assert row[0] == "kd (3 seeds)" and row[3] == "3" and row[4] == "0, 1, 2"
    assert row[5] == f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}"
    assert row[6] == "61.00 – 70.25"
    figs = figure_blocks(rep)
    acc_ax = figs["accuracy.png"].figure.axes[0]
    labels = [lab.get_text().split("\n")[0] for lab in acc_ax.get_yticklabels()]
    assert labels == ["ce", "kd (3 seeds)", "kd-s0/teacher0"]  # the shared teacher checkpoint: one model
    (whisker,) = [c for c in acc_ax.collections if hasattr(c, "get_segments") and len(c.get_segments()) == 1]
    (x0, _), (x1, _) = whisker.get_segments()[0]
    assert (x0, x1) == pytest.approx((statistics.mean(accs) - statistics.stdev(accs),
                                      statistics.mean(accs) + statistics.stdev(accs)))
    curves = figs["curves.png"]
    assert any(s.label.startswith("accuracy %: kd (3 seeds) test std over 3 seeds") for s in curves.series)
    assert len([c for c in curves.figure.axes[0].collections if c.get_array() is None]) >= 1  # the ± std band
    for name, block in figs.items():
        assert layout_problems(block.figure) == [], name
    # without repeats there is no such table
    rep = build_report([runs["ce"], runs["kd"]], tmp_path / "one", evaluate=False, measure=False)
    assert not any(getattr(b, "title", "") == "Across seeds" for b in rep.sections[0].blocks)


def test_teacher_run_and_its_checkpoint_are_one_model(runs, teacher_ckpt, tmp_path):
    """Students distilled from ``teacher/last.pt`` while the teacher run reports ``best.pt``: when the two files
    are the same bytes (no validation split), the page shows one teacher, not the teacher twice."""
    import yaml

    from adaptkd.report.runs import run_labels

    teacher = tmp_path / "cmp" / "teacher"
    shutil.copytree(pathlib.Path(teacher_ckpt).parent, teacher, ignore=shutil.ignore_patterns("report"))
    shutil.copy(teacher / "best.pt", teacher / "last.pt")
    student = tmp_path / "cmp" / "kd" / "seed0"
    shutil.copytree(runs["kd"], student, ignore=shutil.ignore_patterns("report"))
    cfg = yaml.safe_load((student / "config.yaml").read_text())
    cfg["teachers"][0]["checkpoint"] = str(teacher / "last.pt")
    (student / "config.yaml").write_text(yaml.safe_dump(cfg))
    rep = build_report([teacher, student], tmp_path / "out", evaluate=False, measure=False)
    models = [(m["label"], m["role"]) for m in json.loads(rep.manifest.read_text())["models"]]
    assert models == [("teacher", "teacher"), ("seed0", "student")]
    assert run_labels([tmp_path / "teacher", tmp_path / "kd" / "seed0", tmp_path / "ce" / "seed0"]) == [
        "teacher", "kd/seed0", "ce/seed0"]


def fake_rows(latencies: list[float], accs: list[float], num_classes: int = 10):
    from adaptkd.report.models import ModelEntry
    from adaptkd.report.seeds import ModelRow

    rows = []
    for i, (lat, acc) in enumerate(zip(latencies, accs)):
        e = ModelEntry(key=(str(i),), label=f"model-{i}-with-a-long-name", role="teacher" if i == 0 else "student",
                       arch="cnn_small", run=None, name="student", weights="none", source="", num_classes=num_classes,
                       in_channels=3, image_size=32, data_key="", summary_acc=acc, summary_top5=min(acc + 20, 100),
                       card={"latency_b1": {"median_ms": lat}, "params": 1000 * (i + 1)})
        rows.append(ModelRow(e.label, e.role, e.arch, [e]))
    return rows


@pytest.mark.parametrize("latencies", [[0.332, 0.081, 0.080, 0.079], [0.8, 0.9, 1.1, 1.3], [0.01, 0.3, 9.0, 120.0],
                                       [5.46, 1.33, 1.40, 1.43]])
def test_accuracy_vs_cost_ticks_and_legend_readable(latencies):
    from adaptkd.report.figures.summary import draw_tradeoff

    f = draw_tradeoff(fake_rows(latencies, [98.7, 95.1, 96.8, 96.5]))
    f.png()
    fig = f.fig
    assert layout_problems(fig) == []
    ax = fig.axes[0]
    ticks = [v for v in ax.get_xticks() if ax.get_xlim()[0] <= v <= ax.get_xlim()[1]]
    assert 2 <= len(ticks) <= 6, ticks
    assert ax.get_ylim()[0] == 90 and "axis from 90 %" in ax.get_ylabel()


@pytest.mark.parametrize("num_classes", [10, 100])
def test_top5_drawn_only_for_many_classes(num_classes):
    from adaptkd.report.figures.summary import draw_accuracy

    f = draw_accuracy(fake_rows([1, 1, 1, 1], [40.0, 30.5, 31.0, 29.0], num_classes))
    f.png()
    fig = f.fig
    assert layout_problems(fig) == []
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == (4 if num_classes > 10 else 0)
    assert fig.axes[0].get_xlim()[0] == 0


@pytest.mark.parametrize(("nc", "name"), [(10, "class {}"), (20, "automobile {}"), (12, "a{}")])
def test_per_class_labels_do_not_collide(nc, name):
    from adaptkd.report.figures.summary import draw_per_class

    rows = fake_rows([1.0, 1.0, 1.0], [90.0, 80.0, 85.0], nc)
    for i, r in enumerate(rows):
        r.entries[0].eval = {"per_class": [50.0 + i + c for c in range(nc)],
                             "class_names": [name.format(c) for c in range(nc)]}
    f = draw_per_class(rows)
    f.png()
    assert layout_problems(f.fig) == []


def test_layout_check_finds_what_it_looks_for():
    """The checker used above fails on a legend over the data, colliding tick labels and a cut title."""
    from adaptkd.report.figures.base import new_fig

    f = new_fig("bad", 1, ncols=1, w=3.0, h=2.0)
    ax = f.axes[0]
    ax.plot(range(10), range(10), label="a line through the legend")
    ax.legend(loc="center")
    ax.set_xticks(range(10), [f"a long tick label {i}" for i in range(10)])
    ax.set_title("a title far too long for a panel only three inches wide, so it runs off the figure")
    f.png()
    problems = " | ".join(layout_problems(f.fig))
    assert "legend covers" in problems and "tick labels" in problems and "cut at the edge" in problems, problems


def test_accuracy_floor_rule():
    assert accuracy_floor([95.07, 96.53, 98.7]) == 90
    assert accuracy_floor([85.0]) == 80 and accuracy_floor([84.9]) == 70
    assert accuracy_floor([17.0, 98.0]) == 10 and accuracy_floor([3.0]) == 0
    assert accuracy_floor([]) == 0 and accuracy_floor([None, float("nan")]) == 0
    assert accuracy_floor([100.0]) == 90


def test_every_method_spec_names_a_registered_figure_family():
    from adaptkd.methods import method_class
    from adaptkd.report import figure_families

    named = {m: method_class(m).spec.figures for m in list_methods()}
    assert {"dtkd", "rtk", "switokd", "unic"} <= set(named.values())
    unknown = {m: f for m, f in named.items() if f and f not in figure_families()}
    assert not unknown, f"methods name figure families the report does not have: {unknown}"


def test_figure_family_registry(runs, tmp_path):
    from adaptkd.report import figure_families, figure_family, register_figure_family
    from adaptkd.report.figures import registry
    from adaptkd.report.figures.base import new_fig
    from adaptkd.report.figures.registry import SignalFigure

    assert {"dtkd", "balance", "switokd", "unic", "rtk"} <= set(figure_families())
    assert figure_family("dtkd").prefixes == ("dtkd/",)
    with pytest.raises(KeyError, match="closest: dtkd"):
        figure_family("dtk")
    run = tmp_path / "run"
    shutil.copytree(runs["kd"], run, ignore=shutil.ignore_patterns("report"))
    recs = read_metrics(run / "metrics.jsonl")
    with open(run / "metrics.jsonl", "w") as fh:
        extra = {"newmethod/gate": 0.5, "other/x": 1.0}
        fh.writelines(json.dumps({**r, **extra} if r["kind"] == "step" else r) + "\n" for r in recs)

    def draw(run_data, rs):
        f = new_fig("new method", 1)
        f.line(f.axes[0], *rs.step["newmethod/gate"], "gate", "gate", key="newmethod/gate")
        return [SignalFigure("newmethod", f, "the gate")]

    register_figure_family("newmethod", ("newmethod/",), draw)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_figure_family("newmethod", ("newmethod/",), lambda r, s: [])
        rep = build_report(run, evaluate=False, measure=False)
    finally:
        registry._FAMILIES.pop("newmethod")
    names = {p.name for p in rep.figures}
    assert "signal-newmethod.png" in names and "signal-other.png" in names  # the rest: generic panels
    assert {"newmethod/gate", "other/x"} <= set(rep.plotted["run"])


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
                              "--dump-dom", probe.as_uri()], check=False, capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', res.stdout, re.DOTALL)
    assert m, f"chromium printed no check result: {res.stderr[-500:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="Chromium is not installed (apt-get install chromium): headless page check skipped")
def test_every_image_loads_in_headless_chromium(runs, tmp_path):
    rep = build_report(runs["kd"], tmp_path / "page", evaluate=False, measure=False)
    status = browser_image_status(rep.html)
    assert len(status) == len(rep.figures) and all(s["ok"] for s in status), status
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(rep.html, alone / "report.html")  # the page without its PNG files still shows every figure
    status = browser_image_status(alone / "report.html")
    assert len(status) == len(rep.figures) and all(s["ok"] for s in status), status
    broken = alone / "broken.html"  # the check can fail: a damaged figure is reported as not loaded
    broken.write_text(re.sub(r'base64,[^"]{40}', "base64,AAAA", (alone / "report.html").read_text(), count=1))
    assert [s["ok"] for s in browser_image_status(broken)].count(False) == 1
