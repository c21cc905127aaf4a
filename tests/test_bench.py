"""``adaptkd bench`` on tiny networks; mixed precision, channels_last, deterministic and the
``torch.compile`` fallback of the engine."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from adaptkd.bench import (
    BenchConfig,
    markdown_table,
    parse_balancer,
    parse_network,
    parse_options,
    parse_variant,
    run_bench,
    split_list,
)
from adaptkd.cli import main as cli_main
from adaptkd.config import ConfigError
from adaptkd.engine.trainer import Trainer
from tests.helpers import tiny_config

TINY = ["--teacher", "cnn_tiny", "--student", "cnn_tiny", "--batch", "8", "--image-size", "8", "--num-classes", "10",
        "--steps", "2", "--warmup", "1", "--block", "1", "--threads", "1"]


def test_bench_cli_writes_json_with_every_field(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = cli_main(["bench", *TINY, "--methods", "dkd,dml,fitnet", "--balancers", "fixed,gradient",
                   "--balancer-methods", "kd,fitnet", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "×floor" in printed and "bench.json" in printed
    rep = json.loads((out / "bench.json").read_text())
    for key in ("cpu", "cores", "torch", "threads", "device"):
        assert key in rep["machine"]
    assert rep["machine"]["threads"] == 1
    rows = {r["name"]: r for r in rep["results"]}
    # kd is added as the reference of offline methods, dml is asked for; one floor per network setup
    assert {"kd", "dkd", "dml", "kd+gradient"} <= set(rows)
    floors = [r for r in rep["results"] if r["kind"] == "floor"]
    assert {f["setup"] for f in floors} == {"cnn_tiny→cnn_tiny", "-→cnn_tiny+cnn_tiny"}
    for name in ("kd", "dkd", "dml", "kd+gradient"):
        r = rows[name]
        assert r["timed_steps"] == 2 and r["median_ms"] > 0 and r["images_per_s"] > 0
        assert r["x_floor"] > 0 and r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0
    assert rows["dkd"]["x_kd"] > 0 and rows["dkd"]["target"] == "≤ 1.05× floor" and isinstance(rows["dkd"]["met"], bool)
    assert "x_kd" not in rows["dml"]  # an online method is compared with DML, not KD
    assert rows["kd+gradient"]["x_fixed"] > 0 and rows["kd+gradient"]["target"] == "≤ 1.05× fixed"
    assert rows["dml"]["setup"] == "-→cnn_tiny+cnn_tiny"  # trainable teacher: both are learners
    assert rows["fitnet"]["taps"] and rows["fitnet"]["method_params"] > 0
    # FitNet's hint term does not reach the logits: GradientBalance over logits refuses it at the
    # first step, and the bench records why instead of failing
    skipped = {s["name"]: s["reason"] for s in rep["skipped"]}
    assert "fitnet+gradient" in skipped and "balance.over" in skipped["fitnet+gradient"]
    assert rep["memory_method"] == "torch.profiler allocator events"


def test_bench_api_floor_matches_its_networks(tmp_path):
    cfg = BenchConfig(teacher="cnn_small", student="cnn_tiny", batch=4, image_size=8, num_classes=10, steps=1,
                      warmup=0, block=1, threads=1, methods=["ce"], out=str(tmp_path), memory=False)
    rep = run_bench(cfg, log=lambda s: None)
    rows = {r["name"]: r for r in rep["results"]}
    assert rows["ce"]["setup"] == "-→cnn_tiny"  # the student alone: its floor has no teacher forward
    assert "floor[-→cnn_tiny]" in rows and "peak_mem_mb" not in rows["ce"]


def test_bench_bad_input():
    assert parse_balancer("gradient:over=params:every=10") == {"name": "gradient", "over": "params", "every": 10}
    with pytest.raises(ValueError, match="key=value"):
        parse_balancer("gradient:params")
    assert cli_main(["bench", *TINY, "--methods", "nosuch"]) == 2
    assert cli_main(["bench", *TINY, "--balancers", "nosuch"]) == 2
    assert cli_main(["bench", *TINY, "--steps", "0"]) == 2


def test_bench_option_syntax():
    # one syntax: NAME:key=value:..., values read as YAML; ':' splits only before key=
    assert parse_options("hf:org/model:input_size=64") == ("hf:org/model", {"input_size": 64})
    assert parse_options("compose:terms=[{loss: kd, weight: 1}]") == ("compose", {"terms": [{"loss": "kd",
                                                                                          "weight": 1}]})
    assert parse_variant("unic_last=unic:student_blocks=[-1]") == ("unic_last", "unic", {"student_blocks": [-1]})
    assert parse_variant("nodrop=unic:drop_prob=0") == ("nodrop", "unic", {"drop_prob": 0})
    assert parse_options("unic:teacher_taps=null") == ("unic", {"teacher_taps": None})  # an explicit none
    assert parse_network("vit_tiny:img_size=16:depth=2:input_size=16") == {
        "arch": "vit_tiny", "input_size": 16, "args": {"img_size": 16, "depth": 2}}
    assert parse_network("resnet8x4") == {"arch": "resnet8x4"}
    assert split_list("a,b:mean=[0.5,0.5,0.5], c") == ["a", "b:mean=[0.5,0.5,0.5]", "c"]
    for bad, match in [("unic_last", "LABEL=METHOD"), ("a b=kd", "LABEL=METHOD"), ("x=unic:student_blocks", "got "
                       "'student_blocks'"), ("x=unic:drop_prob=[1", "cannot read value '\\[1'")]:
        with pytest.raises(ValueError, match=match):
            parse_variant(bad)


def test_bench_variants_teachers_alone_and_distiller(tmp_path):
    """--variant, two teacher architectures, --method-alone and --distiller, both clocks, on tiny networks."""
    cfg = BenchConfig(teacher="cnn_tiny,cnn_small", student="cnn_tiny", batch=4, image_size=8, num_classes=10,
                      steps=2, warmup=0, block=1, threads=1, methods=["unic", "afd"], out=str(tmp_path), memory=False,
                      variants=["unic_last=unic:student_blocks=[-1]"], method_alone=True, distiller=True,
                      clock="cpu")
    rep = run_bench(cfg, log=lambda s: None)
    rows = {r["name"]: r for r in rep["results"]}
    assert rep["skipped"] == []
    # a multi-teacher method takes every listed teacher; a one-teacher method the first; kd (the added
    # reference) as many as it accepts
    assert rows["unic"]["setup"] == rows["unic_last"]["setup"] == rows["kd"]["setup"] == "cnn_tiny+cnn_small→cnn_tiny"
    assert rows["afd"]["setup"] == "cnn_tiny→cnn_tiny"
    assert {"floor[cnn_tiny+cnn_small→cnn_tiny]", "floor[cnn_tiny→cnn_tiny]"} <= set(rows)
    # the variant is unic with its option (fewer projector parameters than the ladder) and unic's target
    last, unic = rows["unic_last"], rows["unic"]
    assert last["method"] == "unic" and last["options"] == {"student_blocks": [-1]} and unic["options"] == {}
    assert 0 < last["method_params"] < unic["method_params"] and last["target"] == unic["target"]
    for name in ("unic", "unic_last", "afd", "kd"):
        r = rows[name]
        assert r["alone_ms"] > 0 and r["x_floor_with_alone"] > 1  # (floor + method alone) / floor
        assert r["x_floor"] > 0 and r["x_floor_means"] > 0 and r["x_floor_other"] > 0
        assert r["cpu_median_ms"] == r["median_ms"] and r["wall_median_ms"] > 0  # --clock cpu: wall beside it
        d = rows[f"{name}[distiller]"]
        assert d["kind"] == "distiller" and d["x_floor"] > 0 and d["x_engine"] > 0 and d["of"] == name
    assert "unic[alone]" not in rows  # merged into its method's row
    md = markdown_table(rep)
    assert "| alone ms | (floor+alone)/floor |" in md and "| wall ms |" in md and "×engine" in md
    assert "unic_last (unic: student_blocks=[-1])" in md


def test_bench_method_alone_with_a_balancer_that_needs_networks(tmp_path):
    cfg = BenchConfig(teacher="cnn_tiny", student="cnn_tiny", batch=4, image_size=8, num_classes=10, steps=1,
                      warmup=0, block=1, threads=1, methods=["kd"], balancers=["fixed", "gradient:over=head"],
                      out=str(tmp_path), memory=False, method_alone=True)
    rep = run_bench(cfg, log=lambda s: None)
    rows = {r["name"]: r for r in rep["results"]}
    assert rows["kd"]["alone_ms"] > 0 and rows["kd+gradient(over=head)"]["x_fixed"] > 0
    assert "alone_ms" not in rows["kd+gradient(over=head)"]
    skipped = {s["name"]: s["reason"] for s in rep["skipped"]}
    assert "cannot run with balancer gradient(over=head)" in skipped["kd+gradient(over=head)[alone]"]


def test_bench_hf_teacher_gets_its_own_input(tmp_path):
    """An ``hf:`` folder teacher at its own resolution: the engine step and the floor both feed it its view."""
    pytest.importorskip("transformers")
    from transformers import ViTConfig, ViTForImageClassification

    folder = tmp_path / "vit"
    ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, image_size=16, patch_size=8, num_labels=10)
                              ).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "do_rescale": True, "size": {"height": 16, "width": 16}, "image_mean": [0.5] * 3,
         "image_std": [0.5] * 3}))
    rep = run_bench(BenchConfig(teacher=f"hf:{folder}", student="cnn_tiny", batch=4, image_size=8, num_classes=10,
                                steps=1, warmup=0, block=1, threads=1, methods=["kd"], out=str(tmp_path / "b"),
                                memory=False), log=lambda s: None)
    rows = {r["name"]: r for r in rep["results"]}
    assert rows["kd"]["setup"] == f"hf:{folder}→cnn_tiny" and rows["kd"]["x_floor"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--variant", "x=unic:nosuch=1"], "--variant 'x=unic:nosuch=1': method 'unic' option nosuch=1"),
    (["--variant", "x=unic:drop_prob=2"], "option drop_prob=2: Input should be less than or equal to 1"),
    (["--variant", "x=nosuch"], "unknown method 'nosuch'"),
    (["--variant", "kd=kd"], "the label 'kd' is already taken"),
    (["--variant", "x=kd", "--variant", "x=dkd"], "the label 'x' is already taken"),
    (["--teacher", "cnn_tiny:depth="], "--teacher: network 'cnn_tiny:depth=': option 'depth' has no value"),
    (["--student", "cnn_tiny,cnn_small"], "--student: 'cnn_tiny,cnn_small': expected one network"),
    (["--teacher", "nosuch"], "field `--teacher nosuch`: cannot build 'nosuch'"),
    (["--teacher", "cnn_tiny,cnn_tiny:width=2"], "field `--teacher cnn_tiny:width=2`: cannot build 'cnn_tiny' with "
                                                 "args {'width': 2}"),
    (["--student", "cnn_tiny:input_size=-3"], "network 'cnn_tiny:input_size=-3': input_size=-3"),
    (["--balancers", "gradient:params"], "expected name:key=value:..., got 'params'"),
])
def test_bench_refuses_bad_options(argv, message, capsys, tmp_path):
    assert cli_main(["bench", *TINY, "--methods", "kd", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "bench.json").exists()


# -- precision, channels_last, deterministic ------------------------------------------------------


def _spy(trainer):
    """Record the dtypes the method receives."""
    seen = {}
    fwd = trainer.method.forward

    def spy(inp):
        seen["logits"] = {k: v.dtype for k, v in inp.logits.items()}
        seen["feats"] = {n: {k: v.dtype for k, v in f.items()} for n, f in inp.feats.items()}
        seen["x"] = inp.x
        out = fwd(inp)
        seen["losses"] = {t: v.dtype for t, v in out.losses["student"].items()}
        return out

    trainer.method.forward = spy
    return seen


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_gives_methods_float32(tmp_path, precision):
    cfg = tiny_config(tmp_path / precision, "fitnet", teachers=[{"arch": "cnn_small", "random_init": True}],
                      **{"run__precision": precision, "optim__epochs": 1, "run__max_steps_per_epoch": 2})
    tr = Trainer(cfg)
    assert tr.precision == precision
    assert tr.scaler.is_enabled() == (precision == "fp16")  # loss scaling for fp16 only
    seen = _spy(tr)
    with tr.autocast():  # the networks themselves run in reduced precision
        want = torch.bfloat16 if precision == "bf16" else torch.float16
        assert tr.networks["student"](tr.eval_aug_probe()).dtype == want
    s = tr.fit()
    assert all(d == torch.float32 for d in seen["logits"].values())
    assert all(d == torch.float32 for f in seen["feats"].values() for d in f.values()) and seen["feats"]
    assert all(d == torch.float32 for d in seen["losses"].values())
    assert 0 <= s["final_acc"] <= 100


def test_precision_unavailable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(ConfigError, match=r"run\.precision.*fp16.*precision=fp32"):
        Trainer(tiny_config(tmp_path / "r", run__precision="fp16"))
    assert not (tmp_path / "r" / "config.yaml").exists()  # refused before anything was written


def test_channels_last_and_deterministic(tmp_path):
    cfg = tiny_config(tmp_path / "cl", "ce", **{"run__channels_last": True, "run__deterministic": True,
                                               "optim__epochs": 1, "run__max_steps_per_epoch": 2})
    try:
        tr = Trainer(cfg)
        assert torch.are_deterministic_algorithms_enabled()
        seen = _spy(tr)
        tr.fit()
        assert seen["x"].is_contiguous(memory_format=torch.channels_last)
        conv = next(m for m in tr.networks["student"].modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        torch.use_deterministic_algorithms(False)


# -- torch.compile fallback ---------------------------------------------------------------------


def _final(tmp_path, name, **over):
    cfg = tiny_config(tmp_path / name, "kd", teachers=[{"arch": "cnn_small", "random_init": True}],
                      **{"optim__epochs": 1, "run__max_steps_per_epoch": 3, **over})
    tr = Trainer(cfg)
    return tr, tr.fit()


def test_compile_unavailable_falls_back_with_warning(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning) as caught:
        tr, s = _final(tmp_path, "c", run__compile=True)
    msgs = [str(w.message) for w in caught]
    assert any("run.compile" in m and "'student'" in m and "uncompiled" in m for m in msgs)
    assert any("'teacher0'" in m for m in msgs)
    assert tr.forward_nets["student"] is tr.networks["student"]
    _, ref = _final(tmp_path, "e")
    assert s["final_acc"] == ref["final_acc"]


def test_compile_failing_at_first_call_falls_back(tmp_path, monkeypatch):
    class FailsWhenCalled(torch.nn.Module):
        def forward(self, *a, **k):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda module, **k: FailsWhenCalled())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr, s = _final(tmp_path, "c", run__compile=True)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("first call" in m and "'student'" in m for m in msgs)
    assert any("'teacher0'" in m for m in msgs)  # teachers are compiled (and fall back) too
    assert tr.forward_nets["student"].compiled is False
    _, ref = _final(tmp_path, "e")
    assert s["final_acc"] == ref["final_acc"]  # nothing of the failed attempt leaked into training


@pytest.mark.parametrize("case", ["gradient_params", "switokd"])
def test_fp16_gradscaler_on_other_paths(tmp_path, case):
    """fp16 with loss scaling through GradientBalance's own autograd.grad (params mode) and through
    SwitOKD's partial stepping (a paused learner gets no scaler.step)."""
    if case == "gradient_params":
        cfg = tiny_config(tmp_path / case, "kd", teachers=[{"arch": "cnn_small", "random_init": True}])
        cfg["balance"] = {"name": "gradient", "over": "params"}
    else:
        cfg = tiny_config(tmp_path / case, "switokd", teachers=[{"arch": "cnn_tiny", "trainable": True}])
    cfg["run"].update({"precision": "fp16", "max_steps_per_epoch": 3})
    cfg["optim"]["epochs"] = 1
    tr = Trainer(cfg)
    before = {n: [p.detach().clone() for p in tr.params[n]] for n in tr.learners}
    s = tr.fit()
    assert tr.scaler.is_enabled() and 0 <= s["final_acc"] <= 100
    moved = any(not torch.equal(a, b) for a, b in zip(before["student"], tr.params["student"]))
    assert moved  # the scaled gradients were unscaled and applied (not every step skipped as inf)
