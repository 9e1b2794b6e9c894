"""Run under torchrun (gloo): checks optim.sharding's primitives against whole tensors on every rank."""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from optim import sharding

SHAPES = [(5, 3), (7, 4), (2, 6), (1, 3), (4,), (9, 2)]


def main() -> None:
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    full = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    dts = [distribute_tensor(f, mesh, [Shard(0)]) for f in full]
    layouts = [sharding.row_shards(d) for d in dts]
    for f, d, lay in zip(full, dts, layouts):
        start, size = lay.starts[rank], lay.sizes[rank]
        assert torch.equal(d.to_local(), f[start:start + size]), (lay, d.to_local().shape)

    # one all-reduce of partial sums equals the whole tensors' sums
    partial = torch.stack([sharding.local(d).pow(2).sum() for d in dts])
    total = sharding.sum_across(partial, layouts[0].group)
    assert torch.allclose(total, torch.stack([f.pow(2).sum() for f in full]), rtol=1e-12)

    owners = sharding.assign_owners([lay.shape for lay in layouts], world)
    wholes = sharding.gather_to_owners([d.to_local() for d in dts], layouts, owners, dtype=torch.float64)
    assert sorted(wholes) == [i for i, o in enumerate(owners) if o == rank]
    for i, w in wholes.items():
        assert torch.equal(w, full[i]), i
    results = {i: w * (i + 2) + 1 for i, w in wholes.items()}
    back = sharding.scatter_from_owners(results, layouts, owners, dtype=torch.float64, device=torch.device("cpu"))
    for i, (f, lay) in enumerate(zip(full, layouts)):
        start, size = lay.starts[rank], lay.sizes[rank]
        assert torch.equal(back[i], (f * (i + 2) + 1)[start:start + size]), i

    # asynchronous: both exchanges in flight at once, completed in reverse order, give the same tensors
    pending_in = sharding.gather_to_owners([d.to_local() for d in dts], layouts, owners, dtype=torch.float64,
                                           async_op=True)
    pending_out = sharding.scatter_from_owners(results, layouts, owners, dtype=torch.float64,
                                               device=torch.device("cpu"), async_op=True)
    assert all(torch.equal(a, b) for a, b in zip(pending_out.wait(), back))
    got = pending_in.wait()
    assert sorted(got) == sorted(wholes) and all(torch.equal(got[i], wholes[i]) for i in wholes)

    # a lower-precision exchange rounds like a cast of the whole tensor
    wholes16 = sharding.gather_to_owners([d.to_local() for d in dts], layouts, owners, dtype=torch.bfloat16)
    for i, w in wholes16.items():
        assert torch.equal(w, full[i].to(torch.bfloat16)), i
    # the kernels refuse a DTensor by name instead of reading its (null) storage
    from optim.kernel_api import kernels
    try:
        kernels.global_norm([dts[0]], backend="torch")
    except TypeError as err:
        assert "DTensor" in str(err) and "to_local" in str(err), err
    else:
        raise AssertionError("kernels.global_norm accepted a DTensor")
    print(f"rank {rank}: ok", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
