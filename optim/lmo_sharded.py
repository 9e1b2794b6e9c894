"""The LMOs of optim/lmo.py on sharded (FSDP2 DTensor) tensors, with the same math as on whole tensors.

- ``sign`` is elementwise: each rank computes it on its own rows (its scaling reads the global shape).
- Every other norm (spectral, colnorm, rownorm, bias_rms) needs the whole tensor: each tensor gets an owner rank
  (balanced by cost), one all-to-all brings the shards to the owners, each owner runs `lmo_many` on whole tensors
  (Newton-Schulz batched by shape, sub-matrix splits as on an unsharded run), and a second all-to-all returns each
  rank its rows of the result. Spectral inputs travel in the Newton-Schulz dtype (Newton-Schulz casts to it first, so
  nothing changes); results travel in the tensor's dtype.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from . import sharding
from .lmo import LMOSpec, lmo_many


def sign_lmo_local(d_local: torch.Tensor, spec: LMOSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """-sign(d)/c on a shard of a tensor of global ``shape`` (c = math d_in if normalized, else 1)."""
    d_in = shape[0] if spec.transpose else shape[1]
    return torch.sign(d_local) * (-1.0 / (d_in if spec.is_normalized else 1))


def lmo_many_sharded(ds: list[torch.Tensor], specs: list[LMOSpec], *, ns_steps: int = 5,
                     ns_dtype: torch.dtype = torch.bfloat16) -> list[torch.Tensor]:
    """lmo of every sharded tensor of ``ds``, returned as this rank's local rows (plain tensors)."""
    group = sharding.shard_group(ds)
    world = dist.get_world_size(group)
    out: list[torch.Tensor | None] = [None] * len(ds)
    whole = []
    for i, (d, spec) in enumerate(zip(ds, specs)):
        if spec.norm == "sign":
            if d.ndim != 2:
                raise ValueError(f"norm 'sign' needs a 2-D tensor, got shape {tuple(d.shape)}")
            out[i] = sign_lmo_local(d.to_local(), spec, tuple(d.shape))
        else:
            whole.append(i)
    layouts = {i: sharding.row_shards(ds[i]) for i in whole}
    owners = dict(zip(whole, sharding.assign_owners([layouts[i].shape for i in whole], world)))
    # one exchange per transport dtype (spectral inputs in the Newton-Schulz dtype, the rest in their own)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i in whole:
        by_dtype.setdefault(ns_dtype if specs[i].norm == "spectral" else ds[i].dtype, []).append(i)
    mine, mine_specs = {}, {}
    for dtype, idx in by_dtype.items():
        got = sharding.gather_to_owners([ds[i].to_local() for i in idx], [layouts[i] for i in idx],
                                        [owners[i] for i in idx], dtype=dtype)
        for j, tensor in got.items():
            i = idx[j]
            mine[i], mine_specs[i] = tensor.to(ds[i].dtype), specs[i]
    order = sorted(mine)
    results = dict(zip(order, lmo_many([mine[i] for i in order], [mine_specs[i] for i in order],
                                       ns_steps=ns_steps, ns_dtype=ns_dtype, split_across_ranks=False)))
    for dtype in sorted({ds[i].dtype for i in whole}, key=str):
        idx = [i for i in whole if ds[i].dtype == dtype]
        back = sharding.scatter_from_owners({j: results[i] for j, i in enumerate(idx) if i in results},
                                            [layouts[i] for i in idx], [owners[i] for i in idx], dtype=dtype,
                                            device=ds[idx[0]].to_local().device)
        for j, i in enumerate(idx):
            out[i] = back[j]
    return out  # type: ignore[return-value]
