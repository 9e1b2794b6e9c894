"""Sharded (FSDP2 / DTensor) parameters as the optimizers see them: local shards, partial sums, whole-matrix ownership.

FSDP2 (`fully_shard`) stores every parameter as a DTensor sharded along dim 0 over a 1-D mesh: rank r holds rows
[r*c, r*c + n_r) with c = ceil(n/W) (torch.chunk's split; trailing ranks may hold fewer rows or none). HSDP uses a
2-D replicate x shard mesh: the same split within each shard group of W ranks, every shard group (replica) holding
the same rows after FSDP2's all-reduce across replicas. Everything below runs within the shard group (the ranks of
the mesh dimension a tensor is sharded along), so under HSDP each replica computes the same result on its own and
nothing here crosses replicas. The optimizers never run kernels on a DTensor; they work on its local shard, and

- join **reductions** (the global gradient norm's sum of squares, Scion's dual-norm inner products) as local partial
  sums plus one all-reduce: a NaN or inf in any shard propagates through the sum, so the all-reduced sum of squares
  also carries the non-finite flag;
- run the LMOs that need a **whole** tensor (Newton-Schulz, column / row / RMS norms) on an owner rank: the shards of a
  batch of tensors travel to their owners in one all-to-all, each owner computes on whole tensors, and the results go
  back to the shards in a second all-to-all (the scheme of torchtitan's DistMuon and microsoft/dion, written here
  for any LMO).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .ns_plan import plan_owners

try:  # DTensor lives in torch.distributed.tensor (torch >= 2.4)
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # pragma: no cover - torch without distributed support
    DTensor, Replicate, Shard = (), None, None


def is_sharded(t: torch.Tensor) -> bool:
    return isinstance(t, DTensor) if DTensor else False


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (sharing its storage, so in-place updates reach the parameter), else ``t``."""
    return t.to_local() if is_sharded(t) else t


