"""Train a GPT on token shards: one process, or `torchrun` DDP over GPUs and nodes.

    python train_gpt.py --config configs/tiny.toml                      # embedded corpus, CPU or GPU
    torchrun --nproc_per_node=8 train_gpt.py --config configs/gpt2-124m.toml --optim.name=clipped_scion

The story of a run: read and validate the config (before any process group exists), join the
process group, build the run's state (model, optimizer, LR schedule, data: trainer/state.py), resume
it from the newest checkpoint in ``train.out_dir`` if there is one, then loop: one step (the optimizer
owns the gradient norm, clip factor and non-finite skip; one host read), log, evaluate, checkpoint.
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
from model.hf_gpt2 import load_hf_weights
from trainer import checkpoint, parallel
from trainer.distributed import (ConsistencyError, DistInfo, broadcast_object, check_consistency, init_distributed,
                                 peer_failure, shutdown)
from trainer.lock import RunDirError, hold_run_dir
from trainer.memory import check_fits
from trainer.parallel_dims import ParallelDims
from trainer.report import end_lines, start_line
from trainer.resume import RunComplete
from trainer.passes import evaluate
from trainer.metrics import MetricsWriter, WandbLogger, format_line, naming_file, peak_flops, run_info
from trainer.schedule import lr_multiplier
from trainer.state import TrainState, train_step


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def build_data(cfg: Config, dist: DistInfo) -> tuple[TrainLoader, ValidationSet]:
    problem = None
    if dist.is_main:  # rank 0 prepares the embedded corpus once and checks every shard; the others wait
        try:
            model = cfg.model  # ids in the padded rows (past the tokenizer's) would have probability 0: refuse them
            limit, key = ((model.padded_from, "model.tokenizer_vocab_size") if model.padded_from is not None else
                          (model.vocab_size, "model.vocab_size"))
            for note in check_directory(resolve_shard_dir(cfg.data.dir), limit, cfg.data.check_tokens, key):
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
                        vocab_size=cfg.model.vocab_size, device=dist.device)  # each batch's max still checked
    val = ValidationSet(split_paths(shard_dir, "val"), seq_len=cfg.model.block_size,
                        num_tokens=cfg.train.eval_tokens, vocab_size=cfg.model.vocab_size, check_tokens=False)
    return train, val


def build(cfg: Config, dist: DistInfo) -> tuple[TrainState, ValidationSet, optim.GradientRegularization]:
    """The run's pieces: model (compiled, DDP-wrapped), optimizer, LR schedule, data, metrics; step 0."""
    tcfg = cfg.train
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tcfg.tf32
    torch.manual_seed(tcfg.seed)  # same initial weights on every rank
    raw_model = GPT(cfg.model)
    if cfg.model.init_from:  # a Hugging Face GPT-2's weights (model/hf_gpt2.py); a resume then overwrites them
        load_hf_weights(raw_model, cfg.model.init_from)
    raw_model.to(dist.device)
    dims = ParallelDims.from_config(tcfg, dist.world_size)  # the one place that decides the layout
    model = parallel.wrap_model(raw_model, dims=dims, mesh=dims.build_mesh(dist.device.type), device=dist.device,
                                dtype=tcfg.dtype, compile=tcfg.compile)  # fsdp/hsdp: raw_model's params are sharded
    optimizer = optim.build(raw_model, cfg.optim)  # takes the mesh from the (sharded) parameters
    if dist.distributed and tcfg.parallel == "ddp":  # a NaN on one rank only (a fault) makes every rank skip
        optimizer.agree_across(torch.distributed.group.WORLD)
    if cfg.optim.norm_in_backward:  # the global norm summed by backward hooks; step() reads the gradients once
        optimizer.take_norm_from(optim.BackwardNorm.attach(model, list(raw_model.parameters())))
    if dist.device.type == "cuda":  # the scheduled lr reaches the kernels through device memory (optim/base.py)
        optimizer.keep_lr_on_device()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_multiplier, steps=tcfg.steps, warmup_steps=tcfg.warmup_steps, warmdown_frac=tcfg.warmdown_frac,
        warmdown_steps=tcfg.warmdown_steps, decay=tcfg.lr_decay, min_frac=tcfg.min_lr_frac))
    regularizer = optim.GradientRegularization(cfg.optim.gr, tcfg.steps)
    train_loader, val_set = build_data(cfg, dist)
    metrics = MetricsWriter(Path(tcfg.out_dir), enabled=dist.is_main)
    state = TrainState(cfg, dist, raw_model, model, optimizer, scheduler, train_loader, metrics,
                       optimizer_step=captured_step(cfg, dist, optimizer))
    return state, val_set, regularizer


