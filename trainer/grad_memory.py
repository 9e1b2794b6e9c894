"""Gradient storage a rank holds during a step, measured on the live tensors (reported as ``grad_bytes_per_rank``).

What counts is the storage that holds the step's gradient while it accumulates over micro-batches: every
parameter's ``.grad`` (under fsdp/hsdp its local shard: a view into FSDP2's padded reduce-scatter output, whose
whole storage counts) and the unsharded gradients FSDP2 keeps across micro-batches when gradient sync is deferred
(train.fsdp_defer_grad_sync). Storages are counted once however many views share them (DDP's gradients are views of
its buckets). :class:`GradBytes` samples after every micro-batch's backward and keeps the largest total.

Not counted: buffers alive only inside one backward (autograd's freshly computed gradient before it is added to
``.grad``; FSDP2's unsharded gradient of the one unit being reduce-scattered, freed as soon as it is sent).
"""
from __future__ import annotations

import torch
from torch import nn

from optim.sharding import local


def _fsdp_unsharded_grads(model: nn.Module) -> list[torch.Tensor]:
    """The unsharded gradients FSDP2 holds for the modules of ``model`` (none unless gradient sync is deferred)."""
    out = []
    for module in model.modules():
        get_state = getattr(module, "_get_fsdp_state", None)
        if get_state is None:
            continue
        group = getattr(get_state(), "_fsdp_param_group", None)
        for fsdp_param in getattr(group, "fsdp_params", ()):
            accumulated = getattr(fsdp_param, "unsharded_accumulated_grad", None)
            if accumulated is not None:
                out.append(accumulated)
            unsharded = getattr(fsdp_param, "_unsharded_param", None)
            if unsharded is not None and unsharded.grad is not None:
                out.append(unsharded.grad)
    return out


def grad_storage_bytes(model: nn.Module) -> int:
    """Bytes of the distinct storages holding gradients of ``model``'s parameters on this rank right now."""
    storages: dict[int, int] = {}
    tensors = [local(p.grad) for p in model.parameters() if p.grad is not None] + _fsdp_unsharded_grads(model)
    for t in tensors:
        storage = t.untyped_storage()
        if storage.nbytes():
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


class GradBytes:
    """The most gradient storage seen at its samples (``sample()`` after each micro-batch's backward)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, grad_storage_bytes(self.model))
