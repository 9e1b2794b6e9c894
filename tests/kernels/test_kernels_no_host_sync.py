"""The torch path of every kernel entry point runs without a host synchronisation (the Triton path is checked
the same way in interpreted_kernels.py, and with torch.cuda.set_sync_debug_mode("error") on a GPU)."""
from __future__ import annotations

import pytest
import torch

from optim.kernel_api import kernels
from host_sync_guard import HostSyncError, NoHostSync


def _lists(n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3 + i, 4, generator=gen) for i in range(n)]


def test_guard_catches_item():
    with pytest.raises(HostSyncError):
        with NoHostSync():
            torch.ones(()).item()


@pytest.mark.parametrize("bad", [None, float("nan")])
def test_clip_plus_update_step_has_no_host_sync(bad):
    params, grads, momenta = _lists(seed=0), _lists(seed=1), _lists(seed=2)
    if bad is not None:
        grads[1][0, 0] = bad
    with NoHostSync():
        norm = kernels.global_norm(grads, backend="torch")
        kernels.clip_factor(norm, "dgclip", gamma=1.0, delta=0.1)
        kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=0.1, rule="dgclip", gamma=1.0, delta=0.1,
                                    momentum=0.9, nesterov=True, weight_decay=0.1, backend="torch")


def test_scion_step_has_no_host_sync():
    params, grads, ds = _lists(seed=0), _lists(seed=1), _lists(seed=2)
    radii = [1.0] * len(params)
    with NoHostSync():
        kernels.lerp_momentum_(ds, grads, 0.1, backend="torch")
        dirs = [-torch.sign(d) for d in ds]
        dual = kernels.scion_inner_product(ds, dirs, radii, backend="torch")
        scale = torch.clamp(dual / 10.0, max=1.0)
        kernels.scion_update_(params, dirs, radii, lr=0.1, scale=scale, constrained=True, backend="torch")
