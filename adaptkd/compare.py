"""``compare``: one recipe, every method × seed, one report with paired confidence intervals.

A *recipe* is a YAML mapping (``adaptkd/recipes/demo.yaml`` is one)::

    common:   {data: ..., optim: ..., run: ...}   # laid under every run
    teacher:  {student: {arch: resnet14}, ...}    # the teacher, trained once with method ce
    extra_teachers: {cnn: {student: {arch: cnn_medium}}}   # optional, more teachers by name
    student:  {student: {arch: cnn_small}}        # laid under every student run
    seeds: 3                                      # or a list; default: [run.seed]
    methods:                                      # label -> config overlay
      ce: {}
      kd: {method: {temperature: 4.0}, baseline: ce}
      kd_fixed_t: {method: {name: compose, terms: [...]}, baseline: kd, seeds: 5}
      mtkd: {method: {name: kd}, teachers: [teacher, cnn]}

An entry's config overlay may hold ``method`` (its ``name`` defaults to the label), ``balance``
and any other config section. Three keys are the recipe's own: ``seeds`` (this entry's seeds),
``baseline`` (the label it is compared against besides ``ce``) and ``teachers`` — a list of
teacher names (``teacher`` or an ``extra_teachers`` key) to distil from, frozen at their final
epoch (``last.pt``); a list of mappings is taken as the config's own ``teachers`` (e.g. a
trainable online teacher), except that a mapping without ``arch`` whose ``name`` is a recipe teacher
starts from that teacher's final epoch and adds its keys (``{name: teacher, trainable: true}``: the
trained teacher, trained on online). Without ``teachers``, a method that needs a teacher gets ``teacher``.

Runs live in ``<out>/<teacher name>`` and ``<out>/<label>/seed<k>``. A run whose folder holds a
``summary.json`` made with the same config is reused; one with only a ``last.pt`` resumes from it
(exactly), so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adaptkd.config import (
    ConfigError,
    apply_overrides,
    config_to_dict,
    load_config,
    merge_config,
)

RESERVED = ("seeds", "baseline", "teachers")
SECTIONS = ("common", "teacher", "extra_teachers", "student", "seeds", "methods")


@dataclass
class RunSpec:
    """One training run of a comparison: its config (``run.out`` set) and where it lives."""

    label: str  # teacher name, or method label
    seed: int
    config: dict[str, Any]
    role: str  # "teacher" or "student"

    @property
    def out(self) -> Path:
        return Path(self.config["run"]["out"])


@dataclass
class Plan:
    """Every run of a recipe: the teachers first (they are needed by the students)."""

    teachers: list[RunSpec]
    students: list[RunSpec]
    baselines: dict[str, str]  # label -> baseline label
    seeds: dict[str, list[int]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- recipe


def read_recipe(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A recipe from a YAML file or a mapping, its sections checked (errors name the field)."""
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"recipe {str(path)!r} does not exist")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe: expected a mapping with {', '.join(SECTIONS)}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"recipe: unknown section(s) {unknown}; expected some of {', '.join(SECTIONS)}")
    for key in ("common", "teacher", "extra_teachers", "student", "methods"):
        if not isinstance(raw.get(key, {}), dict):
            raise ConfigError(f"recipe field `{key}`: expected a mapping, got {raw[key]!r}")
    if not raw.get("methods"):
        raise ConfigError("recipe field `methods`: expected at least one method (e.g. `methods: {ce: {}, kd: {}}`)")
    for label, entry in raw["methods"].items():
        if entry is None:
            raw["methods"][label] = entry = {}
        if not isinstance(entry, dict):
            raise ConfigError(f"recipe field `methods.{label}`: expected a mapping (a config overlay), got {entry!r}")
        if "baseline" in entry and entry["baseline"] not in raw["methods"]:
            raise ConfigError(f"recipe field `methods.{label}.baseline`: {entry['baseline']!r} is not a method "
                              f"of this recipe ({', '.join(raw['methods'])})")
    names = {"teacher", *raw.get("extra_teachers", {})}
    clash = sorted(names & set(raw["methods"]))
    if clash:
        raise ConfigError(f"recipe: {clash} name both a teacher and a method; rename the method")
    return raw


def _seeds(value: Any, where: str, default: list[int]) -> list[int]:
    if value is None:
        return default
    if isinstance(value, bool):
        raise ConfigError(f"recipe field `{where}`: expected a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"recipe field `{where}`: the count must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"recipe field `{where}`: seeds repeat in {value}")
        return list(value)
    raise ConfigError(f"recipe field `{where}`: expected a count or a non-empty list of integers, got {value!r}")