def captured_step(cfg: Config, dist: DistInfo, optimizer) -> optim.CapturedStep | None:
    """optim.cuda_graph: the step captured after warm-up and replayed (one process on CUDA), else None."""
    if not cfg.optim.cuda_graph:
        return None
    if dist.device.type != "cuda":
        raise ConfigError(f"optim.cuda_graph=true needs a CUDA device; this run is on {dist.device}")
    if dist.world_size > 1:
        raise ConfigError(f"optim.cuda_graph=true runs in one process (the step's cross-rank collectives are not "
                          f"captured); this run has {dist.world_size} ranks")
    return optim.CapturedStep(optimizer)


def train(cfg: Config, dist: DistInfo) -> None:
    out_dir, tcfg = Path(cfg.train.out_dir), cfg.train
    looks = Looks(cfg, dist)  # samples / HellaSwag during training (a bad data.hellaswag stops here)
    state, val_set, regularizer = build(cfg, dist)
    state.resume()
    raw_model = state.raw_model
    if dist.is_main:
        write_run_files(out_dir, cfg, dist)
        dims = ParallelDims.from_config(tcfg, dist.world_size)
        print(f"model: {raw_model.num_params() / 1e6:.2f}M non-embedding parameters | world size "
              f"{dist.world_size} ({dims.describe()}) | grad accumulation {state.loader.grad_accum_steps}")
        print(optim.describe_groups(state.optimizer))
    wandb = WandbLogger(cfg.log, to_dict(cfg), out_dir) if (cfg.log.wandb and dist.is_main) else None

    tokens_per_step = tcfg.batch_size * cfg.model.block_size
    flops_per_step = raw_model.flops_per_token() * tokens_per_step
    peak = peak_flops(torch.cuda.get_device_name(dist.device)) if dist.device.type == "cuda" else None
    last_step = min(tcfg.steps, tcfg.stop_after_step or tcfg.steps)
    started, start_step = time.perf_counter(), state.step
    if dist.is_main:
        print(start_line(out_dir, start_step, last_step, tcfg.steps), flush=True)
    while state.step < last_step:
        values = train_step(state, regularizer, prefetch=state.step + 1 < last_step)
        step, dt = state.step, values["step_time_s"]
        record = {"step": step, **values, "tokens": step * tokens_per_step, "tokens_per_s": tokens_per_step / dt,
                  "elapsed_s": time.perf_counter() - started, "skipped_steps": state.skipped_steps}
        finite = state.consecutive_skips == 0
        if not finite:
            record["skipped"] = True
        if peak is not None:
            record["mfu"] = flops_per_step / dt / dist.world_size / peak
        record["eta_s"] = (record["elapsed_s"] / (step - start_step)) * (tcfg.steps - step)
        if step == start_step + 1:  # the optimizer state exists from the first step on
            record["param_bytes_per_rank"] = sharding.bytes_of(raw_model.parameters())
            record["optim_state_bytes_per_rank"] = sharding.optimizer_state_bytes(state.optimizer)
        if (tcfg.eval_every and step % tcfg.eval_every == 0) or step == tcfg.steps:
            record["val_loss"] = evaluate(state.model, val_set, rank=dist.rank, world_size=dist.world_size,
                                          micro_batch_size=tcfg.micro_batch_size, device=dist.device,
                                          dtype=tcfg.dtype)
        record.update(looks(raw_model, step))
        state.metrics.write(record)
        if wandb is not None:
            wandb.log(record)
        if dist.is_main and (step % tcfg.log_every == 0 or "val_loss" in record or not finite):
            print(format_line(record, tcfg.steps), flush=True)
        if state.consecutive_skips >= tcfg.max_nonfinite_steps:
            raise NonFiniteError(nonfinite_stop(state.consecutive_skips, step, out_dir))
        if tcfg.consistency_check_every and step % tcfg.consistency_check_every == 0:
            check_consistency(state.parameters, step)
        due = (tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0) or step == last_step
        if due and (finite or step == last_step):  # mid-run, never checkpoint inside a non-finite streak
            state.save()
        if step == last_step and not finite and dist.is_main:
            print(nonfinite_end(state.consecutive_skips, step, out_dir), file=sys.stderr, flush=True)
    if wandb is not None:
        wandb.finish()
    if dist.is_main:
        print("\n".join(end_lines(out_dir, state.step, tcfg.steps, tokens_per_step, time.perf_counter() - started,
                                  state.step - start_step)), flush=True)


