"""Kill and resume: SIGKILL a training run at many points, resume it, and check nothing is lost.

For one method of each family (logit, feature, online, UNIC), a chain of processes runs the CLI
``adaptkd train CFG`` (``--resume`` when a checkpoint exists); each process but the last is
killed with SIGKILL at a chosen point — during a training step, during evaluation at the end of
an epoch, while a checkpoint is being written (the temp file ``.last.pt.*.tmp`` exists) or at a
random time. After every kill the files on disk must be consistent (every checkpoint loads,
``metrics.jsonl`` holds whole records); at the end the resumed run must equal an uninterrupted
run of the same config exactly (metrics, weights, optimiser, method and balancer state) and
``metrics.jsonl`` must hold every epoch and step once.

Speed: one run is a fraction of a second, but starting Python and importing torch costs seconds
on a busy 2-core machine. So the first process of the first chain is a real
``python -m adaptkd train`` subprocess; the others are children forked from this test process
that call the same entry point (``adaptkd.cli.main``), with torch already imported. A SIGKILL
ends either kind the same way. Set ``ADAPTKD_FAULT_SEED`` to replay the random kill times of a
failing run (the seed is in every assertion message).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from adaptkd.cli import main as cli_main
from adaptkd.engine.checkpoint import load_checkpoint
from adaptkd.engine.logger import read_metrics
from adaptkd.methods import list_methods, method_class
from tests.helpers import assert_same_run, comparable, family, method_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32",
                                reason="needs fork and SIGKILL (POSIX)")

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("ADAPTKD_FAULT_SEED", str(int(time.time()) % 100000)))
EPOCHS, STEPS = 3, 6
#: kill points of each family's chain ("subprocess:" = a real `python -m adaptkd` process)
SCHEDULE = {
    "logit": ["subprocess:step", "checkpoint", "eval", "random", "random"],
    "feature": ["checkpoint", "step", "random"],
    "online": ["eval", "step", "random"],
    "unic": ["step", "checkpoint", "random"],
}
SURVIVED: list[str] = []  # one entry per fault injection that was survived (reported at the end)


@pytest.fixture(scope="module", autouse=True)
def _warm_imports():
    """Import lazily imported modules once here, so that forked children start instantly."""
    import torch._dynamo  # noqa: F401 - torch.optim imports it at the first optimiser

    from adaptkd.data import build_data

    build_data("digits")
    yield
    if SURVIVED:
        print(f"\nfault injections survived: {len(SURVIVED)} ({', '.join(SURVIVED)})")


@pytest.fixture(scope="module")
def fault_teacher(tmp_path_factory):
    """A frozen cnn_small teacher (plain state_dict; mechanics, not accuracy, are tested here)."""
    from adaptkd.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fault_teacher") / "teacher.pt"
    torch.save(build_model("cnn_small", 10, in_channels=1).state_dict(), path)
    return str(path)


# ----------------------------------------------------------------------------------------------
# processes


class Child:
    """A training process: forked (calls adaptkd.cli.main) or a real `python -m adaptkd` subprocess."""

    def __init__(self, argv: list[str], log: Path, real: bool) -> None:
        self.log = log
        self.started = time.monotonic()
        self.rc: int | None = None
        if real:
            env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            with open(log, "wb") as fh:
                self.proc = subprocess.Popen([sys.executable, "-m", "adaptkd", *argv], cwd=str(REPO), env=env,
                                             stdout=fh, stderr=subprocess.STDOUT)
            self.pid = self.proc.pid
            return
        self.proc = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            rc = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdout = sys.stderr = os.fdopen(fd, "w", buffering=1)  # not pytest's capture
                rc = cli_main(argv)
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        self.pid = pid

    def poll(self) -> int | None:
        if self.rc is not None:
            return self.rc
        if self.proc is not None:
            self.rc = self.proc.poll()
            return self.rc
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.rc = os.waitstatus_to_exitcode(status)
        return self.rc

    def kill(self) -> bool:
        """SIGKILL the process; False if it had already ended by itself."""
        if self.poll() is not None:
            return False
        os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.rc = self.proc.wait()
        else:
            _, status = os.waitpid(self.pid, 0)
            self.rc = os.waitstatus_to_exitcode(status)
        return self.rc == -signal.SIGKILL

    def wait(self, timeout: float = 300) -> int:
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                self.kill()
                raise AssertionError(f"training process did not finish in {timeout}s; log: {self.output()}")
            time.sleep(0.01)
        return self.rc

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


# ----------------------------------------------------------------------------------------------
# observing a run from outside


@dataclass
class Seen:
    """What the run folder shows at one moment (``new_*``: what appeared since ``baseline``)."""

    new_steps: list[int] = field(default_factory=list)  # global steps of new step records
    epochs: list[int] = field(default_factory=list)  # epochs of every epoch record in the file
    new_tmp: list[str] = field(default_factory=list)  # temp files of checkpoint writes that appeared


def baseline(out: Path) -> tuple[set[str], set[str]]:
    """The metrics lines and temp files present before a process starts. A resumed process first
    truncates stale records and removes stale temp files; records it writes again differ from
    the stale ones (their timing fields), so "new" reliably means "written by this process"."""
    try:
        names = set(os.listdir(out))
    except FileNotFoundError:
        names = set()
    lines = set((out / "metrics.jsonl").read_text().splitlines()) if (out / "metrics.jsonl").exists() else set()
    return lines, {n for n in names if n.endswith(".tmp")}


def look(out: Path, base: tuple[set[str], set[str]] = (set(), set())) -> Seen:
    s = Seen()
    try:
        names = os.listdir(out)
        text = (out / "metrics.jsonl").read_text() if "metrics.jsonl" in names else ""
    except FileNotFoundError:
        return s
    s.new_tmp = [n for n in names if n.endswith(".tmp") and n.startswith((".last.pt.",
                                                                          ".best.pt.")) and n not in base[1]]
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "epoch":
            s.epochs.append(int(rec["epoch"]))
        elif line not in base[0]:
            s.new_steps.append(int(rec["step"]))
    return s


def trigger(point: str, out: Path, child: Child, rng: random.Random, state: dict, base) -> callable:
    """A predicate: is it time to kill ``child`` at ``point``?"""
    # Kills aim past the first checkpoint, so that every restart after them is a real resume.
    if point == "checkpoint":  # a write that replaces an existing checkpoint (the old one must survive)
        return lambda: bool(look(out, base).new_tmp) and (out / "last.pt").exists()
    if point == "eval":
        # the last step of an epoch is logged and that epoch's record is not written yet:
        # the process is evaluating (or summarising the epoch)
        def at_eval() -> bool:
            s = look(out, base)
            return any(st % STEPS == 0 and st // STEPS >= 2 and st // STEPS not in s.epochs for st in s.new_steps)

        return at_eval
    if point == "step":
        # mid-epoch: a step record in the middle of an epoch that has no epoch record yet
        def mid_epoch() -> bool:
            s = look(out, base)
            return any(st % STEPS == STEPS // 2 and st > STEPS and (st // STEPS + 1) not in s.epochs
                       for st in s.new_steps)

        return mid_epoch
    if point == "random":
        delay = rng.uniform(0.0, 1.2) * state.get("run_s", 2.0)
        return lambda: time.monotonic() - child.started >= delay
    raise ValueError(point)


def classify(out: Path, base, ckpt_epoch: int | None) -> str:
    """Where a kill landed, judged from the files it left."""
    s = look(out, base)
    if s.new_tmp:
        return "checkpoint write"
    done = max(s.epochs, default=0)
    if done > (ckpt_epoch or 0):
        return "between metrics and checkpoint"
    if not s.new_steps:
        return "start-up"
    if ckpt_epoch == EPOCHS:
        return "final summary"
    last = max(s.new_steps)
    if last == (done + 1) * STEPS:
        return "evaluation"
    return "training step"


def check_on_disk(out: Path, where: str) -> int | None:
    """After a kill: every checkpoint loads; metrics.jsonl holds whole records (a torn last
    line at most), each epoch at most once. Returns the epoch of last.pt (None: not written)."""
    epoch = None
    for name in ("last.pt", "best.pt"):
        p = out / name
        if p.exists():
            ck = load_checkpoint(p)  # raises on a partial or corrupt file
            assert ck["format"] == "adaptkd/1" and isinstance(ck["epoch"], int), where
            if name == "last.pt":
                epoch = ck["epoch"]
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    for i, line in enumerate(lines):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"{where}: a torn line that is not the last one: {line!r}"
    epochs = [r["epoch"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs == sorted(set(epochs)), f"{where}: duplicated epoch records {epochs}"
    if epoch is not None:
        assert epoch in epochs or epoch == 0, f"{where}: last.pt at epoch {epoch} but metrics has {epochs}"
    return epoch


def check_final(out: Path, ref: Path, where: str) -> None:
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == list(range(1, EPOCHS + 1)), where
    steps = [r["step"] for r in recs if r["kind"] == "step"]
    assert steps == sorted(set(steps)) == list(range(1, EPOCHS * STEPS + 1)), f"{where}: step records {steps}"
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")], f"{where}: temp files left"
    assert_same_run(ref, out)
    a, b = json.loads((ref / "summary.json").read_text()), json.loads((out / "summary.json").read_text())
    assert (a["final_acc"], a["best_acc"], a["epochs"], a["steps"]) == (b["final_acc"], b["best_acc"], b["epochs"],
                                                                        b["steps"]), where
    assert comparable(recs)[-1] == comparable(read_metrics(ref / "metrics.jsonl"))[-1]


# ----------------------------------------------------------------------------------------------


def _families() -> list[tuple[str, str]]:
    """One method per family of the specs: the one that reduces the most signals over an epoch (the
    most state a kill could lose), then by name."""
    by_family: dict[str, list[str]] = {}
    for m in list_methods():
        by_family.setdefault(family(m), []).append(m)
    return [(fam, min(ms, key=lambda m: (-len(method_class(m).spec.signals), m)))
            for fam, ms in by_family.items() if fam in SCHEDULE]


def write_config(method: str, out: Path, teacher: str, path: Path) -> Path:
    cfg = method_config(method, out, teacher, epochs=EPOCHS, steps=STEPS, log_every=1, eval_every=1)
    cfg["data"]["eval_batch_size"] = 16  # a longer evaluation, for the kills that aim at it
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("fam, method", _families())
def test_kill_and_resume(tmp_path, fault_teacher, fam, method):
    rng = random.Random(f"{SEED}:{fam}")
    where0 = f"{fam}/{method} (ADAPTKD_FAULT_SEED={SEED})"
    # the uninterrupted run
    ref = tmp_path / "ref"
    cfg_ref = write_config(method, ref, fault_teacher, tmp_path / "ref.yaml")
    child = Child(["train", str(cfg_ref)], tmp_path / "ref.log", real=False)
    assert child.wait() == 0, child.output()
    state = {"run_s": time.monotonic() - child.started}

    out = tmp_path / "run"
    cfg = write_config(method, out, fault_teacher, tmp_path / "run.yaml")
    kills: list[str] = []
    schedule = list(SCHEDULE[fam])
    retries = 3  # a checkpoint write is ~10-50 ms: if the kill came after its rename, aim again
    n = resumes = 0
    while True:
        point = schedule.pop(0) if schedule else None
        real = bool(point and point.startswith("subprocess:"))
        point = point.split(":", 1)[1] if real else point
        resume = (out / "last.pt").exists()
        resumes += resume
        argv = ["train", str(cfg)] + (["--resume"] if resume else [])
        base = baseline(out)
        child = Child(argv, tmp_path / f"p{n}.log", real=real)
        n += 1
        if point is None:  # the last process runs to the end
            rc = child.wait()
            assert rc == 0, f"{where0}: final resume failed: {child.output()}"
            break
        fire = trigger(point, out, child, rng, state, base)
        killed = False
        while child.poll() is None:
            if fire():
                killed = child.kill()
                break
            time.sleep(0.0005)
        if not killed:  # the run ended before the kill point came
            assert child.wait() == 0, f"{where0}: process failed: {child.output()}"
            break
        where = f"{where0}, kill {len(kills) + 1} aimed at {point}"
        ck_epoch = check_on_disk(out, where)
        landed = classify(out, base, ck_epoch)
        if point == "checkpoint" and landed != "checkpoint write" and retries:
            retries -= 1
            schedule.insert(0, "checkpoint")
        kills.append(f"{fam}:{landed}")
    check_final(out, ref, where0)
    assert resumes >= len(SCHEDULE[fam]) - 2, f"{where0}: only {resumes} processes resumed a checkpoint ({kills})"
    if "checkpoint" in SCHEDULE[fam]:
        assert f"{fam}:checkpoint write" in kills, f"{where0}: no kill landed inside a checkpoint write: {kills}"
    assert len(kills) >= len(SCHEDULE[fam]) - 2, f"{where0}: only {kills} landed"
    SURVIVED.extend(kills)


def test_torn_metrics_line_and_stale_temp_files_are_cleaned(tmp_path, fault_teacher):
    """A crash mid-write leaves a torn JSON line and a temp file: resume drops/removes both."""
    cfg = write_config("kd", tmp_path / "run", fault_teacher, tmp_path / "c.yaml")
    raw = yaml.safe_load(cfg.read_text())
    raw["optim"]["epochs"] = 1
    cfg.write_text(yaml.safe_dump(raw))
    assert cli_main(["train", str(cfg)]) == 0
    out = tmp_path / "run"
    before = (out / "metrics.jsonl").read_text()
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "epoch": 2, "st')  # torn by a kill
    (out / ".last.pt.abc123.tmp").write_bytes(b"\x80partial")
    (out / ".best.pt.xyz.tmp").write_bytes(b"")
    raw["optim"]["epochs"] = 2
    cfg.write_text(yaml.safe_dump(raw))
    assert cli_main(["train", str(cfg), "--resume"]) == 0
    after = (out / "metrics.jsonl").read_text()
    assert after.startswith(before) and '"st\n' not in after
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"] == [1, 2]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    SURVIVED.append("torn metrics line + stale temp files")


def test_fresh_start_after_a_kill_before_the_first_checkpoint(tmp_path, fault_teacher):
    """No last.pt yet: --resume is refused with a clear message; a fresh start drops the stale
    records of the killed run instead of appending to them."""
    out = tmp_path / "run"
    cfg = write_config("kd", out, fault_teacher, tmp_path / "c.yaml")
    child = Child(["train", str(cfg)], tmp_path / "p.log", real=False)
    base = baseline(out)
    fire = lambda: STEPS // 2 in look(out, base).new_steps  # noqa: E731 - mid-epoch 1
    while child.poll() is None and not fire():
        time.sleep(0.0005)
    if child.poll() is None:
        child.kill()
    assert not (out / "last.pt").exists() and (out / "metrics.jsonl").exists()
    rc = cli_main(["train", str(cfg), "--resume"])
    assert rc == 2
    assert cli_main(["train", str(cfg)]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == list(range(1, EPOCHS * STEPS + 1))
    SURVIVED.append("start-up (before the first checkpoint)")


# ----------------------------------------------------------------------------------------------
# non-finite values: stop (naming the term and the step, keeping the last good checkpoint,
# CLI exit code 3) or skip and count


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def poisoned_digits():
    """Digits whose normalisation statistics are poisoned: std = 1e-45 (> 0, so accepted) makes
    ``x·(1/(255·std))`` infinite and every normalised input NaN (0·inf, inf − inf)."""
    from adaptkd.data import DataBundle, build_data

    b = build_data("digits")
    return DataBundle(name="digits-poisoned", train=b.train, test=b.test, num_classes=b.num_classes,
                      in_channels=b.in_channels, image_size=b.image_size, mean=b.mean, std=(1e-45,))


def test_input_nan_from_a_poisoned_dataset_stops_at_its_step(tmp_path, fault_teacher):
    from adaptkd.engine.trainer import NonFiniteError, Trainer

    cfg = method_config("kd", tmp_path / "r", fault_teacher, epochs=1, log_every=5)
    tr = Trainer(cfg, data=poisoned_digits(), log=lambda s: None)
    with pytest.raises(NonFiniteError,
                       match=r"non-finite value in `input` at epoch 1, step 0 \(also: teacher0\.logits, "
                                             r"student\.logits.*no checkpoint had been written yet"):
        tr.fit()
    assert not (tmp_path / "r" / "last.pt").exists()


def overflowing_teacher(tmp_path: Path, base: str) -> str:
    """A teacher checkpoint with finite weights whose logits overflow float32 (fc weights 3e38)."""
    state = torch.load(base, weights_only=True)
    state["fc.weight"] = torch.full_like(state["fc.weight"], 3e38)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    path = tmp_path / "overflow.pt"
    torch.save(state, path)
    return str(path)


def test_teacher_inf_stops_the_cli_with_exit_code_3_and_keeps_the_checkpoint(tmp_path, fault_teacher, capsys):
    out = tmp_path / "r"
    cfg = write_config("kd", out, fault_teacher, tmp_path / "c.yaml")
    assert cli_main(["train", str(cfg), "optim.epochs=1", "run.log_every=4"]) == 0
    kept = {n: _digest(out / n) for n in ("last.pt", "best.pt")}
    bad = overflowing_teacher(tmp_path, fault_teacher)
    capsys.readouterr()
    rc = cli_main(["train", str(cfg), f"teachers.0.checkpoint={bad}", "run.log_every=4", "--resume"])
    err = capsys.readouterr().err
    assert rc == 3, err
    first = STEPS  # the first step of epoch 2 (steps count from 0)
    assert err.startswith(f"adaptkd: error: non-finite value in `teacher0.logits` at epoch 2, step {first} "), err
    assert "student.kd" in err and "(epoch 1) is kept" in err
    assert {n: _digest(out / n) for n in ("last.pt", "best.pt")} == kept
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


@pytest.mark.parametrize("method", list_methods())
def test_any_loss_term_going_nan_is_named_with_its_step(tmp_path, fault_teacher, method, monkeypatch):
    """For every method: a NaN in one loss term (the student's last) stops the run, naming
    ``learner.term`` and the step it happened at (found on the device, read at the interval)."""
    from adaptkd.engine.trainer import NonFiniteError, Trainer

    cfg = method_config(method, tmp_path / "r", fault_teacher, epochs=1, steps=5, log_every=5)
    tr = Trainer(cfg, log=lambda s: None)
    orig = tr.method.forward
    poisoned: list[str] = []

    def forward(inp):
        out = orig(inp)
        if inp.step >= 2:
            term = list(out.losses["student"])[-1]
            out.losses["student"][term] = out.losses["student"][term] * float("nan")
            poisoned.append(term)
        return out

    monkeypatch.setattr(tr.method, "forward", forward)
    with pytest.raises(NonFiniteError) as err:
        tr.fit()
    assert f"non-finite value in `student.{poisoned[0]}` at epoch 1, step 2 " in str(err.value)


def test_skip_mode_skips_counts_and_leaves_no_trace(tmp_path, fault_teacher):
    """``run.nonfinite: skip``: every poisoned step is skipped and counted (in the metrics and the
    checkpoint, across a resume); weights, BN statistics and method state stay as they were."""
    from adaptkd.engine.trainer import Trainer

    cfg = method_config("dtkd", tmp_path / "r", fault_teacher, epochs=1, nonfinite="skip", log_every=2)
    tr = Trainer(cfg, data=poisoned_digits(), log=lambda s: None)
    before = {k: v.clone() for k, v in tr.networks["student"].state_dict().items()}
    method_before = {k: v.clone() for k, v in tr.method.state_dict().items()}
    tr.fit()
    assert tr.nonfinite_skipped == 4
    after = tr.networks["student"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step changed the student"
    assert all(torch.equal(method_before[k], v) for k, v in tr.method.state_dict().items())
    rec = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert rec[-1]["nonfinite_skipped"] == 4
    assert load_checkpoint(tmp_path / "r" / "last.pt")["nonfinite_skipped"] == 4
    # resumed with clean data: the count carries over, and training proceeds
    cfg["optim"]["epochs"] = 2
    tr2 = Trainer(cfg, resume=True, log=lambda s: None)
    tr2.fit()
    assert tr2.nonfinite_skipped == 4
    rec = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["nonfinite_skipped"] for r in rec] == [4, 4]
    assert not all(torch.equal(before[k], v) for k, v in tr2.networks["student"].state_dict().items())


def test_skipped_steps_stay_out_of_the_epoch_means(tmp_path, fault_teacher, monkeypatch):
    """Epoch means (losses, accuracy) are over the steps that were not skipped: finite, and equal
    to the mean of the logged values of those steps."""
    from adaptkd.engine.trainer import Trainer

    cfg = method_config("kd", tmp_path / "r", fault_teacher, epochs=1, steps=4, nonfinite="skip", log_every=1)
    tr = Trainer(cfg, log=lambda s: None)
    orig = tr.method.forward

    def forward(inp):
        out = orig(inp)
        if inp.step in (1, 3):
            out.losses["student"]["kd"] = out.losses["student"]["kd"] * float("nan")
        return out

    monkeypatch.setattr(tr.method, "forward", forward)
    tr.fit()
    assert tr.nonfinite_skipped == 2
    recs = read_metrics(tmp_path / "r" / "metrics.jsonl")
    ep = [r for r in recs if r["kind"] == "epoch"][0]
    kept = [r["loss/student/kd"] for r in recs if r["kind"] == "step" and r["step"] in (1, 3)]  # steps 0 and 2
    assert ep["train/student/kd"] == pytest.approx(sum(kept) / 2, rel=1e-6)
    assert ep["nonfinite_skipped"] == 2 and 0 <= ep["train/acc/student"] <= 100
