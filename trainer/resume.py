"""Resuming a run: pick the checkpoint, compare its config with this one, load every piece, record changes.

Which checkpoint (``train.resume``):

* ``auto``: the newest checkpoint that verifies and loads. Newer unreadable ones are moved aside as
  ``*.corrupt`` (never deleted). If checkpoints exist but none loads, the run stops with an error listing
  each and what is wrong with it: a silent restart from step 0 would throw the run away.
* ``fresh``: start from step 0 even though checkpoints exist; they and ``metrics.jsonl`` are moved into
  ``checkpoints/replaced-<time>/`` first, so nothing is lost and the rotation never meets them.
* ``never``: refuse to start if ``train.out_dir`` holds any checkpoint.

Changed settings (``train.resume_changes``): keys in :data:`RESUMABLE` (run length, logging, evaluation,
checkpoint cadence, device, ...) simply take their new values. Any other changed key changes the run
(model, data, optimizer and its settings, schedule, batch, seed): ``refuse`` (the default) stops with one
error listing each key as old -> new; ``apply`` applies them from the resumed step on: the
optimizer's parameter-group values and the schedule's base LRs are reset to the new config after the
state is loaded, a new ``optim.name`` keeps the weights and restarts the optimizer state, and the data
position is kept. Every resume with changes appends a line to ``<out_dir>/config_changes.jsonl``.

A finished run (its checkpoint already at ``train.steps``, or at ``train.stop_after_step``) is not resumed:
:class:`RunComplete` says so and nothing in the run directory changes (no config.json, no config_changes.jsonl,
no metrics). Its exit status is 0 for a plain re-run and 1 when the command asked for settings that differ from
the checkpoint's (they were not applied: nothing ran).
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
import warnings
from pathlib import Path

import torch

from configs.base import ConfigError, iter_fields, to_dict
from optim import with_settings_of
from trainer import checkpoint, parallel
from trainer.distributed import broadcast_object

# Keys whose new value is simply used on resume; every other key changes the run.
RESUMABLE = ("train.steps", "train.stop_after_step", "train.out_dir", "train.checkpoint_every",
             "train.keep_checkpoints", "train.resume", "train.resume_changes", "train.allow_unverified_checkpoints",
             "train.eval_every", "train.eval_tokens", "train.log_every", "train.device", "train.dtype", "train.compile", "train.tf32",
             "train.micro_batch_size", "train.max_nonfinite_steps", "train.dist_timeout_s",
             "train.consistency_check_every", "train.parallel", "train.shard_degree",
             "train.fsdp_defer_grad_sync", "log.*", "data.check_tokens", "optim.backend",
             "train.sample_*", "train.hellaswag_every", "data.hellaswag")
CHANGES_FILE = "config_changes.jsonl"


class RunComplete(Exception):
    """The run directory's checkpoint is already at the step this command would train to: nothing to do."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- choosing the checkpoint

def _listing(paths) -> str:
    return "\n".join(f"  {p}" for p in paths)


def _set_aside(out_dir: Path, paths: list[Path]) -> Path:
    archive = checkpoint.checkpoint_dir(out_dir) / time.strftime("replaced-%Y%m%d-%H%M%S", time.gmtime())
    archive.mkdir(parents=True, exist_ok=True)
    for path in paths:
        for part in (path, checkpoint.checksum_path(path), path.with_suffix(".dcp")):  # .dcp: fsdp tensors
            if part.exists():
                os.replace(part, archive / part.name)
    metrics = out_dir / "metrics.jsonl"
    if metrics.exists():
        os.replace(metrics, archive / metrics.name)
    return archive


