"""A run's state in its checkpoint: what ``last.pt`` / ``best.pt`` hold, and an exact resume.

:func:`run_state` assembles the state of a :class:`~adaptkd.engine.trainer.Trainer` (learners,
method, balancer, optimisers, scaler, random streams, counters, metadata, config); :func:`save_run`
writes it atomically (under DDP with every rank's random streams, method extra state and in-epoch
sums); :func:`load_resume` reads ``last.pt``, checks every piece of it and the config against the
run before anything is loaded (:data:`RESUME_KEYS`, :data:`SAFE_ON_RESUME`), then restores it.
File I/O itself is :mod:`adaptkd.engine.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from adaptkd.config import Config, config_to_dict
from adaptkd.constraints import short_repr
from adaptkd.engine.checkpoint import FORMAT, CheckpointError, atomic_save, load_checkpoint, load_into
from adaptkd.errors import AdaptkdError

if TYPE_CHECKING:
    from adaptkd.engine.trainer import Trainer

__all__ = ["RESUME_KEYS", "SAFE_ON_RESUME", "apply_resume", "check_optim_state", "config_changes", "kept_line",
           "load_resume",
           "rng_state", "run_state", "save_run"]


#: what a resumed run's checkpoint must hold
RESUME_KEYS = ("epoch", "global_step", "best_acc", "meta", "models", "method", "balancer", "optims", "rng")
#: settings that may differ from the run's config on --resume: they change no number of the run
#: (``optim.epochs`` may change too, to any count not below the epochs completed: the schedules follow
#: the new length from the next step; and the path of a network's ``checkpoint``, a file that moved)
SAFE_ON_RESUME = ("run.log_every", "run.eval_every", "run.threads", "run.progress", "run.tensorboard", "run.latency",
                  "run.overwrite", "run.out", "run.checkpoint_every_steps", "data.eval_batch_size", "data.root",
                  "data.download")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: d}


def run_state(tr: Trainer) -> dict[str, Any]:
    """The state ``last.pt`` holds (this process's random streams)."""
    meta = {
        "arch": {n: c.arch for n, c in tr.net_cfgs.items()},
        "args": {n: dict(c.args) for n, c in tr.net_cfgs.items()},
        "num_classes": tr.num_classes,
        "in_channels": tr.pipe.in_channels,
        "image_size": tr.pipe.image_size,
        "mean": list(tr.pipe.mean),
        "std": list(tr.pipe.std),
        "dataset": tr.pipe.name,
        "class_names": list(tr.pipe.class_names),
        "method": tr.cfg.method.name,
        "learners": list(tr.learners),
    }
    rng = rng_state(tr.gen)
    return {
        "format": FORMAT,
        "epoch": tr.epoch,
        "global_step": tr.global_step,
        "best_acc": tr.best_acc,
        "best_epoch": tr.best_epoch,
        "nonfinite_skipped": tr.nonfinite_skipped,
        "meta": meta,
        "config": config_to_dict(tr.cfg),
        "models": {n: tr.networks[n].state_dict() for n in tr.learners},
        "method": tr.method.state_dict(),
        "method_extra": tr.method.extra_state(),
        "balancer": tr.balancer.state_dict(),
        "optims": {n: o.state_dict() for n, o in tr.optims.items()},
        "scaler": tr.scaler.state_dict() if tr.scaler.is_enabled() else {},
        "rng": rng,
    }


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """The global torch (and CUDA) random states and the augmentation generator ``gen``'s."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "gen": gen.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def config_changes(saved: dict[str, Any], cfg: Config, completed: int) -> list[str]:
    """The settings that differ between the run's saved config and ``cfg`` and that cannot
    change mid-run (see :data:`SAFE_ON_RESUME`), as ``field: run value -> new value``;
    ``completed``: the epochs the run has done."""
    from adaptkd.balance import balancer_params_model
    from adaptkd.methods import method_class

    def normalised(raw: dict[str, Any]) -> dict[str, Any]:
        out = dict(raw)
        for key, params in (("method", lambda n: method_class(n).Params), ("balance", balancer_params_model)):
            opts = dict(out.get(key) or {})
            name = opts.pop("name", None)
            try:
                out[key] = {"name": name, **params(name).model_validate(opts).model_dump(mode="json")}
            except Exception:  # noqa: BLE001 - an unknown or invalid saved section is compared as written
                out[key] = {"name": name, **opts}
        return out

    old, new = _flatten(normalised(saved)), _flatten(normalised(config_to_dict(cfg)))
    changes = []
    python_data = "python" in (old.get("data.name"), new.get("data.name"))  # a DataBundle passed from Python
    for key in sorted(set(old) & set(new)):
        if python_data and key.startswith("data."):
            continue  # its identity is not in the config: the caller answers for it
        if old[key] == new[key] or key in SAFE_ON_RESUME or key.endswith(".checkpoint"):
            continue  # (a network's checkpoint path: a file that moved; a learner's is only its start)
        if key == "optim.epochs" and isinstance(new[key], int) and new[key] >= completed:
            continue  # a longer (or shorter, not below what is done) run: schedules follow the new length
        changes.append(f"`{key}`: {short_repr(old[key], 40)} in the run, {short_repr(new[key], 40)} now")
    for key in sorted(set(old) ^ set(new)):
        if key.split(".")[0] in ("method", "balance", "teachers", "peers"):
            side = "the run" if key in old else "this config"
            changes.append(f"`{key}`: set only in {side}")
    return changes


def check_optim_state(path: Path, ckpt: dict[str, Any], optims: dict[str, torch.optim.Optimizer],
                      networks: dict[str, nn.Module]) -> None:
    """Every saved optimiser state tensor has its parameter's shape (checked before loading)."""
    for n, opt in optims.items():
        saved = ckpt["optims"].get(n)
        if not isinstance(saved, dict) or "state" not in saved or "param_groups" not in saved:
            raise CheckpointError(f"checkpoint {str(path)!r}: no optimiser state for learner {n!r}")
        params = [p for g in opt.param_groups for p in g["params"]]
        n_saved = sum(len(g.get("params", [])) for g in saved["param_groups"])
        if n_saved != len(params) or len(saved["param_groups"]) != len(opt.param_groups):
            raise CheckpointError(f"checkpoint {str(path)!r}: the optimiser of {n!r} holds {n_saved} parameters "
                                  f"in {len(saved['param_groups'])} group(s); this config has {len(params)} in "
                                  f"{len(opt.param_groups)}")
        names = {id(p): k for k, p in networks[n].named_parameters()}
        for idx, st in saved["state"].items():
            p = params[int(idx)] if 0 <= int(idx) < len(params) else None
            for key, t in (st.items() if isinstance(st, dict) else ()):
                if p is not None and isinstance(t, Tensor) and t.dim() > 0 and t.shape != p.shape:
                    what = names.get(id(p), f"method parameter #{idx}")
                    raise CheckpointError(f"checkpoint {str(path)!r}: optimiser state {key!r} of {n}.{what} has "
                                          f"shape {tuple(t.shape)}, the parameter {tuple(p.shape)}")


def load_resume(tr: Trainer, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Read ``<run>/last.pt``, check it against the run (``CheckpointError`` naming what does not fit,
    before anything is loaded), then restore it into ``tr``; returns where a checkpoint written inside
    an epoch left off (None: at an epoch's end)."""
    path = tr.out / "last.pt"
    ckpt = load_checkpoint(path, map_location=tr.device)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an adaptkd run checkpoint")
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    missing += [f"models.{n}" for n in tr.learners if n not in (ckpt.get("models") or {})]
    missing += [f"optims.{n}" for n in tr.learners if n not in (ckpt.get("optims") or {})]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be resumed exactly: it lacks {', '.join(missing)}")
    meta = ckpt.get("meta", {})
    saved_arch = meta.get("arch", {}) if isinstance(meta, dict) else None
    if not isinstance(saved_arch, dict) or not isinstance(meta.get("num_classes", 0), int):
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be resumed: its metadata (`meta`) is malformed")
    if meta.get("method", tr.cfg.method.name) != tr.cfg.method.name:
        raise CheckpointError(f"checkpoint {str(path)!r} is a run of method {meta['method']!r}, but the config says "
                              f"{tr.cfg.method.name!r}; resume with the run's config.yaml or start a new run.out")
    if int(meta.get("num_classes", tr.num_classes)) != tr.num_classes:
        raise CheckpointError(f"checkpoint {str(path)!r} was trained for {meta['num_classes']} classes, "
                              f"but the data has {tr.num_classes}")
    for n in tr.learners:
        if saved_arch.get(n) != tr.net_cfgs[n].arch:
            raise CheckpointError(f"checkpoint {str(path)!r}: network {n!r} is {saved_arch.get(n)!r}, "
                                  f"config says {tr.net_cfgs[n].arch!r}")
    if isinstance(ckpt.get("config"), dict):
        changes = config_changes(ckpt["config"], tr.cfg, int(ckpt["epoch"]))
        if changes:
            raise CheckpointError(
                f"cannot resume {str(path)!r} with a different config: " + "; ".join(changes[:6])
                + " (only optim.epochs, checkpoint paths and the logging, evaluation, thread and data-location "
                "settings may change on resume); resume with the run's config.yaml or start a new run.out")
    check_optim_state(path, ckpt, tr.optims, tr.networks)
    try:
        return apply_resume(tr, path, ckpt, log)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        if isinstance(exc, AdaptkdError):
            raise
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be resumed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None


def apply_resume(tr: Trainer, path: Path, ckpt: dict[str, Any],
                 log: Callable[[str], None]) -> dict[str, Any] | None:
    """Restore the checked ``ckpt`` into ``tr``; returns its in-epoch position (None: at an epoch's end)."""
    for n in tr.learners:
        load_into(tr.networks[n], ckpt["models"][n], source=str(path), arch=tr.net_cfgs[n].arch)
    try:
        tr.method.load_state_dict(ckpt["method"])
    except RuntimeError as exc:  # the method's options changed the shape of its state
        raise CheckpointError(f"checkpoint {str(path)!r}: the state of method {tr.cfg.method.name!r} does not fit "
                              f"its options in this config: {str(exc).splitlines()[0]}") from None
    extra_ranks = ckpt.get("method_extra_ranks")
    if tr.dist.enabled and extra_ranks and len(extra_ranks) == tr.dist.world_size:
        tr.method.load_extra_state(extra_ranks[tr.dist.rank])  # e.g. per-rank draw generators
    else:
        tr.method.load_extra_state(ckpt.get("method_extra", {}))
    tr.balancer.load_state_dict(ckpt["balancer"])
    for n, o in tr.optims.items():
        o.load_state_dict(ckpt["optims"][n])
    if tr.scaler.is_enabled() and ckpt.get("scaler"):
        tr.scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    ranks = ckpt.get("rng_ranks")
    if tr.dist.enabled:  # each rank continues its own random streams (augmentation, dropout)
        if ranks and len(ranks) == tr.dist.world_size:
            rng = ranks[tr.dist.rank]
        else:
            rng = None
            log(f"resume: checkpoint written by {len(ranks) if ranks else 1} process(es), resuming with "
                f"{tr.dist.world_size}: random streams restart from the seeds (not an exact continuation)")
    if rng is not None:
        torch.set_rng_state(rng["torch"].cpu())
        tr.gen.set_state(rng["gen"].cpu() if tr.device.type == "cpu" else rng["gen"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    tr.epoch = int(ckpt["epoch"])
    tr.global_step = int(ckpt["global_step"])
    tr.best_acc = float(ckpt["best_acc"])
    tr.best_epoch = int(ckpt.get("best_epoch", tr.epoch))
    tr.nonfinite_skipped = int(ckpt.get("nonfinite_skipped", 0))
    part, part_ranks = ckpt.get("in_epoch"), ckpt.get("in_epoch_ranks")
    if part is not None and tr.dist.enabled:
        if part_ranks and len(part_ranks) == tr.dist.world_size:
            part = part_ranks[tr.dist.rank]
        else:
            raise CheckpointError(f"checkpoint {str(path)!r} was written inside epoch {tr.epoch + 1} by "
                                  f"{len(part_ranks) if part_ranks else 1} process(es); resume it with that many")
    tr.metrics.check_resumable(tr.epoch)
    return part


def save_run(tr: Trainer, best: bool, in_epoch: dict[str, Any] | None = None) -> bool:
    """Write ``last.pt`` (and ``best.pt`` when ``best``) atomically; True on the process that wrote.
    ``in_epoch``: written inside an epoch (``run.checkpoint_every_steps``): the steps done and this rank's
    running sums, so that ``--resume`` continues with exactly the batches still to come. Collective under
    DDP."""
    ranks = None
    if tr.dist.enabled:  # collective: every rank hands rank 0 its RNG, method extra state, epoch sums
        from adaptkd.engine.distributed import gather_objects

        ranks = gather_objects({"rng": rng_state(tr.gen), "method_extra": tr.method.extra_state(),
                                "in_epoch": in_epoch})
    if not tr.dist.is_main:
        return False
    state = tr.state_dict()
    state["in_epoch"] = in_epoch
    if ranks is not None:
        state["rng_ranks"] = [r["rng"] for r in ranks]
        state["method_extra_ranks"] = [r["method_extra"] for r in ranks]
        state["in_epoch_ranks"] = [r["in_epoch"] for r in ranks]
    if best:
        atomic_save(state, tr.out / "best.pt")
    atomic_save(state, tr.out / "last.pt")
    return True


def kept_line(out: Path, saved: tuple[int, int | None] | None) -> str:
    """What an interrupted run keeps in run folder ``out``; ``saved``: (epoch, step inside it or None) of
    the last checkpoint this process wrote (None: none yet)."""
    last = out / "last.pt"
    if saved is None:
        return (f"no checkpoint had been written yet (run folder {str(out)!r}); start again without "
                "--resume" if not last.is_file() else f"{str(last)!r} is as it was when the run started "
                "(resume with --resume)")
    epoch, step = saved
    where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
    return f"the last checkpoint is {str(last)!r} ({where}); resume with --resume"


@contextmanager
def says_what_is_kept(out: Path) -> Iterator[None]:
    """Around building a Trainer and its ``fit()``: an interrupt (Ctrl-C, SIGTERM) that arrives after the run folder
    was prepared but before training started (fit's own handler in place) says what is kept, as an interrupt
    during training does; an interrupt that already says it passes unchanged."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if str(exc):
            raise
        raise type(exc)(kept_line(out, None)) from None
