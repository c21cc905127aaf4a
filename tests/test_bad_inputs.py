"""The bad-input campaign through the CLI: every case of ``tests/bad_input_cases.py`` is refused
before training with exit code 2, one ``adaptkd: error: ...`` message naming the field or file,
no traceback, and no run file created or changed (nothing outside the run folder either)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bad_input_cases import CASES, applicable, make_fixtures, run_case


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    n = torch.get_num_threads()
    fixtures = make_fixtures(tmp_path_factory.mktemp("bad_input_fixtures"))
    yield fixtures
    torch.set_num_threads(n)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.name}" for c in CASES])
def test_refused_before_training(case, fx, tmp_path):
    if not applicable(case):
        pytest.skip(f"{case.requires.partition(':')[2]} is not installed (pip install 'adaptkd[hf]')"
                    if case.requires.startswith("module:") else f"method {case.requires!r} is not registered")
    rc, err, before, after = run_case(case, tmp_path, fx)
    assert rc == 2, f"exit code {rc}; stderr: {err}"
    assert err.startswith("adaptkd: error: "), err
    assert "Traceback" not in err, err
    assert case.expect in err, f"expected {case.expect!r} in: {err}"
    assert after["run"] == before["run"], "the run folder was created or changed"
    assert after["all"] == before["all"], "files beside the run folder were created or changed"
    assert not (tmp_path / "pwned.txt").exists()


def test_cases_cover_the_issue_list():
    """The campaign holds each kind of bad input the issue names."""
    names = " / ".join(f"{c.group}: {c.name}" for c in CASES).lower()
    for kind in ("malformed yaml", "unknown key", "wrong type", "negative temperature", "p outside [0, 1]",
                 "warm-up 0", "does not exist", "corrupt", "another architecture", "another class count",
                 "empty image folder", "non-image file", "cifar batch of the wrong shape", "wrong dtype",
                 "label outside the class range", "teacher trained for another class count", "tap that does not exist"):
        assert kind in names, kind
    assert len(CASES) >= 80


def test_exit_code_of_the_real_command(tmp_path):
    """One case through a real `python -m adaptkd` process: exit status 2 and the one-line error."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: digits, batch_sise: 3}\nrun: {out: " + str(tmp_path / "run") + "}\n")
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "adaptkd", "train", str(cfg)], cwd=repo, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("adaptkd: error: field `data.batch_sise`: unknown key"), res.stderr
    assert not (tmp_path / "run").exists()