def plan(recipe: dict[str, Any], out: str | Path, overrides: list[str] | None = None,
         methods: list[str] | None = None, seeds: int | None = None) -> Plan:
    """The runs of ``recipe`` under ``out``; ``overrides`` (``key=value``) apply to every run,
    ``methods`` keeps only those labels, ``seeds`` replaces every entry's seeds by 0..N-1."""
    recipe = read_recipe(recipe)
    out = Path(out)
    over = list(overrides or [])
    common = recipe.get("common", {})
    entries = recipe["methods"]
    if methods:
        missing = [m for m in methods if m not in entries]
        if missing:
            raise ConfigError(f"--methods: {missing} not in the recipe's methods ({', '.join(entries)})")
        entries = {m: entries[m] for m in methods}

    def config(base: dict[str, Any], where: Path, seed: int) -> dict[str, Any]:
        raw = apply_overrides(base, over)
        raw.setdefault("run", {}).update(out=str(where), seed=seed, overwrite=True)
        load_config(raw, check=False)  # schema errors now, before anything trains
        return raw

    teacher_sections = {"teacher": recipe.get("teacher", {}), **recipe.get("extra_teachers", {})}
    teachers: dict[str, RunSpec] = {}
    for name, section in teacher_sections.items():
        base = merge_config(common, section or {})
        base["method"] = {"name": "ce"}
        t_seed = int(apply_overrides(base, over).get("run", {}).get("seed", 0))
        teachers[name] = RunSpec(name, t_seed, config(base, out / name, t_seed), "teacher")

    default_seeds = [int(apply_overrides(common, over).get("run", {}).get("seed", 0))]
    all_seeds = _seeds(recipe.get("seeds"), "seeds", default_seeds)
    students, baselines, seed_lists = [], {}, {}
    used: set[str] = set()
    for label, entry in entries.items():
        overlay = {k: v for k, v in entry.items() if k not in RESERVED}
        base = merge_config(merge_config(common, recipe.get("student", {})), overlay)
        base["method"] = {"name": label, **base.get("method", {})}
        base["teachers"] = _teachers_for(label, entry, base["method"], teachers)
        used.update(t["name"] for t in base["teachers"] if "name" in t)
        for t in base["teachers"]:
            t.pop("name", None)
        run_seeds = _seeds(entry.get("seeds"), f"methods.{label}.seeds", all_seeds)
        run_seeds = list(range(seeds)) if seeds else run_seeds
        seed_lists[label] = run_seeds
        for s in run_seeds:
            students.append(RunSpec(label, s, config(base, out / label / f"seed{s}", s), "student"))
        if entry.get("baseline") in entries:
            baselines[label] = entry["baseline"]
    needed = [teachers[n] for n in teacher_sections if n in used]
    # seed-major order: every method's first seed, then every method's second, ... so that an
    # interrupted comparison has the same number of seeds for every method
    order = {label: i for i, label in enumerate(entries)}
    students.sort(key=lambda s: (seed_lists[s.label].index(s.seed), order[s.label]))
    return Plan(needed, students, baselines, seed_lists)


def _teachers_for(label: str, entry: dict[str, Any], method: dict[str, Any], teachers: dict[str, RunSpec]
                  ) -> list[dict]:
    from adaptkd.methods import method_class

    given = entry.get("teachers")
    if given is None:  # the main teacher for a method that takes frozen teachers with these options
        try:
            cls = method_class(method["name"])
            needs = cls.network_needs(cls.Params.model_validate({k: v for k, v in method.items() if k != "name"}))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"recipe field `methods.{label}.method`: {exc.args[0] if exc.args else exc}") from None
        given = ["teacher"] if needs.frozen[0] >= 1 else []
    if not isinstance(given, list):
        raise ConfigError(f"recipe field `methods.{label}.teachers`: expected a list, got {given!r}")

    def recipe_teacher(name: str) -> dict[str, Any]:
        cfg = teachers[name].config
        return {"name": name, "arch": cfg["student"]["arch"], **({"args": cfg["student"]["args"]}
                if cfg["student"].get("args") else {}), "checkpoint": str(teachers[name].out / "last.pt")}

    out = []
    for i, t in enumerate(given):
        if isinstance(t, dict) and t.get("name") in teachers and "arch" not in t:
            out.append({**recipe_teacher(t["name"]), **copy.deepcopy(t)})  # a recipe teacher with options
        elif isinstance(t, dict):
            out.append(copy.deepcopy(t))
        elif isinstance(t, str) and t in teachers:
            out.append(recipe_teacher(t))
        else:
            raise ConfigError(f"recipe field `methods.{label}.teachers.{i}`: {t!r} is neither a teacher of the "
                              f"recipe ({', '.join(teachers)}) nor a teacher config mapping")
    return out


