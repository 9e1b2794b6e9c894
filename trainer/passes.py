"""The passes of a training step and of evaluation: the global-batch gradient (micro-batches, DDP/FSDP no_sync),
the step's one host read, and the validation loss. The loop itself is train_gpt.py's; the step is trainer/state.py."""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
import torch.nn as nn

from trainer.distributed import all_reduce_sum
from trainer.parallel import accumulating, no_sync


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA by default ('auto'); float32 (no autocast) on CPU unless asked."""
    if dtype == "float32" or (dtype == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_backward(model: nn.Module, micro_batches: list, device: torch.device, dtype: str,
                  parameters: list[torch.Tensor], *, defer_grad_sync: bool = False,
                  after_micro_batch: Callable[[], None] | None = None,
                  before_last_micro_batch: Callable[[], None] | None = None) -> Callable[[], torch.Tensor]:
    """A closure computing the global-batch gradient into ``.grad`` and returning the global mean loss.

    Each micro-batch loss is divided by the number of micro-batches; DDP averages over ranks (its
    all-reduce runs only on the last micro-batch, ``no_sync`` before), so ``.grad`` is the gradient of
    the mean loss over the whole global batch at any world size. Called again (e.g. by gradient
    regularization at perturbed weights) it recomputes from zero on the same batch. ``backward(sync=False)``
    leaves each rank's local gradient (no all-reduce; GR's per-rank perturbations); the loss is still global.

    Under fsdp/hsdp each micro-batch reduce-scatters into the sharded gradient unless ``defer_grad_sync``
    (trainer.parallel.accumulating). ``after_micro_batch`` is called after each micro-batch's backward (the
    gradient-memory probe of the first step, trainer/grad_memory.py). ``before_last_micro_batch`` is called right
    before the last micro-batch's forward of a synchronizing call: optim.norm_in_backward's ``BackwardNorm.arm``,
    so only the accumulated gradient's hooks count towards the norm.
    """
    accum = len(micro_batches)

    def backward(sync: bool = True) -> torch.Tensor:
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads:  # zero in place: gradient storage (and the optimizer's chunk plan over it) stays put
            torch._foreach_zero_(grads)
        total = torch.zeros((), device=device, dtype=torch.float32)
        for i, (x, y) in enumerate(micro_batches):
            last = i == accum - 1
            if last and sync and before_last_micro_batch is not None:
                before_last_micro_batch()
            if not sync:
                ctx = no_sync(model)
            else:
                ctx = contextlib.nullcontext() if last else accumulating(model, defer_grad_sync=defer_grad_sync)
            with ctx:
                with autocast_context(device, dtype):
                    _, loss = model(x, y, return_logits=False)  # loss only: no logits materialised
                (loss / accum).backward()
            if after_micro_batch is not None:
                after_micro_batch()
            total += loss.detach().float()
        total /= accum
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        return all_reduce_sum(total) / world

    return backward


class StepClock:
    """Marks between the parts of a step: CUDA events on a GPU (recorded without a sync, read after the step's host
    read, when they have completed), host clock readings elsewhere (CPU work is done when the call returns)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []
        self.host_start: float | None = None

    def mark(self) -> None:
        if self.host_start is None:
            self.host_start = time.perf_counter()
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def durations(self) -> list[float]:
        """Seconds between consecutive marks (call after the device finished, e.g. after the host read)."""
        pairs = zip(self.marks, self.marks[1:])
        if self.cuda:
            return [a.elapsed_time(b) / 1e3 for a, b in pairs]
        return [b - a for a, b in pairs]


def host_values(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """The values of 0-dim tensors (loss, optimizer stats) read on the host in one transfer.

    Counters (int64) come back exactly as long as they stay below 2**53 (float64).
    """
    if not tensors:
        return {}
    stacked = torch.stack([t.detach().reshape(()).to(torch.float64) for t in tensors.values()])
    return dict(zip(tensors, stacked.tolist()))


@torch.no_grad()
def evaluate(model: nn.Module, val_set, *, rank: int, world_size: int, micro_batch_size: int,
             device: torch.device, dtype: str) -> float:
    """Mean cross-entropy over the fixed validation sequences, identical at any world size.

    Every batch has the training micro-batch's shape (the last one padded with ignored targets), so a compiled
    model compiles its no-grad evaluation graph once, at the first evaluation, and never again.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # (loss x tokens, tokens)
    for x, y in val_set.batches(rank, world_size, micro_batch_size, pad=True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_context(device, dtype):
            _, loss = model(x, y, return_logits=False)
        tokens = (y != -1).sum()
        sums[0] += torch.where(tokens > 0, loss.double() * tokens, 0.0)  # a wholly padded batch's loss is NaN
        sums[1] += tokens
    all_reduce_sum(sums)
    model.train(was_training)
    return (sums[0] / sums[1]).item()
