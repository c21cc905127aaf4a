"""Run folders and checkpoints under hostile conditions: non-finite state is never saved, a fresh
start never touches files it did not write, one writer per folder, resume refuses what it cannot
restore exactly (before touching any file), hostile checkpoint files, and one line per stop."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from adaptkd.cli import main as cli_main
from adaptkd.engine.checkpoint import load_checkpoint, load_into
from adaptkd.engine.runfolder import LOCK_NAME, RunLock
from adaptkd.engine.trainer import Trainer
from adaptkd.errors import CheckpointError, NonFiniteError, RunFolderError
from adaptkd.models import build_model
from tests.bad_input_cases import snapshot
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg(out: Path, **over) -> dict:
    cfg = tiny_config(out, **over)
    cfg["run"]["max_steps_per_epoch"] = 3
    return cfg


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _all_finite(path: Path) -> bool:
    state = load_checkpoint(path)
    tensors = [t for sd in state["models"].values() for t in sd.values() if t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run (copied by each test that damages it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(_cfg(out), log=lambda s: None).fit()
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    (dst / LOCK_NAME).unlink(missing_ok=True)
    return dst


# ----------------------------------------------------------------------------------------------
# 0. nothing non-finite is saved


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_diverging_run_stops_with_exit_3_and_keeps_only_finite_checkpoints(tmp_path, policy):
    cfg = _cfg(tmp_path / "r", optim__lr=1000.0, optim__momentum=0.9, run__nonfinite=policy)
    cfg["optim"]["epochs"] = 3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    err = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(["train", str(path)])
    assert rc == 3, err.getvalue()
    assert err.getvalue().startswith("adaptkd: error: non-finite"), err.getvalue()
    for name in ("last.pt", "best.pt"):
        if (tmp_path / "r" / name).exists():
            assert _all_finite(tmp_path / "r" / name), name
    assert not (tmp_path / "r" / "summary.json").exists()


def test_non_finite_buffer_stops_before_the_checkpoint_naming_the_tensor(tmp_path):
    """A BatchNorm running_var that overflows in epoch 2: the run stops naming it, last.pt stays at
    epoch 1 (finite), even with run.nonfinite=skip."""
    tr = Trainer(_cfg(tmp_path / "r", run__nonfinite="skip"), log=lambda s: None)
    orig = tr.train_epoch

    def poisoned(epoch, progress=None):
        out = orig(epoch, progress)
        if epoch == 2:
            bn = next(m for m in tr.networks["student"].modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var[0] = float("inf")
        return out

    tr.train_epoch = poisoned
    with pytest.raises(NonFiniteError, match=r"running_var` holds 1 NaN/Inf value\(s\) in epoch 2"):
        tr.fit()
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 1
    assert _all_finite(tmp_path / "r" / "last.pt")
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r.get("kind") == "epoch"] == [1]


# ----------------------------------------------------------------------------------------------
# 0. a fresh start never touches a file it did not write


def test_a_fresh_start_refuses_a_folder_with_foreign_files_and_overwrite_keeps_them(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "best.pt").write_bytes(b"the user's teacher checkpoint")
    (run / "notes.txt").write_text("mine")
    digest = {p.name: _md5(p) for p in run.iterdir()}
    with pytest.raises(RunFolderError,
                       match=r"not empty and was not written by an adaptkd run \(it holds best.pt, notes"):
        Trainer(_cfg(run), log=lambda s: None)
    assert {p.name: _md5(p) for p in run.iterdir()} == digest
    Trainer(_cfg(run, run__overwrite=True), log=lambda s: None).fit()  # told to: run files replaced, others kept
    assert _md5(run / "notes.txt") == digest["notes.txt"]


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    run = tmp_path / "r"
    tr = Trainer(_cfg(run), log=lambda s: None)  # created the folder, config.yaml and the lock
    tr.lock.release()
    (run / "metrics.jsonl").write_text('{"kind": "step", "epoch": 1}\n')
    Trainer(_cfg(run), log=lambda s: None).fit()
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


# ----------------------------------------------------------------------------------------------
# 3. one writer per run folder


def test_a_second_writer_is_refused_by_name(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    holder = RunLock(run)
    holder.acquire()
    try:
        with pytest.raises(RunFolderError, match=f"is in use: process {os.getpid()} is writing it"):
            Trainer(_cfg(run), log=lambda s: None)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    finally:
        holder.release()


def test_the_lock_of_a_killed_process_is_not_stale(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from adaptkd.engine.runfolder import RunLock; lock = RunLock(Path({str(run)!r})); lock.acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert RunLock(run).holder() == f"process {proc.pid}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert RunLock(run).holder() is None
    Trainer(_cfg(run), log=lambda s: None).fit()


# ----------------------------------------------------------------------------------------------
# 0/3. resume: refuse by name what cannot be restored exactly, before touching any file


def _damage_ckpt(run: Path, fn) -> None:
    state = torch.load(run / "last.pt", weights_only=True)
    fn(state)
    torch.save(state, run / "last.pt")


@pytest.mark.parametrize("damage, expect", [
    (lambda s: s.pop("optims"), "it lacks optims"),
    (lambda s: s["models"].pop("student"), "it lacks models.student"),
    (lambda s: s.__setitem__("meta", [1, 2]), "metadata (`meta`) is malformed"),
    (lambda s: next(iter(s["optims"]["student"]["state"].values())).__setitem__("momentum_buffer", torch.zeros(3)),
     "optimiser state 'momentum_buffer' of student.stages.0.0.weight has shape (3,)"),
])
def test_resume_refuses_a_damaged_checkpoint_before_touching_files(tmp_path, finished, damage, expect):
    run = _copy(finished, tmp_path / "r")
    _damage_ckpt(run, damage)
    before = snapshot(run)
    with pytest.raises((CheckpointError, RunFolderError), match=re.escape(expect)):
        Trainer(_cfg(run, optim__epochs=3), resume=True, log=lambda s: None)
    assert snapshot(run) == before


@pytest.mark.parametrize("over, expect", [
    ({"run__seed": 1}, "`run.seed`: 0 in the run, 1 now"),
    ({"optim__name": "adam"}, "`optim.name`: 'sgd' in the run, 'adam' now"),
    ({"optim__lr": 0.5}, "`optim.lr`: 0.05 in the run, 0.5 now"),
])
def test_resume_refuses_another_config_by_name(tmp_path, finished, over, expect):
    run = _copy(finished, tmp_path / "r")
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=re.escape(expect)):
        Trainer(_cfg(run, optim__epochs=3, **over), resume=True, log=lambda s: None)
    assert snapshot(run) == before


def test_resume_applies_the_safe_overrides(tmp_path, finished):
    run = _copy(finished, tmp_path / "r")
    tr = Trainer(_cfg(run, optim__epochs=3, run__log_every=1, data__eval_batch_size=64), resume=True,
                 log=lambda s: None)
    assert tr.cfg.run.log_every == 1
    tr.fit()
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


@pytest.mark.parametrize("lines, expect", [
    (lambda ls: ls[:1] + ["{torn"] + ls[1:], "line 2 of"),
    (lambda ls: ls[:1] + ["\udcff binary"] + ls[1:], "not UTF-8"),
    (lambda ls: [x for x in ls if '"kind": "epoch", "epoch": 1' not in x], "no record of epoch(s) [1]"),
])
def test_resume_refuses_a_damaged_history(tmp_path, finished, lines, expect):
    run = _copy(finished, tmp_path / "r")
    text = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_bytes("\n".join(lines(text)).encode("utf-8", "surrogateescape") + b"\n")
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=re.escape(expect)):
        Trainer(_cfg(run, optim__epochs=3), resume=True, log=lambda s: None)
    assert snapshot(run) == before


# ----------------------------------------------------------------------------------------------
# 0. hostile checkpoint files


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_weights_are_refused(dtype):
    model = build_model("cnn_tiny", 10, in_channels=1)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="wrong kind of number"):
        load_into(model, sd, source="x.pt", arch="cnn_tiny")


def test_a_deflate_bomb_is_refused_before_decompressing(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(4)}, good)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr(f"{src.namelist()[0].split('/')[0]}/padding", b"\0" * (200 * 2**20))
    assert bomb.stat().st_size < 2 * 2**20
    with pytest.raises(CheckpointError, match="would expand from"):
        load_checkpoint(bomb)


# ----------------------------------------------------------------------------------------------
# 0. one accurate line per stop


def _cli(tmp_path: Path, *argv: str, timeout: float = 300, signal_after: tuple[str, int] | None = None):
    proc = subprocess.Popen([sys.executable, "-m", "adaptkd", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if signal_after is not None:
        marker, sig = signal_after
        deadline = time.monotonic() + timeout
        while not os.path.exists(marker) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.mark.parametrize("sig, rc, word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                            (signal.SIGINT, 130, "interrupted")])
def test_a_signal_before_the_first_checkpoint_says_there_is_none(tmp_path, sig, rc, word):
    cfg = _cfg(tmp_path / "r")
    cfg["run"]["max_steps_per_epoch"] = 10**6  # the first epoch outlasts the signal
    cfg["data"]["batch_size"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    got, err = _cli(tmp_path, "train", str(tmp_path / "c.yaml"),
                    signal_after=(str(tmp_path / "r" / "config.yaml"), sig))
    assert got == rc, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"adaptkd: {word}; no checkpoint had been written yet"), err
    assert "Traceback" not in err


def test_disk_full_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import adaptkd.engine.checkpoint as ck

    tr = Trainer(_cfg(tmp_path / "r"), log=lambda s: None)

    def full(obj, fh, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(RunFolderError,
                       match=r"cannot write .*best.pt.: No space left on device; no best.pt was written"):
        tr.fit()
    assert not list((tmp_path / "r").glob(".last.pt.*.tmp"))


def test_demo_refuses_to_replace_a_demo_made_with_another_config(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--out", str(out), "--no-report", "--methods", "ce"]) == 0
    digest = {p: _md5(p) for p in out.rglob("*.pt")}
    capsys.readouterr()
    assert cli_main(["demo", "--quick", "--out", str(out), "--no-report", "--methods", "ce", "optim.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "holds runs made with another config" in err and "--overwrite" in err, err
    assert {p: _md5(p) for p in out.rglob("*.pt")} == digest
    assert cli_main(["demo", "--quick", "--out", str(out), "--no-report", "--methods", "ce", "optim.lr=0.01",
                     "--overwrite"]) == 0


# ----------------------------------------------------------------------------------------------
# 5. the export carries what a deployer needs


def test_onnx_sidecar_classifies_an_image_file_without_adaptkd(tmp_path, finished):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from adaptkd.data import Augment, test_pipeline
    from adaptkd.export import export_run, rebuild_network

    run = _copy(finished, tmp_path / "r")
    res = export_run(run, "onnx", real=8)
    side = json.loads(Path(res.path + ".json").read_text())["metadata"]
    assert side["class_names"] == [str(i) for i in range(10)]
    pre = side["preprocess"]
    assert pre["input_size"] == [8, 8] and pre["color"] == "L" and len(pre["mean"]) == 1 and pre["layout"] == "NCHW"
    import onnx

    props = {p.key: json.loads(p.value) for p in onnx.load(res.path).metadata_props}
    assert props["class_names"] == side["class_names"] and props["preprocess"] == pre
    # an image file of a test digit, and PyTorch's answer on it
    model, info = rebuild_network(run, "student")
    pipe = test_pipeline(info["config"], workers=0)
    x, _ = next(iter(pipe.test_batches(1)))
    Image.fromarray(x[0, 0].to(torch.uint8).numpy(), mode="L").save(tmp_path / "digit.png")
    with torch.no_grad():
        want = int(model(Augment(pipe.mean, pipe.std, train=False)(x).float()).argmax())
    script = ROOT / "docs" / "examples" / "classify_onnx.py"
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('adaptkd', 'torch')], 'imported adaptkd/torch'")
    out = subprocess.run([sys.executable, "-c", code, str(script), res.path, str(tmp_path / "digit.png")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\t")[0] == side["class_names"][want], out.stdout


def test_export_decodes_only_its_sample_images(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from PIL import Image

    from adaptkd.export import export_run

    root = tmp_path / "images"
    for split, n in (("train", 3), ("val", 30)):
        for c, color in (("cat", 40), ("dog", 200)):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (color, i, 0)).save(root / split / c / f"{i}.png")
    cfg = _cfg(tmp_path / "r")
    cfg["data"] = {"name": "imagefolder", "root": str(root), "image_size": 8, "batch_size": 4, "workers": 0}
    cfg["optim"]["epochs"] = 1
    Trainer(cfg, log=lambda s: None).fit()
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: (opened.append(a[0]), real_open(*a, **k))[1])
    res = export_run(tmp_path / "r", "onnx", real=4)
    assert res.parity["real"]["n"] == 4
    assert len(opened) <= 8, f"{len(opened)} images decoded for 4 samples (the test split holds 60)"


def test_a_metrics_link_planted_mid_run_is_detected(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("must stay untouched")
    tr = Trainer(_cfg(tmp_path / "r"), log=lambda s: None)
    orig = tr.train_epoch

    def plant(epoch, progress=None):
        if epoch == 2:
            (tmp_path / "r" / "metrics.jsonl").unlink()
            (tmp_path / "r" / "metrics.jsonl").symlink_to(victim)
        return orig(epoch, progress)

    tr.train_epoch = plant
    with pytest.raises(RunFolderError, match="metrics.jsonl' was replaced during the run"):
        tr.fit()
    assert victim.read_text() == "must stay untouched"


def test_a_signal_while_the_trainer_is_built_says_what_is_kept(tmp_path, capsys):
    # the race the SIGTERM test above can hit under load: the signal lands after config.yaml is written but
    # before training starts; the line must still say what is kept, not end after "terminated (SIGTERM); "
    import argparse

    from adaptkd.commands.common import Terminated, run_guarded
    from adaptkd.engine.resume import says_what_is_kept

    def build(args: argparse.Namespace) -> int:
        with says_what_is_kept(tmp_path / "r"):
            raise Terminated()
        return 0

    assert run_guarded(build, argparse.Namespace()) == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("adaptkd: terminated (SIGTERM); no checkpoint had been written yet"), line


def test_a_signal_as_fit_starts_says_what_is_kept(tmp_path, monkeypatch):
    # the window after the Trainer is built and before fit's own handler is in place: train() covers it too
    from adaptkd.commands.common import Terminated
    from adaptkd.engine import progress
    from adaptkd.engine.api import train

    def terminated(*args, **kwargs):
        raise Terminated()

    monkeypatch.setattr(progress, "Progress", terminated)  # fit's first step, before its try
    with pytest.raises(Terminated, match="no checkpoint had been written yet"):
        train(_cfg(tmp_path / "r"), log=lambda s: None)
    assert (tmp_path / "r" / "config.yaml").is_file()