# ------------------------------------------------------------------------------------------- runs


def _comparable(raw: dict[str, Any]) -> dict[str, Any]:
    c = config_to_dict(load_config(raw, check=False))
    for key in ("out", "overwrite", "progress"):
        c["run"].pop(key, None)
    for t in c.get("teachers", []):
        t.pop("checkpoint", None)
    return c


SPEC_FILE = "compare_spec.yaml"  # the config compare asked for (config.yaml also holds resolved settings)


def run_state(spec: RunSpec) -> str:
    """"done" (a summary made with this config), "partial" (a ``last.pt`` of this config to
    resume) or "new"."""
    saved = spec.out / SPEC_FILE
    if not saved.is_file():
        saved = spec.out / "config.yaml"
    if not saved.is_file():
        return "new"
    try:
        same = _comparable(yaml.safe_load(saved.read_text(encoding="utf-8"))) == _comparable(spec.config)
    except Exception:  # noqa: BLE001 - an unreadable or outdated config: train again
        return "new"
    if not same:
        return "new"
    if (spec.out / "summary.json").is_file():
        return "done"
    return "partial" if (spec.out / "last.pt").is_file() else "new"


def train_run(config: dict[str, Any], resume: bool, quiet: bool = False) -> dict[str, Any]:
    """Train one run (resuming it from its ``last.pt`` when ``resume``); returns its summary.
    ``quiet`` silences the trainer's lines (runs in parallel processes)."""
    from adaptkd.engine.trainer import Trainer

    cfg = copy.deepcopy(config)
    out = Path(cfg["run"]["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if resume:
        cfg["run"]["overwrite"] = False
    return Trainer(load_config(cfg), resume=resume, log=(lambda line: None) if quiet else None).fit()


def execute(specs: list[RunSpec], jobs: int = 1, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run (or reuse) every spec, ``jobs`` processes at a time; returns {run folder: summary}."""
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for spec in specs:
        state = run_state(spec)
        if state == "done":
            results[str(spec.out)] = json.loads((spec.out / "summary.json").read_text(encoding="utf-8"))
        else:
            todo.append((spec, state == "partial"))
    if todo:
        log(f"{len(todo)} run(s) to train, {len(specs) - len(todo)} reused")
    if jobs <= 1 or len(todo) <= 1:
        for i, (spec, resume) in enumerate(todo):
            log(f"  [{i + 1}/{len(todo)}] {spec.role} {spec.label} seed {spec.seed}{' (resuming)' if resume else ''}")
            results[str(spec.out)] = train_run(spec.config, resume)
        return results
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=jobs) as pool:
        pending = [(spec, pool.apply_async(train_run, (spec.config, resume, True))) for spec, resume in todo]
        for i, (spec, res) in enumerate(pending):
            results[str(spec.out)] = res.get()
            log(f"  [{i + 1}/{len(todo)}] {spec.role} {spec.label} seed {spec.seed}: "
                f"{results[str(spec.out)]['final_acc']:.2f} %")
    return results


def finished_only(p: Plan, log: Callable[[str], None] = print) -> tuple[Plan, dict[str, dict[str, Any]]]:
    """The part of ``p`` already finished (with the same config) and its summaries; the missing
    runs are logged. For reporting an interrupted comparison without training."""
    done = {str(s.out): json.loads((s.out / "summary.json").read_text(encoding="utf-8"))
            for s in p.teachers + p.students if run_state(s) == "done"}
    missing = [s for s in p.teachers + p.students if str(s.out) not in done]
    for s in missing:
        log(f"  missing: {s.role} {s.label} seed {s.seed} ({s.out})")
    kept = Plan([t for t in p.teachers if str(t.out) in done], [s for s in p.students if str(s.out) in done],
                p.baselines, p.seeds)
    return kept, done


# ------------------------------------------------------------------------------------ statistics


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """(mean, low, high) of the ``level`` t-interval of the mean of paired differences, or None
    with fewer than two pairs."""
    if len(diffs) < 2:
        return None
    from scipy.stats import t as student_t

    m = statistics.fmean(diffs)
    half = float(student_t.ppf(0.5 + level / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return m, m - half, m + half


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Per-seed differences ``a - b`` over the seeds both have: {seeds, diffs, mean, ci, wins, verdict}."""
    common = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in common]
    ci = t_interval(diffs)
    verdict = "too few seeds"
    if ci is not None:
        verdict = "helps" if ci[1] > 0 else "hurts" if ci[2] < 0 else "no detectable effect"
    return {"seeds": common, "diffs": diffs, "mean": statistics.fmean(diffs) if diffs else None,
            "ci": [ci[1], ci[2]] if ci else None, "wins": sum(d > 0 for d in diffs), "verdict": verdict}


def summarize(p: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per teacher and per method: accuracies per seed (final-epoch test, and test at the best
    validation epoch where there is a validation split), mean ± std, and paired differences
    against ``ce`` (same student architecture) and against the method's baseline."""
    teachers = {}
    for t in p.teachers:
        s = results[str(t.out)]
        teachers[t.label] = {"arch": s["learners"]["student"]["arch"], "final_acc": s["final_acc"],
                             "card": _card(s), "run": str(t.out)}
    methods: dict[str, Any] = {}
    for spec in p.students:
        s = results[str(spec.out)]
        m = methods.setdefault(spec.label, {"arch": s["learners"]["student"]["arch"], "method": s["method"],
                                            "final": {}, "best_val": {}, "runs": {}, "card": _card(s)})
        m["final"][spec.seed] = s["final_acc"]
        if s.get("selection") == "validation":
            m["best_val"][spec.seed] = s["best_acc"]
        m["runs"][spec.seed] = str(spec.out)
    for label, m in methods.items():
        for key in ("final", "best_val"):
            xs = list(m[key].values())
            m[f"{key}_mean"] = statistics.fmean(xs) if xs else None
            m[f"{key}_std"] = statistics.stdev(xs) if len(xs) > 1 else None
        if "ce" in methods and label != "ce" and m["arch"] == methods["ce"]["arch"]:  # same student only
            m["vs_ce"] = paired(m["final"], methods["ce"]["final"])
        base = p.baselines.get(label)
        if base and base != "ce" and base in methods:
            m["baseline"] = base
            m["vs_baseline"] = paired(m["final"], methods[base]["final"])
    return {"teachers": teachers, "methods": methods}


def _card(summary: dict[str, Any]) -> dict[str, Any]:
    s = summary["learners"]["student"]
    lat = s.get("latency_b1", {}).get("median_ms") if isinstance(s.get("latency_b1"), dict) else None
    return {"params": s.get("params"), "size_bytes": s.get("size_bytes"), "latency_b1_ms": lat}


# -------------------------------------------------------------------------------------- rendering


def fmt_mean(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def fmt_diff(d: dict[str, Any] | None) -> str:
    """``+1.23 [+0.40, +2.06]`` (mean paired difference and its 95 % t-interval)."""
    if not d or d["mean"] is None:
        return "-"
    if d["ci"] is None:
        return f"{d['mean']:+.2f}"
    return f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """One row per teacher and per method, as strings, for the terminal and Markdown tables."""
    ce = summary["methods"].get("ce")
    out = []
    for name, t in summary["teachers"].items():
        vs = f"{t['final_acc'] - ce['final_mean']:+.2f}" if ce else "-"
        out.append({"model": f"{name} (ce)", "arch": t["arch"], "top1": f"{t['final_acc']:.2f}", "best_val": "-",
                    "vs_ce": vs, "vs_baseline": "-", "seeds": "1", **_card_cells(t["card"])})
    for label, m in summary["methods"].items():
        vb = f"{m['baseline']}: {fmt_diff(m['vs_baseline'])}" if m.get("baseline") else "-"
        out.append({"model": f"student ({label})", "arch": m["arch"],
                    "top1": fmt_mean(m["final_mean"], m["final_std"]),
                    "best_val": fmt_mean(m["best_val_mean"], m["best_val_std"]),
                    "vs_ce": fmt_diff(m.get("vs_ce")), "vs_baseline": vb, "seeds": str(len(m["final"])),
                    **_card_cells(m["card"])})
    return out


def _card_cells(card: dict[str, Any]) -> dict[str, str]:
    lat = card.get("latency_b1_ms")
    return {"params": f"{card['params']:,}" if card.get("params") is not None else "-",
            "size": f"{card['size_bytes'] / 1024:.1f}" if card.get("size_bytes") is not None else "-",
            "latency": f"{lat:.3f}" if lat is not None else "-"}


COLUMNS = [("model", "model"), ("arch", "arch"), ("top1", "top-1 %"), ("best_val", "best-val top-1 %"),
           ("vs_ce", "vs ce"), ("vs_baseline", "vs baseline"),
           ("seeds", "seeds"), ("params", "params"), ("size", "size KB"), ("latency", "CPU b1 ms")]


def visible_columns(table: list[dict[str, str]]) -> list[tuple[str, str]]:
    """The columns with at least one value (no validation split: no best-val column, etc.)."""
    keep = {"model", "arch", "top1", "vs_ce"}
    return [(k, h) for k, h in COLUMNS if k in keep or any(r[k] not in ("-", "1") for r in table)]


PROTOCOL = (
    "Protocol: every model is scored once on the test split after its final epoch (`top-1 %`). "
    "Where the recipe holds out a validation split (`data.val_size`), `best.pt` is the epoch with the best "
    "validation top-1 and `best-val top-1 %` is that checkpoint's test top-1; nothing is ever chosen on "
    "the test split. Without a validation split, `best.pt` is the last epoch. Teachers are trained once "
    "(method ce) and distilled from at their final epoch (`last.pt`). `vs ce` and `vs baseline` are the mean of "
    "the per-seed differences of final-epoch top-1 (same seed: same initialisation and data order) with its "
    "95 % t-interval in brackets (two or more seeds); the teacher's `vs ce` is against the mean of `ce`. "
    "Verdict: helps / hurts when the interval excludes 0, otherwise no detectable effect."
)


def markdown(summary: dict[str, Any], title: str, command: str | None = None) -> str:
    """The comparison as Markdown: table, protocol, per-seed values and verdicts."""
    table = rows(summary)
    cols = visible_columns(table)
    lines = [f"# {title}", "", "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[k] for k, _ in cols) + " |" for r in table]
    lines += ["", PROTOCOL, ""]
    verdicts = []
    for label, m in summary["methods"].items():
        for key, ref in (("vs_ce", "ce"), ("vs_baseline", m.get("baseline"))):
            d = m.get(key)
            if d and d["mean"] is not None:
                verdicts.append(f"| {label} | {ref} | {fmt_diff(d)} | {d['wins']}/{len(d['seeds'])} | {d['verdict']} |")
    if verdicts:
        lines += ["| method | against | difference (95 % CI) | seeds ahead | verdict |", "|---|---|---|---|---|",
                  *verdicts, ""]
    lines += ["Per seed (final-epoch test top-1):", ""]
    for label, m in summary["methods"].items():
        lines.append(f"- {label}: " + ", ".join(f"seed {s} {v:.2f}" for s, v in sorted(m["final"].items())))
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def terminal_table(summary: dict[str, Any], title: str):
    """A ``rich`` table of the comparison."""
    from rich.table import Table

    table = rows(summary)
    t = Table(title=title, caption="top-1 %: test split, final epoch (mean ± std over seeds); best-val: the "
              "test top-1 of the best validation epoch; vs: mean paired difference [95 % CI]")
    for key, head in visible_columns(table):
        t.add_column(head, justify="left" if key in ("model", "arch", "vs_baseline") else "right", no_wrap=True)
    for r in table:
        t.add_row(*(r[k] for k, _ in visible_columns(table)))
    return t


def write_outputs(summary: dict[str, Any], out: Path, title: str, command: str | None) -> Path:
    """``<out>/compare.json`` (every number) and ``<out>/compare.md``; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"title": title, "command": command, **summary}, indent=2),
                                      encoding="utf-8")
    md = out / "compare.md"
    md.write_text(markdown(summary, title, command), encoding="utf-8")
    return md


def report_runs(summary: dict[str, Any]) -> list[str]:
    """Run folders for the report card: every teacher and every seed of every method (the report groups
    the seeds of one method and shows their mean ± std)."""
    runs = [t["run"] for t in summary["teachers"].values()]
    runs += [m["runs"][s] for m in summary["methods"].values() for s in sorted(m["runs"])]
    return runs