def _decide(out_dir: Path, policy: str, allow_unverified: bool = False) -> tuple[str, str | None, dict | None]:
    """Rank 0's verdict: ("resume", path, state), ("fresh", None, None) or ("error", message, None)."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        policy = "auto"  # a restarted generation continues its own run; 'fresh'/'never' applied to the first
    if policy == "never":
        existing = checkpoint.list_checkpoints(out_dir)
        if existing:
            return "error", (f"train.resume='never' but {out_dir} holds checkpoints:\n"
                             f"{_listing(p for _, p in existing)}\nchoose another train.out_dir"), None
        return "fresh", None, None
    if policy == "fresh":
        existing = [p for _, p in checkpoint.list_checkpoints(out_dir)]
        if existing:
            archive = _set_aside(out_dir, existing)
            print(f"train.resume='fresh': starting from step 0; the {len(existing)} previous checkpoint(s) and "
                  f"metrics.jsonl were moved to {archive}", flush=True)
        return "fresh", None, None
    found = checkpoint.scan(out_dir, allow_unverified)
    if found.path is None and found.unreadable:
        reasons = "\n".join(f"  {path}: {why}" for path, why in found.unreadable)
        return "error", (f"{out_dir} holds checkpoints but none can be loaded:\n{reasons}\n"
                         f"Restore a good copy, or start this run again from step 0 with --train.resume=fresh "
                         f"(the files are then moved aside, not deleted)"), None
    for path, why in found.unreadable:
        moved = checkpoint.quarantine(path)
        warnings.warn(f"skipping unreadable checkpoint {path} ({why}); moved it aside as {moved.name}")
    if found.path is None:
        return "fresh", None, None
    return "resume", str(found.path), found.state


# ----------------------------------------------------------------------------- comparing configs

def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old: dict, new: dict, schema: type) -> dict[str, tuple]:
    """``{dotted key: (old, new)}`` for every leaf that differs; a key one side lacks counts as its default."""
    defaults = {key: (list(d) if isinstance(d, tuple) else d) for key, _, d, _ in iter_fields(schema)}
    old, new = _flatten(old), _flatten(new)
    changes = {}
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, defaults.get(key)), new.get(key, defaults.get(key))
        if before != after and key not in ("train.resume", "train.resume_changes"):  # how to resume, not what
            changes[key] = (before, after)
    return changes


def is_resumable(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE)


def _describe(changes: dict) -> str:
    return "\n".join(f"  {key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


# ----------------------------------------------------------------------------- loading

def _load_model(raw_model, state: dict, path) -> None:
    mine = raw_model.state_dict()
    saved = state["model"]
    mismatched = [f"{k} {tuple(saved[k].shape)} -> {tuple(v.shape)}" for k, v in mine.items()
                  if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    missing, extra = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
    if mismatched or missing or extra:
        detail = "; ".join(filter(None, [", ".join(mismatched[:4]) + (" ..." if len(mismatched) > 4 else ""),
                                         f"not in the checkpoint: {', '.join(missing[:4])}" if missing else "",
                                         f"not in this model: {', '.join(extra[:4])}" if extra else ""]))
        raise ConfigError(f"the model's shape changed since {path} was saved ({detail}); a checkpoint cannot be "
                          f"resumed into another architecture: use the checkpoint's model.* settings or a new "
                          f"train.out_dir")
    parallel.load_full_model_state(raw_model, saved)  # plain or FSDP-sharded


def _reset_hyperparameters(optimizer, scheduler, fresh_groups: list[dict], base_lrs: list[float], step: int) -> None:
    """Give the loaded optimizer the new config's group values and the schedule the new base LRs, at ``step``."""
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        group.update(fresh)
    scheduler.base_lrs = list(base_lrs)
    scheduler.last_epoch = step
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


def _load_optimizer(optimizer, scheduler, state: dict, changes: dict, step: int) -> str | None:
    """Load optimizer and schedule state; under applied changes reset their settings. Returns a note or None."""
    if not changes:
        parallel.load_full_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return None
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    base_lrs = list(scheduler.base_lrs)
    note = None
    if "optim.name" in changes:
        note = "optimizer changed: the model weights are kept, the optimizer state starts afresh"
    else:
        try:  # the changed settings (rho, ns_steps, ...) apply; the buffers are kept
            parallel.load_full_optimizer_state(optimizer, with_settings_of(optimizer, state["optimizer"]))
        except (ValueError, KeyError, RuntimeError) as err:
            note = f"the optimizer state does not fit the new parameter groups ({err}); it starts afresh"
    _reset_hyperparameters(optimizer, scheduler, fresh_groups, base_lrs, step)
    return note


