"""A run's state in one object: everything the next step depends on, saved and restored together.

``TrainState`` holds the model (raw and wrapped for compile/DDP), the optimizer, the LR schedule, the data
loader, the metrics writer and the counters (step, skipped steps); the RNG is torch's global state, gathered
from every rank when saving. ``train_gpt.py`` builds one, calls ``resume()``, then loops ``train_step`` /
log / evaluate / ``save()``. Nothing here imports ``model``, ``optim`` or ``data``: the pieces come in built.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from configs.base import to_dict
from trainer import checkpoint, parallel
from trainer.distributed import DistInfo, all_gather_objects, broadcast_object
from trainer.grad_memory import GradBytes
from trainer.passes import StepClock, host_values, make_backward
from trainer.metrics import MetricsWriter
from trainer.resume import restore, rng_state


@dataclass
class TrainState:
    cfg: Any  # configs.schema.Config
    dist: DistInfo
    raw_model: nn.Module
    model: nn.Module  # raw_model, compiled and/or wrapped for DDP / FSDP (trainer/parallel.py)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: Any  # data.loader.TrainLoader
    metrics: MetricsWriter
    step: int = 0
    skipped_steps: int = 0
    consecutive_skips: int = 0  # of the last step, from the optimizer's device counter
    parameters: list[torch.Tensor] = field(default_factory=list)
    measure_grad_bytes: bool = True  # the next step reports grad_bytes_per_rank (the first step of the process)
    optimizer_step: Optional[Callable[[], Any]] = None  # replaces optimizer.step() (optim.CapturedStep)

    def __post_init__(self) -> None:
        if not self.parameters:
            self.parameters = [p for p in self.raw_model.parameters() if p.requires_grad]

    def resume(self) -> None:
        """Load the newest checkpoint of ``train.out_dir`` into every piece (trainer/resume.py decides which)."""
        self.step, self.skipped_steps = restore(self.cfg, type(self.cfg), self.dist, self.raw_model, self.optimizer,
                                                self.scheduler, self.loader, self.metrics)

    def save(self) -> None:
        """Gather every rank's loader position and RNG state, then rank 0 writes the checkpoint."""
        step, dist, cfg = self.step, self.dist, self.cfg
        loaders = all_gather_objects(self.loader.state_dict())
        if any(s != loaders[0] for s in loaders):
            raise RuntimeError(f"ranks disagree on the data position at step {step}: {loaders}")
        rngs = all_gather_objects(rng_state())
        tensors = parallel.checkpoint_tensors(  # fsdp: every rank writes its shards (DCP); else whole state dicts
            checkpoint.checkpoint_file(cfg.train.out_dir, step), self.raw_model, self.optimizer)
        error = None
        if dist.is_main:
            try:
                checkpoint.save(cfg.train.out_dir, step, {
                    "step": step, "skipped_steps": self.skipped_steps, **tensors,
                    "scheduler": self.scheduler.state_dict(), "loader": loaders[0], "loader_per_rank": loaders,
                    "rng": rngs, "config": to_dict(cfg)}, keep=cfg.train.keep_checkpoints)
            except checkpoint.CheckpointWriteError as err:
                error = str(err)
        error = broadcast_object(error)  # every rank stops the same way if rank 0 could not write
        if error is not None:
            raise checkpoint.CheckpointWriteError(error)


def train_step(state: TrainState, regularizer, *, prefetch: bool = True) -> dict[str, float]:
    """One optimizer step on the next global batch; returns the step's values, read on the host in one transfer
    after ``optimizer.step()`` (so ``step_time_s`` covers the whole step).

    The optimizer owns the gradient facts: it takes the global norm, the clip factor and the non-finite skip on
    the device, and its stats (``grad_norm``, ``clip_factor``, ..., ``skipped_steps``, ``consecutive_skips``)
    come back with the loss. With ``prefetch`` the next batch is read and copied while the device finishes.
    The step's time is broken down (trainer.passes.StepClock: device time on CUDA, no sync) into ``time_data_s``
    (taking the batch), ``time_fwd_bwd_s``, ``time_optimizer_s`` and ``time_host_read_s`` (the one read: the host
    waits there for the device to finish the step).
    """
    t0 = time.perf_counter()
    tcfg = state.cfg.train
    clock = StepClock(state.dist.device)
    batch = state.loader.next_batch()  # int64 on the device (prefetched during the previous step)
    probe = GradBytes(state.raw_model) if state.measure_grad_bytes else None
    clock.mark()
    norm = getattr(state.optimizer, "backward_norm", None)  # optim.norm_in_backward: armed for the last micro-batch
    backward = make_backward(state.model, batch, state.dist.device, tcfg.dtype, state.parameters,
                             defer_grad_sync=tcfg.fsdp_defer_grad_sync,
                             after_micro_batch=probe.sample if probe is not None else None,
                             before_last_micro_batch=norm.arm if norm is not None else None)
    loss = regularizer.compute(state.parameters, backward, state.step) if regularizer.enabled else backward()
    clock.mark()
    lr = state.scheduler.get_last_lr()[0]
    (state.optimizer_step or state.optimizer.step)()  # owns the gradient facts: norm, clip factor, skip (on device)
    clock.mark()
    state.scheduler.step()
    state.step += 1
    if prefetch:
        state.loader.prefetch()  # host reads the next batch while the device finishes this step
    stats = getattr(state.optimizer, "stats", None)
    t_read = time.perf_counter()
    values = host_values({"train_loss": loss, **(stats() if callable(stats) else {})})  # the step's one host read
    host_read = time.perf_counter() - t_read
    state.skipped_steps = int(values.pop("skipped_steps", state.skipped_steps))
    state.consecutive_skips = int(values.pop("consecutive_skips", 0))
    extra = {}
    if probe is not None:  # the first step of this process: measured, not from a formula
        extra["grad_bytes_per_rank"] = probe.peak
        state.measure_grad_bytes = False
    fwd_bwd, optimizer = clock.durations()
    return {"train_loss": values.pop("train_loss"), "lr": lr, **values, **extra,
            "step_time_s": time.perf_counter() - t0, "time_data_s": clock.host_start - t0,
            "time_fwd_bwd_s": fwd_bwd, "time_optimizer_s": optimizer, "time_host_read_s": host_read}
