"""Security: nothing in a config, checkpoint or data file runs code; nothing writes outside the
run folder or through a symbolic link planted in it.

- Source checks (AST, every module of ``adaptkd/``): ``torch.load`` only with
  ``weights_only=True``; YAML only with ``safe_load``/``safe_dump``; no pickle loading but the
  restricted CIFAR unpickler; no ``eval``/``exec``; dynamic imports only of fixed module names.
- Configs: every ``!!python/...`` tag is refused, in a file and in a ``key=value`` override, and
  its payload never runs.
- Checkpoints whose unpickling would run code are refused everywhere one is read (teacher,
  resume, ``adaptkd eval``, ``export``, ``report``), and the payload never runs.
- Run folders: a planted link (the folder itself, ``tb``, ``report``, ``metrics.jsonl``, ...)
  is refused; a link planted for ``best.pt``/``last.pt``/``summary.json`` while a run is going is
  replaced by the atomic rename, never written through; ``export`` and ``report`` refuse links.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import pytest
import torch
import yaml

from adaptkd.cli import main
from adaptkd.config import ConfigError, load_config
from adaptkd.engine.checkpoint import CheckpointError, atomic_save, atomic_write_text, load_checkpoint
from adaptkd.engine.trainer import RunFolderError, Trainer
from tests.helpers import tiny_config

PKG = Path(__file__).resolve().parents[1] / "adaptkd"
SOURCES = sorted(PKG.rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _parsed():
    for path in SOURCES:
        yield path.relative_to(PKG.parent), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ----------------------------------------------------------------------------------------------
# source checks


def test_sources_found():
    assert len(SOURCES) > 20 and any(p.name == "checkpoint.py" for p in SOURCES)


def test_torch_load_only_with_weights_only_true():
    found = []
    for rel, tree in _parsed():
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "torch"
                   for a in n.names if a.name == "load"}
        for call in _calls(tree):
            name = _dotted(call.func)
            if name == "torch.load" or name in aliases:
                kw = {k.arg: k.value for k in call.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                assert ok, f"{rel}:{call.lineno}: torch.load without weights_only=True"
                found.append(f"{rel}:{call.lineno}")
            # a serialisation format that runs code: only where adaptkd reloads the file it just exported
            if name == "torch.jit.load":
                assert str(rel).replace(os.sep, "/") == "adaptkd/export.py", f"{rel}:{call.lineno}: torch.jit.load"
    assert found, "no torch.load found at all: the check is looking in the wrong place"


def test_yaml_only_safe_load():
    unsafe = {"yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load",
              "yaml.full_load_all", "yaml.dump", "yaml.add_constructor"}
    safe_used = 0
    for rel, tree in _parsed():
        for call in _calls(tree):
            name = _dotted(call.func)
            assert name not in unsafe, f"{rel}:{call.lineno}: {name}"
            safe_used += name == "yaml.safe_load"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _dotted(node) in ("yaml.Loader", "yaml.UnsafeLoader",
                                                                     "yaml.FullLoader"):
                raise AssertionError(f"{rel}:{node.lineno}: {_dotted(node)}")
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                names = {a.name for a in node.names}
                assert not names & {"load", "unsafe_load", "full_load", "Loader", "UnsafeLoader", "FullLoader"}, rel
    assert safe_used, "yaml.safe_load is not used anywhere: the check is looking in the wrong place"


def test_no_pickle_eval_exec_or_free_imports():
    for rel, tree in _parsed():
        where = str(rel).replace(os.sep, "/")
        for call in _calls(tree):
            name = _dotted(call.func)
            assert name not in ("eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads",
                                "marshal.loads", "shelve.open", "numpy.load",
                                "np.load"), f"{where}:{call.lineno}: {name}"
            if name == "importlib.import_module":  # only modules named in the source, never from a config
                assert where in ("adaptkd/cli.py", "adaptkd/__init__.py", "adaptkd/export.py"), f"{where}:{call.lineno}"
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(_dotted(b) == "pickle.Unpickler" for b in node.bases):
                assert where == "adaptkd/data/cifar.py", where
                assert any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body), \
                    "an Unpickler subclass must restrict find_class"


# ----------------------------------------------------------------------------------------------
# configs cannot run code


TAGS = [
    "!!python/object/apply:os.system ['touch {m}']",
    "!!python/object/new:os.system ['touch {m}']",
    "!!python/object:builtins.object {{}}",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object/apply:builtins.exec ['open(\"{m}\", \"w\")']",
]


@pytest.mark.parametrize("tag", TAGS)
def test_config_tags_cannot_run_code(tmp_path, tag, capsys):
    marker = tmp_path / "pwned"
    value = tag.format(m=marker)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  name: {value}\nrun: {{out: {tmp_path / 'run'}}}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(cfg))
    assert main(["train", str(cfg)]) == 2
    assert "adaptkd: error:" in capsys.readouterr().err
    # the same payload as a key=value override: parsed as a plain string, never constructed
    clean = tmp_path / "ok.yaml"
    clean.write_text(yaml.safe_dump(tiny_config(tmp_path / "run2")))
    assert main(["train", str(clean), f"data.name={value}"]) == 2
    assert "field `data.name`" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_config_names_cannot_import(tmp_path):
    """Names in a config are looked up in registries, never imported."""
    for over, field in ((["method.name=os.system"], "method.name"), (["student.arch=os.path"], "student.arch"),
                        (["balance.name=subprocess"], "balance.name"), (["data.name=importlib"], "data.name")):
        with pytest.raises(ConfigError, match=field):
            load_config(tiny_config(tmp_path / "r"), over)


# ----------------------------------------------------------------------------------------------
# checkpoints cannot run code


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sec") / "run"
    Trainer(tiny_config(out, **{"optim__epochs": 1, "run__max_steps_per_epoch": 2}), log=lambda s: None).fit()
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_malicious_checkpoints_are_refused_everywhere(tmp_path, finished_run, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "adaptkd/1", "x": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="need code to load"):
        load_checkpoint(evil)
    # as a teacher
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "kd", "kd",
                                              teachers=[{"arch": "cnn_small", "checkpoint": str(evil)}])))
    assert main(["train", str(cfg)]) == 2
    # as the checkpoint of a run: resume, eval, export, report
    run = _copy_run(finished_run, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        torch.save({"format": "adaptkd/1", "x": _Payload(marker)}, run / name)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_config(run, **{"optim__epochs": 2})))
    assert main(["train", str(tmp_path / "r.yaml"), "--resume"]) == 2
    assert main(["eval", str(run)]) != 0
    assert main(["eval", str(evil)]) != 0
    assert main(["export", str(run), "--format", "torchscript", "--real", "0"]) != 0
    err = capsys.readouterr().err
    assert err.count("need code to load") >= 4, err
    # the report does not stop: it notes the refused checkpoint and reports from the run's files
    assert main(["report", str(run), "--no-measure"]) == 0
    assert "need code to load" in (run / "report" / "report.md").read_text()
    assert "Traceback" not in err + capsys.readouterr().err
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# run folders and outputs: never through a planted link, never outside the run folder


def _victim(tmp_path: Path) -> tuple[Path, str]:
    v = tmp_path / "victim.txt"
    v.write_text("precious data outside the run folder\n")
    return v, hashlib.sha256(v.read_bytes()).hexdigest()


def _intact(v: Path, digest: str) -> None:
    assert v.is_file() and hashlib.sha256(v.read_bytes()).hexdigest() == digest, f"{v} was written through a link"


@pytest.mark.parametrize("name", ["config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "tb", "report"])
def test_links_planted_before_a_run_are_refused(tmp_path, name):
    v, digest = _victim(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / name).symlink_to(v)
    with pytest.raises(RunFolderError, match="symbolic link"):
        Trainer(tiny_config(out))
    _intact(v, digest)


def test_run_folder_that_is_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunFolderError, match="run folder .* is a symbolic link"):
        Trainer(tiny_config(tmp_path / "run"))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_links_planted_during_a_run_are_replaced_not_written_through(tmp_path):
    """After the start-up checks, links appear for best.pt, last.pt and summary.json: every
    write is a temp file + rename, which replaces the link itself; the targets stay untouched."""
    v, digest = _victim(tmp_path)
    out = tmp_path / "run"
    tr = Trainer(tiny_config(out, **{"optim__epochs": 1, "run__max_steps_per_epoch": 2}), log=lambda s: None)
    for name in ("best.pt", "last.pt", "summary.json"):
        (out / name).symlink_to(v)
    tr.fit()
    for name in ("best.pt", "last.pt", "summary.json"):
        assert (out / name).is_file() and not (out / name).is_symlink(), name
    assert load_checkpoint(out / "best.pt")["epoch"] == 1
    _intact(v, digest)


def test_metrics_link_planted_during_a_run_is_refused(tmp_path):
    v, digest = _victim(tmp_path)
    out = tmp_path / "run"
    tr = Trainer(tiny_config(out, **{"optim__epochs": 1, "run__max_steps_per_epoch": 2}), log=lambda s: None)
    (out / "metrics.jsonl").symlink_to(v)
    with pytest.raises(RunFolderError, match="metrics.jsonl' is a symbolic link"):
        tr.fit()
    _intact(v, digest)


def test_resume_truncation_never_follows_a_planted_temp_link(tmp_path, finished_run):
    """Truncating metrics.jsonl on resume writes a fresh randomly named temp file (O_EXCL)."""
    v, digest = _victim(tmp_path)
    run = _copy_run(finished_run, tmp_path / "run")
    for name in ("metrics.jsonl.tmp", ".metrics.jsonl.tmp"):  # the names a predictable writer would use
        (run / name).symlink_to(v)
    Trainer(tiny_config(run, **{"optim__epochs": 2, "run__max_steps_per_epoch": 2}), resume=True,
            log=lambda s: None).fit()
    _intact(v, digest)
    assert not (run / "metrics.jsonl").is_symlink()


def test_atomic_writers_replace_links(tmp_path):
    v, digest = _victim(tmp_path)
    for i, write in enumerate((lambda p: atomic_save({"a": torch.ones(2)}, p), lambda p: atomic_write_text(p, "new"))):
        link = tmp_path / f"link{i}"
        link.symlink_to(v)
        write(link)
        assert link.is_file() and not link.is_symlink()
        _intact(v, digest)


def test_export_never_writes_through_links(tmp_path, finished_run, capsys):
    v, digest = _victim(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    run = _copy_run(finished_run, tmp_path / "a")
    (run / "export").symlink_to(outside)  # the default output folder is a link
    assert main(["export", str(run), "--format", "torchscript", "--real", "0"]) != 0
    assert list(outside.iterdir()) == []
    run = _copy_run(finished_run, tmp_path / "b")
    (run / "export").mkdir()
    (run / "export" / "student.torchscript.pt").symlink_to(v)  # the default output file is a link
    assert main(["export", str(run), "--format", "torchscript", "--real", "0"]) != 0
    _intact(v, digest)
    run = _copy_run(finished_run, tmp_path / "c")  # a clean export stays inside the run folder
    before = set(os.listdir(tmp_path))
    assert main(["export", str(run), "--format", "torchscript", "--real", "0"]) == 0
    assert set(os.listdir(tmp_path)) == before
    assert (run / "export" / "student.torchscript.pt").is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_report_never_writes_through_links(tmp_path, finished_run, capsys):
    pytest.importorskip("matplotlib", reason="the report needs matplotlib (extra)")
    v, digest = _victim(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    run = _copy_run(finished_run, tmp_path / "a")
    (run / "report").symlink_to(outside)
    assert main(["report", str(run), "--quiet", "--no-measure", "--no-eval"]) == 2
    assert list(outside.iterdir()) == []
    run = _copy_run(finished_run, tmp_path / "b")
    (run / "report").mkdir()
    (run / "report" / "report.html").symlink_to(v)
    assert main(["report", str(run), "--quiet", "--no-measure", "--no-eval"]) == 2
    _intact(v, digest)
    link_out = tmp_path / "link_out"
    link_out.symlink_to(outside)
    assert main(["report", str(run), "--out", str(link_out), "--quiet", "--no-measure", "--no-eval"]) == 2
    assert list(outside.iterdir()) == []
    run = _copy_run(finished_run, tmp_path / "c")  # a clean report stays inside the run folder
    before = set(os.listdir(tmp_path))
    assert main(["report", str(run), "--quiet", "--no-measure", "--no-eval"]) == 0
    assert set(os.listdir(tmp_path)) == before
    assert (run / "report" / "report.html").is_file()
    assert "Traceback" not in capsys.readouterr().err