def _record(out_dir: Path, step: int, path, changes: dict, policy: str) -> None:
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "step": step, "checkpoint": str(path),
            "resume_changes": policy, "changes": {k: [old, new] for k, (old, new) in changes.items()}}
    with open(out_dir / CHANGES_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")


def _refuse_finished(cfg, out_dir: Path, step: int, changes: dict) -> None:
    """Raise RunComplete when the checkpoint at ``step`` already reached this command's last step."""
    tcfg = cfg.train
    if step < min(tcfg.steps, tcfg.stop_after_step or tcfg.steps):
        return
    changes = {k: v for k, v in changes.items() if k != "train.out_dir"}  # the same directory, spelled otherwise
    if step == tcfg.steps:
        message = f"{out_dir}: already complete at {step}/{tcfg.steps}; raise --train.steps or use a new --train.out_dir"
    elif step > tcfg.steps:
        message = (f"{out_dir}: already at step {step}, past train.steps={tcfg.steps}; raise --train.steps above "
                   f"{step} or use a new --train.out_dir")
    else:
        message = (f"{out_dir}: already stopped at step {step} of {tcfg.steps} (train.stop_after_step="
                   f"{tcfg.stop_after_step}); raise or drop --train.stop_after_step to continue")
    if changes:
        message += (f"\nnothing ran and nothing was changed, so these settings differing from the checkpoint's were "
                    f"not applied:\n{_describe(changes)}")
    raise RunComplete(message, 1 if changes else 0)


def restore(cfg, schema: type, dist, raw_model, optimizer, scheduler, train_loader, metrics) -> tuple[int, int]:
    """Resume from ``cfg.train.out_dir`` if it holds a checkpoint; return (step, skipped steps), (0, 0) if fresh."""
    out_dir = Path(cfg.train.out_dir)
    verdict, where, loaded = (_decide(out_dir, cfg.train.resume, cfg.train.allow_unverified_checkpoints)
                              if dist.is_main else (None, None, None))
    verdict, where = broadcast_object((verdict, where))
    if verdict == "error":
        raise ConfigError(where)
    if verdict == "fresh":
        metrics.truncate_after(0)  # rows of an attempt killed before its first checkpoint
        return 0, 0
    path = Path(where)
    state = loaded if loaded is not None else checkpoint.load(path, verify=False)  # rank 0 verified it
    step = state["step"]
    changes = config_changes(state.get("config", to_dict(cfg)), to_dict(cfg), schema)
    _refuse_finished(cfg, out_dir, step, changes)  # before anything is loaded, printed or recorded
    state = parallel.restore_tensors(path, state, raw_model, optimizer)  # fsdp checkpoints: read by DCP
    run_changing = {k: v for k, v in changes.items() if not is_resumable(k)}
    if run_changing and cfg.train.resume_changes != "apply":
        raise ConfigError(f"{path} was saved with other settings that change the run:\n{_describe(run_changing)}\n"
                          f"Resume with the checkpoint's values, pass --train.resume_changes=apply to apply the "
                          f"changes from step {step} on (recorded in {out_dir / CHANGES_FILE}), or choose a new "
                          f"train.out_dir")
    _load_model(raw_model, state, path)
    note = _load_optimizer(optimizer, scheduler, state, run_changing, step)
    loader_state = dict(state["loader"])
    if run_changing:  # keep the position; the new batch, data or seed take over from here
        loader_state.update(train_loader.state_dict() | {k: loader_state[k] for k in ("epoch", "shard", "pos")})
        if loader_state["shard"] >= len(train_loader.paths):
            loader_state.update(shard=0, pos=0, epoch=loader_state["epoch"] + 1)
    train_loader.load_state_dict(loader_state)
    ranks = state["rng"]  # per rank; a run resumed at another world size continues from rank 0's
    set_rng_state(ranks[dist.rank] if len(ranks) == dist.world_size else ranks[0])
    metrics.truncate_after(step)
    if dist.is_main:
        print(f"resumed from {path} at step {step} (saved with world size {len(ranks)}, now {dist.world_size})")
        if changes:
            print(f"settings changed since the checkpoint ({'applied' if run_changing else 'resumable'}):\n"
                  f"{_describe(changes)}")
            _record(out_dir, step, path, changes, cfg.train.resume_changes)
        if note:
            print(note)
    return step, state["skipped_steps"]
