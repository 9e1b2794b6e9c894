"""A TorchDispatchMode that fails on every host synchronisation: .item(), bool(t), float(t) all end in the
aten op _local_scalar_dense, so an optimizer step run under it provably never waits on the device."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostSyncError(AssertionError):
    pass


class NoHostSync(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise HostSyncError("host synchronisation (_local_scalar_dense) inside a no-sync region")
        return func(*args, **(kwargs or {}))
