"""Newton-Schulz split across data-parallel ranks (DDP), executed from an optim.ns_plan plan.

Every rank holds the same (all-reduced) matrices. For each bucket of the plan (the matrices of one wide shape) a rank

1. orthogonalizes the matrices it owns whole, one batch per shape (``run``);
2. computes its column block of each matrix split over a team of ranks (:func:`newton_schulz5_team`: one m x m
   fp32 all-reduce over the team per iteration);
3. writes those results, flattened, into one buffer in the wire dtype, padded to the bucket's longest contribution,
   and starts one asynchronous all-gather of it, so the next bucket's Newton-Schulz overlaps the exchange.

After the last bucket every all-gather is awaited and each matrix is read back from its owner's (or its team's)
slots. Per step a rank receives (W-1) x the bucket's padded length per bucket, in the Newton-Schulz dtype: the
results are exactly representable there. The plan (and the teams' process groups) is built once per shapes and world.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from .newton_schulz import NS_COEFFICIENTS
from .ns_plan import NSPlan, plan_newton_schulz, wide

_TEAM_GROUPS: dict[tuple, object] = {}


def _team_group(team: tuple[int, ...], process_group):
    """The process group of a team (ranks of ``process_group``), created once; only its members take part."""
    ranks = tuple(dist.get_global_rank(process_group, r) if process_group is not None else r for r in team)
    key = (id(dist.distributed_c10d._get_default_group()), ranks)
    if key not in _TEAM_GROUPS:
        _TEAM_GROUPS[key] = dist.new_group(list(ranks), use_local_synchronization=True)
    return _TEAM_GROUPS[key]


def newton_schulz5_team(block: torch.Tensor, steps: int, dtype: torch.dtype, group) -> torch.Tensor:
    """This rank's columns of newton_schulz5 of a wide m x n matrix whose column blocks the team's ranks hold.

    X_0 = X / (||X||_F + 1e-7) with the squared norm summed over the team; per iteration A = sum_j X_j X_j^T
    (all-reduced in fp32, then cast to ``dtype``) and X_j <- a X_j + b A X_j + (c A)(A X_j), which equals
    a X + (b A + c A^2) X restricted to the block (the quintic of newton_schulz5, without forming A^2).
    Returns the block in ``dtype``.
    """
    a, b, c = NS_COEFFICIENTS
    X = block.to(dtype)
    sq = X.float().square().sum().reshape(1)
    dist.all_reduce(sq, group=group)
    X = X / (sq.sqrt().to(dtype) + 1e-7)
    for _ in range(steps):
        A = (X @ X.mT).float()
        dist.all_reduce(A, group=group)
        A = A.to(dtype)
        AX = A @ X
        X = a * X + b * AX + (c * A) @ AX
    return X


def _wide_block(m: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    w = m.mT if m.shape[-2] > m.shape[-1] else m
    return w[:, lo:hi]


def orthogonalize_planned(matrices: list[torch.Tensor], run: Callable[[torch.Tensor], torch.Tensor], *,
                          wire: torch.dtype, steps: int, ns_dtype: torch.dtype, split: bool,
                          process_group=None) -> list[torch.Tensor]:
    """``run`` (batched whole-matrix orthogonalization) of every matrix, the work split across the ranks of
    ``process_group`` by :func:`optim.ns_plan.plan_newton_schulz` (``split=False``: whole matrices only), results
    exchanged per bucket in ``wire``. Every rank calls this with the same shapes in the same order."""
    rank, world = dist.get_rank(process_group), dist.get_world_size(process_group)
    plan: NSPlan = plan_newton_schulz(tuple(tuple(m.shape) for m in matrices), world, split=split)
    device = matrices[0].device
    pending = []
    for bucket in plan.buckets:
        mine = bucket.blocks[rank]
        buf = torch.zeros(bucket.padded, dtype=wire, device=device)
        offsets, at = {}, 0
        for b in mine:  # where each result goes in this rank's buffer (the plan's order)
            offsets[b.matrix] = at
            at += bucket.shape[0] * (b.hi - b.lo)
        by_shape: dict[tuple, list[int]] = {}  # whole matrices, batched by their own shape (tall ones stay tall)
        for b in (b for b in mine if b.whole):
            by_shape.setdefault(plan.shapes[b.matrix], []).append(b.matrix)
        for idx in by_shape.values():
            result = run(torch.stack([matrices[i] for i in idx])).to(wire)
            for j, i in enumerate(idx):
                buf[offsets[i]:offsets[i] + result[j].numel()] = result[j].reshape(-1)
        for b in (b for b in mine if not b.whole):
            part = newton_schulz5_team(_wide_block(matrices[b.matrix], b.lo, b.hi), steps, ns_dtype,
                                       _team_group(b.team, process_group))
            buf[offsets[b.matrix]:offsets[b.matrix] + part.numel()] = part.reshape(-1).to(wire)
        gathered = torch.empty(world * bucket.padded, dtype=wire, device=device)
        work = dist.all_gather_into_tensor(gathered, buf, group=process_group, async_op=True)
        pending.append((work, gathered, bucket))
    out: list[torch.Tensor | None] = [None] * len(matrices)
    for work, gathered, bucket in pending:
        work.wait()
        slots = gathered.view(world, bucket.padded)
        m, _ = bucket.shape
        cols: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for r, blocks in enumerate(bucket.blocks):
            at = 0
            for b in blocks:
                n = m * (b.hi - b.lo)
                if b.whole:
                    out[b.matrix] = slots[r, at:at + n].view(plan.shapes[b.matrix]).to(matrices[b.matrix].dtype)
                else:
                    cols.setdefault(b.matrix, []).append((b.lo, slots[r, at:at + n].view(m, b.hi - b.lo)))
                at += n
        for i, parts in cols.items():
            w = torch.cat([p for _, p in sorted(parts, key=lambda x: x[0])], dim=1)
            tall = plan.shapes[i][0] > plan.shapes[i][1]
            out[i] = (w.mT if tall else w).to(matrices[i].dtype).contiguous()
    return out  # type: ignore[return-value]