def local_list(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
    """:func:`local` of every tensor of a list (None stays None): what the kernels are given."""
    return None if tensors is None else [local(t) for t in tensors]


@dataclass(frozen=True)
class RowShards:
    """How dim 0 of a tensor of ``shape`` is split over the ``world`` ranks of ``group``: rank r holds
    ``sizes[r]`` rows starting at row ``starts[r]``."""
    shape: tuple[int, ...]
    sizes: tuple[int, ...]
    group: object

    @property
    def world(self) -> int:
        return len(self.sizes)

    @property
    def starts(self) -> tuple[int, ...]:
        out, at = [], 0
        for s in self.sizes:
            out.append(at)
            at += s
        return tuple(out)

    @property
    def row_numel(self) -> int:
        return math.prod(self.shape[1:])


def chunk_sizes(rows: int, world: int) -> tuple[int, ...]:
    """Rows per rank of torch.chunk(rows, world) as DTensor's Shard(0) splits them (ceil-sized, trailing remainder)."""
    c = -(-rows // world) if rows else 0
    return tuple(max(0, min(c, rows - r * c)) for r in range(world))


def shard_dim_of(t: torch.Tensor) -> int:
    """The mesh dimension along which a DTensor is row-sharded: its only ``Shard(0)`` placement; every other mesh
    dimension must replicate it (FSDP2: a 1-D mesh; HSDP: replicate x shard). Refuses any other layout."""
    placements = t.placements
    shard = [i for i, p in enumerate(placements) if isinstance(p, Shard) and p.dim == 0]
    others_replicate = all(isinstance(p, Replicate) for i, p in enumerate(placements) if i not in shard)
    if len(shard) != 1 or not others_replicate:
        raise ValueError(f"optimizers handle DTensors sharded along dim 0 over one mesh dimension and replicated "
                         f"over the others (FSDP2 / HSDP); got placements {placements} on a "
                         f"{t.device_mesh.ndim}-D mesh for a tensor of shape {tuple(t.shape)}")
    return shard[0]


def row_shards(t: torch.Tensor) -> RowShards:
    """The row split of a DTensor over its shard group (the mesh dimension it is sharded along: all of a 1-D fsdp
    mesh, one shard group of an hsdp mesh); refuses layouts the optimizers do not handle (:func:`shard_dim_of`)."""
    if not is_sharded(t):
        raise TypeError(f"row_shards needs a DTensor, got {type(t).__name__}")
    mesh, dim = t.device_mesh, shard_dim_of(t)
    group = mesh.get_group(dim)
    shards = RowShards(tuple(t.shape), chunk_sizes(t.shape[0], mesh.size(dim)), group)
    mine = shards.sizes[dist.get_rank(group)]
    if t.to_local().shape[0] != mine:
        raise ValueError(f"DTensor of shape {tuple(t.shape)} holds {t.to_local().shape[0]} local rows on this rank, "
                         f"expected {mine} (torch.chunk split); uneven custom shardings are not supported")
    return shards


def sum_across(partials: torch.Tensor, group=None) -> torch.Tensor:
    """All-reduce (sum) of a vector of per-rank partial sums, in place: one collective for all of them."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(partials, op=dist.ReduceOp.SUM, group=group)
    return partials


def assign_owners(shapes: list[tuple[int, ...]], world: int) -> list[int]:
    """An owner rank per tensor, balancing the cost of whole-tensor work (Newton-Schulz: ~ m*n*min(m, n)).

    Greedy longest-processing-time: the most expensive tensor first, to the least loaded rank. Deterministic, so every
    rank computes the same assignment from the same shapes without communicating; memoized (optim.ns_plan), so a
    step reuses the assignment of the previous one.
    """
    def cost(shape):
        if len(shape) < 2:
            return math.prod(shape)
        return math.prod(shape) * min(shape[-2:])

    return list(plan_owners(tuple(cost(s) for s in shapes), world))


class Pending:
    """An exchange in flight (async_op=True): ``wait()`` completes the collective and returns the result."""

    def __init__(self, work, finish):
        self._work, self._finish = work, finish

    def wait(self):
        if self._work is not None:
            self._work.wait()
        return self._finish()


def _done(result, async_op: bool):
    return Pending(None, lambda: result) if async_op else result


def _exchange(send: list[list[torch.Tensor]], recv_numels: list[int], group, dtype, device, *,
              async_op: bool = False):
    """One all-to-all: ``send[r]`` (tensors, flattened in order) goes to rank r; returns what each rank sent here
    (a :class:`Pending` of it with ``async_op``)."""
    recv_numels = list(recv_numels)
    flat_in = [torch.cat([t.reshape(-1).to(dtype) for t in ts]) if ts else torch.empty(0, dtype=dtype, device=device)
               for ts in send]
    in_splits = [x.numel() for x in flat_in]
    buf_in = torch.cat(flat_in) if flat_in else torch.empty(0, dtype=dtype, device=device)
    buf_out = torch.empty(sum(recv_numels), dtype=dtype, device=device)
    work = dist.all_to_all_single(buf_out, buf_in, output_split_sizes=recv_numels, input_split_sizes=in_splits,
                                  group=group, async_op=async_op)
    return Pending(work, lambda: list(torch.split(buf_out, recv_numels))) if async_op else \
        list(torch.split(buf_out, recv_numels))


@functools.lru_cache(maxsize=256)
def _owner_plan(layouts: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...], owners: tuple[int, ...], rank: int):
    """The exchange plan of tensors (shape, rows per rank) with ``owners``, seen from ``rank``, built once per
    parameter set and group: (tensors it owns, elements it receives from each rank when gathering to owners,
    elements it receives from each rank when scattering back, tensors owned by each rank)."""
    world = len(layouts[0][1]) if layouts else 0
    row = [math.prod(shape[1:]) for shape, _ in layouts]
    mine = tuple(i for i, o in enumerate(owners) if o == rank)
    by_owner = tuple(tuple(i for i, o in enumerate(owners) if o == src) for src in range(world))
    gather = tuple(sum(layouts[i][1][src] * row[i] for i in mine) for src in range(world))
    scatter = tuple(sum(layouts[i][1][rank] * row[i] for i in by_owner[src]) for src in range(world))
    return mine, gather, scatter, by_owner


def gather_to_owners(shards: list[torch.Tensor], layouts: list[RowShards], owners: list[int], *,
                     dtype: torch.dtype, async_op: bool = False):
    """{index: whole tensor} for the tensors this rank owns, assembled from every rank's local shard (in ``dtype``);
    with ``async_op`` a :class:`Pending` of it (the all-to-all runs while the caller works).

    All layouts must share one process group; every rank calls this with the same layouts and owners.
    """
    if not shards:
        return _done({}, async_op)
    group = layouts[0].group
    rank, world = dist.get_rank(group), layouts[0].world
    device = shards[0].device
    send = [[] for _ in range(world)]
    for i, (s, owner) in enumerate(zip(shards, owners)):
        send[owner].append(s)
    mine, recv, _, _ = _owner_plan(tuple((lay.shape, lay.sizes) for lay in layouts), tuple(owners), rank)

    def assemble(received):
        pieces: dict[int, list[torch.Tensor]] = {i: [] for i in mine}
        for src in range(world):
            at = 0
            for i in mine:
                n = layouts[i].sizes[src] * layouts[i].row_numel
                pieces[i].append(received[src][at:at + n].view(layouts[i].sizes[src], *layouts[i].shape[1:]))
                at += n
        return {i: torch.cat(p) for i, p in pieces.items()}

    if async_op:
        pending = _exchange(send, recv, group, dtype, device, async_op=True)
        return Pending(None, lambda: assemble(pending.wait()))
    return assemble(_exchange(send, recv, group, dtype, device))


def scatter_from_owners(wholes: dict[int, torch.Tensor], layouts: list[RowShards], owners: list[int], *,
                        dtype: torch.dtype, device: torch.device, async_op: bool = False):
    """The inverse of :func:`gather_to_owners`: every rank receives its rows of every tensor (in ``dtype``); with
    ``async_op`` a :class:`Pending` of them."""
    if not layouts:
        return _done([], async_op)
    group = layouts[0].group
    rank, world = dist.get_rank(group), layouts[0].world
    send = [[] for _ in range(world)]
    for i in sorted(wholes):
        for dst, part in enumerate(torch.split(wholes[i], list(layouts[i].sizes))):
            send[dst].append(part)
    _, _, recv, by_owner = _owner_plan(tuple((lay.shape, lay.sizes) for lay in layouts), tuple(owners), rank)

    def rows(received):
        out: list[torch.Tensor | None] = [None] * len(layouts)
        for src in range(world):
            at = 0
            for i in by_owner[src]:
                n = layouts[i].sizes[rank] * layouts[i].row_numel
                out[i] = received[src][at:at + n].view(layouts[i].sizes[rank], *layouts[i].shape[1:])
                at += n
        return out

    if async_op:
        pending = _exchange(send, recv, group, dtype, device, async_op=True)
        return Pending(None, lambda: rows(pending.wait()))
    return rows(_exchange(send, recv, group, dtype, device))


def bytes_of(tensors) -> int:
    """Bytes of the local storage of ``tensors`` (a DTensor counts its local shard only)."""
    return sum(local(t).numel() * local(t).element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of this rank's optimizer state tensors (local shards of sharded state)."""
    return bytes_of(v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))


def _group_of(tensors: list[torch.Tensor]):
    for t in tensors:
        if is_sharded(t):
            return row_shards(t).group
    return None


def shard_group(tensors: list[torch.Tensor]):
    """The process group of a list of sharded tensors, or None when none is sharded (a mix is refused)."""
    flags = [is_sharded(t) for t in tensors]
    if not any(flags):
        return None
    if not all(flags):
        raise ValueError("an optimizer step got both sharded (DTensor) and plain parameters; shard every parameter "
                         "of the model (fully_shard on the root as well as on the blocks) or none")
    return row_shards(tensors[flags.index(True)]).group


def norm_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """The accumulation dtype of a norm of ``tensors``: fp32, or fp64 when any of them is fp64 (as kernels.global_norm
    accumulates per dtype), so float64 parameters get float64 norms, clip factors and steps under FSDP too."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def global_norms(lists: list[list[torch.Tensor]], *, backend: str = "auto", plans=None,
                 replicas=None) -> torch.Tensor:
    """L2 norm of each list of tensors, where any tensor may be a sharded DTensor: a 1-D tensor of len(lists),
    fp32 (fp64 when the tensors are: :func:`norm_dtype`).

    Each rank sums the squares of its local shards (kernels.global_norm on plain local tensors) and one all-reduce
    joins all the lists' partial sums; a replicated (plain) tensor counts once, on rank 0. A NaN or inf in any shard
    reaches every rank's result through the sum. ``plans``: the calling optimizer's kernels.ChunkPlans.

    ``replicas``: a process group whose ranks hold the same (e.g. DDP-averaged) plain tensors. Their norms are
    computed locally, then one 4-byte all-reduce of a non-finite flag makes every rank see NaN when any rank's
    norm is not finite (a fault after the gradient all-reduce), so all ranks skip the step together.
    """
    from .kernel_api import kernels

    flat = [t for ts in lists for t in ts]
    group = _group_of(flat)
    if group is None:
        norms = torch.stack([kernels.global_norm(ts, backend=backend, plans=plans) if ts else torch.zeros(())
                             for ts in lists])
        return agree_nonfinite(norms, replicas)
    device = next(local(t).device for t in flat if is_sharded(t))
    first = dist.get_rank(group) == 0
    partial = torch.zeros(len(lists), dtype=norm_dtype(flat), device=device)
    for i, ts in enumerate(lists):
        shards = [local(t) for t in ts if is_sharded(t) and local(t).numel() > 0]
        plain = [t for t in ts if not is_sharded(t)] if first else []
        if shards or plain:
            partial[i] = kernels.global_norm(shards + plain, backend=backend, plans=plans).to(device).square()
    return sum_across(partial, group).sqrt()


def agree_nonfinite(norms: torch.Tensor, replicas=None) -> torch.Tensor:
    """``norms`` of replicated (DDP-averaged) gradients, NaN on every rank of ``replicas`` when any rank's norm is
    not finite: one 4-byte all-reduce of a flag, so a fault after the gradient all-reduce makes all ranks skip."""
    if replicas is not None and dist.is_available() and dist.is_initialized():
        bad = (~torch.isfinite(norms)).any().to(torch.float32).reshape(1)
        dist.all_reduce(bad, op=dist.ReduceOp.SUM, group=replicas)
        norms = torch.where(bad > 0, torch.full_like(norms, float("nan")), norms)
    return norms