def nonfinite_stop(streak: int, step: int, out_dir: Path) -> str:
    """The line of a run stopped by train.max_nonfinite_steps: what is kept, or that nothing is."""
    kept = checkpoint.list_checkpoints(out_dir)
    where = (f"the newest checkpoint {kept[-1][1]} (step {kept[-1][0]}) is kept; resume from it after lowering "
             f"optim.lr or fixing the data" if kept else
             "no checkpoint was written yet, so there is nothing to resume from; lower optim.lr or fix the data and "
             "start again")
    return (f"{streak} consecutive steps had a non-finite loss or gradient (train.max_nonfinite_steps); stopping at "
            f"step {step}: {where}")


def nonfinite_end(streak: int, step: int, out_dir: Path) -> str:
    """The warning of a run whose last steps were skipped. Its final checkpoint is written anyway: a skipped step
    changes neither the weights nor the optimizer state (the streak's count is saved with them), so the final
    checkpoint holds exactly the weights of the last good step and a resume continues the streak's count."""
    first = step - streak + 1
    steps = f"step {step} was" if streak == 1 else f"the last {streak} steps ({first}-{step}) were"
    return (f"warning: {steps} skipped for a non-finite loss or gradient; the final checkpoint "
            f"{checkpoint.checkpoint_file(out_dir, step)} holds the weights of step {first - 1}, which the skipped "
            f"steps did not change")


def write_run_files(out_dir: Path, cfg: Config, dist: DistInfo) -> None:
    """The resolved config and the run's versions, git revision and machine, next to its metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "cpu"
    with naming_file(out_dir / "config.json"):
        (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    info = run_info(dist.world_size, str(dist.device), device_name)
    with naming_file(out_dir / "run_info.json"):
        (out_dir / "run_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")


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


def before_process_group_failure(line: str, code: int) -> int:
    """An error every rank meets alike before the process group exists (the config): rank 0 prints it once.

    Under torchrun the other ranks exit 0 at once, and rank 0 writes the line to torchrun's error file
    (TORCHELASTIC_ERROR_FILE), so the launcher's failure summary names this error as its root cause instead of a
    link, and lists one failed rank; rank 0 waits a moment so the others have left before it fails.
    """
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(line, file=sys.stderr, flush=True)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            Path(error_file).write_text(json.dumps({"message": line, "timestamp": int(time.time())}))
        except OSError:
            pass
        time.sleep(1.0)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(sys.argv[1:] if argv is None else argv)  # before any process group starts
        world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
        for note in cfg.train.fit(world_size):
            if os.environ.get("RANK", "0") == "0":
                print(f"warning: {note}", file=sys.stderr)
        ParallelDims.from_config(cfg.train, world_size)  # a shard degree that does not divide stops every rank here
        check_fits(cfg, world_size)  # an impossible shape: one line now, not the OOM killer minutes later
    except ConfigError as err:
        return before_process_group_failure(f"config error: {err}", 2)
    try:
        dist = init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    except ValueError as err:
        return before_process_group_failure(f"error: {err}", 1)
    clean = False
    try:
        with hold_run_dir(cfg.train.out_dir, dist.is_main):
            train(cfg, dist)
        clean = True
    except RunComplete as done:  # every rank read the same checkpoint; nothing was changed
        if dist.is_main:
            print(str(done), file=sys.stderr if done.exit_code else sys.stdout, flush=True)
        clean = True
        return done.exit_code
    except Exception as err:  # noqa: BLE001 - known faults become one line, the rest keep their traceback
        line = failure_line(err, cfg)
        if line is None:
            raise
        if dist.is_main or not isinstance(err, (ConfigError, RunDirError)):  # those two: the same on every rank
            print(f"rank {dist.rank}: error: {line}", file=sys.stderr)
        return 1
    finally:
        shutdown(clean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
