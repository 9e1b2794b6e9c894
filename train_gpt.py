"""Train a GPT on token shards: one process, or `torchrun` DDP over GPUs and nodes.

    python train_gpt.py --config configs/tiny.toml                      # embedded corpus, CPU or GPU
    torchrun --nproc_per_node=8 train_gpt.py --config configs/gpt2-124m.toml --optim.name=clipped_scion

The story of a run: read and validate the config (before any process group exists), join the
process group, build the model, optimizer, LR schedule and data, resume from the newest checkpoint
in ``train.out_dir`` if there is one, then loop: gradient of the global batch, skip-or-step, log,
evaluate, checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

import optim
from optim import sharding
from configs.base import ConfigError, to_dict
from configs.schema import Config, load_config
from data.loader import TrainLoader, ValidationSet, resolve_shard_dir, split_paths
from data.scan import check_directory
from evals.in_training import Looks
from model import GPT
from trainer import checkpoint, parallel
from trainer.distributed import (ConsistencyError, DistInfo, all_gather_objects, broadcast_object,
                                 check_consistency, init_distributed, peer_failure, shutdown)
from trainer.lock import RunDirError, hold_run_dir
from trainer.loop import evaluate, host_values, make_backward
from trainer.metrics import MetricsWriter, WandbLogger, format_line, peak_flops, run_info
from trainer.resume import restore, rng_state
from trainer.schedule import lr_multiplier


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def build_data(cfg: Config, dist: DistInfo) -> tuple[TrainLoader, ValidationSet]:
    problem = None
    if dist.is_main:  # rank 0 prepares the embedded corpus once and checks every shard; the others wait
        try:
            for note in check_directory(resolve_shard_dir(cfg.data.dir), cfg.model.vocab_size, cfg.data.check_tokens):
                print(f"note: {note}")
        except ValueError as err:
            problem = str(err)
    problem = broadcast_object(problem)
    if problem is not None:
        raise ValueError(problem)
    shard_dir = resolve_shard_dir(cfg.data.dir)
    train = TrainLoader(split_paths(shard_dir, "train"), seq_len=cfg.model.block_size,
                        batch_size=cfg.train.batch_size, micro_batch_size=cfg.train.micro_batch_size,
                        rank=dist.rank, world_size=dist.world_size, seed=cfg.train.seed,
                        shuffle=cfg.data.shuffle_shards, check_tokens=False,  # scanned above
                        device=dist.device)
    val = ValidationSet(split_paths(shard_dir, "val"), seq_len=cfg.model.block_size,
                        num_tokens=cfg.train.eval_tokens, check_tokens=False)
    return train, val


def train(cfg: Config, dist: DistInfo) -> None:
    out_dir = Path(cfg.train.out_dir)
    device, tcfg = dist.device, cfg.train
    torch.manual_seed(tcfg.seed)  # same initial weights on every rank
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tcfg.tf32
    raw_model = GPT(cfg.model).to(device)
    model = parallel.wrap_model(raw_model, mode=tcfg.parallel, distributed=dist.distributed, device=device,
                                dtype=tcfg.dtype, compile=tcfg.compile)  # fsdp: raw_model's parameters are sharded
    parameters = [p for p in raw_model.parameters() if p.requires_grad]
    optimizer = optim.build(raw_model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_multiplier, steps=tcfg.steps, warmup_steps=tcfg.warmup_steps, warmdown_frac=tcfg.warmdown_frac,
        decay=tcfg.lr_decay, min_frac=tcfg.min_lr_frac))
    regularizer = optim.GradientRegularization(cfg.optim.gr, tcfg.steps)
    looks = Looks(cfg, dist)  # samples / HellaSwag during training (a bad data.hellaswag stops here)
    train_loader, val_set = build_data(cfg, dist)
    metrics = MetricsWriter(out_dir, enabled=dist.is_main)

    step, skipped = restore(cfg, Config, dist, raw_model, optimizer, scheduler, train_loader, metrics)
    if dist.is_main:
        write_run_files(out_dir, cfg, dist)
        print(f"model: {raw_model.num_params() / 1e6:.2f}M non-embedding parameters | world size "
              f"{dist.world_size} | grad accumulation {train_loader.grad_accum_steps}")
        print(optim.describe_groups(optimizer))
    wandb = WandbLogger(cfg.log, to_dict(cfg), out_dir) if (cfg.log.wandb and dist.is_main) else None

    tokens_per_step = tcfg.batch_size * cfg.model.block_size
    flops_per_step = raw_model.flops_per_token() * tokens_per_step
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    last_step = min(tcfg.steps, tcfg.stop_after_step or tcfg.steps)
    started, start_step = time.perf_counter(), step
    while step < last_step:
        t0 = time.perf_counter()
        batch = train_loader.next_batch()  # int64 on the device (prefetched during the previous step)
        backward = make_backward(model, batch, device, tcfg.dtype, parameters)
        loss = regularizer.compute(parameters, backward, step) if regularizer.enabled else backward()
        lr = scheduler.get_last_lr()[0]
        optimizer.step()  # owns the step's gradient facts: norm, clip factor and skip, decided on the device
        scheduler.step()
        step += 1
        if step < last_step:
            train_loader.prefetch()  # host reads the next batch while the device finishes this step
        values = host_values({"train_loss": loss, **optim.step_stats(optimizer)})  # the step's one host read
        skipped = int(values.pop("skipped_steps", skipped))
        consecutive_bad = int(values.pop("consecutive_skips", 0))

        dt = time.perf_counter() - t0
        record = {"step": step, "train_loss": values.pop("train_loss"), "lr": lr, **values,
                  "tokens": step * tokens_per_step, "step_time_s": dt, "tokens_per_s": tokens_per_step / dt,
                  "elapsed_s": time.perf_counter() - started, "skipped_steps": skipped}
        finite = consecutive_bad == 0
        if not finite:
            record["skipped"] = True
        if peak is not None:
            record["mfu"] = flops_per_step / dt / dist.world_size / peak
        record["eta_s"] = (record["elapsed_s"] / (step - start_step)) * (tcfg.steps - step)
        if step == start_step + 1:  # the optimizer state exists from the first step on
            record["param_bytes_per_rank"] = sharding.bytes_of(raw_model.parameters())
            record["optim_state_bytes_per_rank"] = sharding.optimizer_state_bytes(optimizer)
        if (tcfg.eval_every and step % tcfg.eval_every == 0) or step == tcfg.steps:
            record["val_loss"] = evaluate(model, val_set, rank=dist.rank, world_size=dist.world_size,
                                          micro_batch_size=tcfg.micro_batch_size, device=device, dtype=tcfg.dtype)
        record.update(looks(raw_model, step))
        metrics.write(record)
        if wandb is not None:
            wandb.log(record)
        if dist.is_main and (step % tcfg.log_every == 0 or "val_loss" in record or not finite):
            print(format_line(record, tcfg.steps), flush=True)
        if consecutive_bad >= tcfg.max_nonfinite_steps:
            raise NonFiniteError(f"{consecutive_bad} consecutive steps had a non-finite loss or gradient "
                                 f"(train.max_nonfinite_steps); stopping at step {step}. The last good "
                                 f"checkpoint in {checkpoint.checkpoint_dir(out_dir)} is kept.")
        if tcfg.consistency_check_every and step % tcfg.consistency_check_every == 0:
            check_consistency(parameters, step)
        due = (tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0) or step == last_step
        if due and consecutive_bad == 0:  # never checkpoint in the middle of a non-finite streak
            save_checkpoint(cfg, dist, step, skipped, raw_model, optimizer, scheduler, train_loader)
    if wandb is not None:
        wandb.finish()


def write_run_files(out_dir: Path, cfg: Config, dist: DistInfo) -> None:
    """The resolved config and the run's versions, git revision and machine, next to its metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "cpu"
    (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    info = run_info(dist.world_size, str(dist.device), device_name)
    (out_dir / "run_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")


def save_checkpoint(cfg, dist, step, skipped, raw_model, optimizer, scheduler, train_loader) -> None:
    """Gather every rank's loader position and RNG state, then rank 0 writes the checkpoint."""
    loaders = all_gather_objects(train_loader.state_dict())
    if any(s != loaders[0] for s in loaders):
        raise RuntimeError(f"ranks disagree on the data position at step {step}: {loaders}")
    rngs = all_gather_objects(rng_state())
    tensors = parallel.checkpoint_tensors(  # fsdp: every rank writes its shards (DCP); else whole state dicts
        checkpoint.checkpoint_file(cfg.train.out_dir, step), raw_model, optimizer)
    error = None
    if dist.is_main:
        try:
            checkpoint.save(cfg.train.out_dir, step, {
                "step": step, "skipped_steps": skipped, **tensors, "scheduler": scheduler.state_dict(),
                "loader": loaders[0], "loader_per_rank": loaders, "rng": rngs, "config": to_dict(cfg)},
                keep=cfg.train.keep_checkpoints)
        except checkpoint.CheckpointWriteError as err:
            error = str(err)
    error = broadcast_object(error)  # every rank stops the same way if rank 0 could not write
    if error is not None:
        raise checkpoint.CheckpointWriteError(error)


def failure_line(err: Exception, cfg: Config) -> str | None:
    """The one-line message of a known fault (docs/failures.md), or None for an unexpected error."""
    if isinstance(err, (ConfigError, ValueError, NonFiniteError, RunDirError, checkpoint.CheckpointWriteError,
                        ConsistencyError)):
        return str(err)
    resume = f"re-run to resume from the newest checkpoint in {checkpoint.checkpoint_dir(cfg.train.out_dir)}"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device writing {err.filename or 'a run file'}; free space and {resume}"
    if peer_failure(err):
        return (f"lost contact with another rank (it died, stalled or lost its network; collectives wait "
                f"train.dist_timeout_s={cfg.train.dist_timeout_s:g} s): {str(err).splitlines()[0][:300]}; {resume}")
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(sys.argv[1:] if argv is None else argv)  # before any process group starts
        for note in cfg.train.fit(int(os.environ.get("WORLD_SIZE", "1"))):  # torchrun's world size
            if os.environ.get("RANK", "0") == "0":
                print(f"warning: {note}", file=sys.stderr)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    try:
        dist = init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    clean = False
    try:
        with hold_run_dir(cfg.train.out_dir, dist.is_main):
            train(cfg, dist)
        clean = True
    except Exception as err:  # noqa: BLE001 - known faults become one line, the rest keep their traceback
        line = failure_line(err, cfg)
        if line is None:
            raise
        print(f"rank {dist.rank}: error: {line}", file=sys.stderr)
        return 1
    finally:
        shutdown(clean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
