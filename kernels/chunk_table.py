"""Device tables that let one kernel launch cover a whole list of tensors.

Every tensor is cut into chunks of at most ``chunk_size`` elements; a table row per chunk holds, for each
list the kernel touches (e.g. params, grads, momenta), the chunk's start *byte address* as int64, then the
chunk's element count and the index of its tensor in the list. One program handles one row, so every SM
gets work whatever the tensor sizes, and all in-kernel offsets stay below ``chunk_size``: tensors of more
than 2³¹ elements are safe because the 64-bit arithmetic happens here, on the host, in Python integers.

Rows are grouped by dtype signature (the dtypes of the lists at that tensor), one launch per group, as
the element type of a pointer is a compile-time constant. Tables are built once per list of tensors
(keyed on addresses, sizes and dtypes) and cached; the upload uses pinned memory and a non-blocking copy,
so even a cache miss does not synchronise the host.
"""
from __future__ import annotations

import contextlib
import operator
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

ALIGNMENT_BYTES = 16  # one 128-bit vector access


@dataclass
class Tuning:
    """Chunk size (elements per program) and the largest block (elements per loop iteration)."""
    chunk_size: int = 32768
    max_block: int = 2048


_tuning = Tuning()


def tuning() -> Tuning:
    return _tuning


@contextlib.contextmanager
def override_tuning(chunk_size: int | None = None, max_block: int | None = None) -> Iterator[None]:
    """Temporarily change the chunk size / block size (small values keep interpreter tests fast)."""
    global _tuning
    old = _tuning
    new = Tuning(chunk_size or old.chunk_size, max_block or old.max_block)
    for name, value in (("chunk_size", new.chunk_size), ("max_block", new.max_block)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {value}")
    _tuning = new
    try:
        yield
    finally:
        _tuning = old


def plan_chunks(numels: Sequence[int], chunk_size: int) -> list[tuple[int, int, int]]:
    """(tensor index, first element, element count) for every chunk; zero-size tensors get no chunk."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    plan = []
    for index, numel in enumerate(numels):
        for start in range(0, numel, chunk_size):
            plan.append((index, start, min(chunk_size, numel - start)))
    return plan


def chunk_rows(base_addresses: Sequence[Sequence[int]], element_sizes: Sequence[Sequence[int]],
               plan: Sequence[tuple[int, int, int]]) -> list[list[int]]:
    """Table rows [addr_list0, addr_list1, ..., count, tensor index] with 64-bit byte addresses."""
    rows = []
    for index, start, count in plan:
        addresses = [bases[index] + start * sizes[index] for bases, sizes in zip(base_addresses, element_sizes)]
        rows.append(addresses + [count, index])
    return rows


@dataclass
class ChunkGroup:
    """Rows of one dtype signature, uploaded to the device; ``first_row`` indexes a shared partials buffer."""
    rows: torch.Tensor
    num_rows: int
    dtypes: tuple[torch.dtype, ...]
    aligned: bool
    first_row: int


@dataclass
class ChunkTable:
    groups: list[ChunkGroup]
    num_rows: int
    device: torch.device


_CACHE: dict[tuple, object] = {}
_CACHE_SIZE = 64
_MISSING = object()


def _upload(rows: list[list[int]], width: int, device: torch.device) -> torch.Tensor:
    host = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), width)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def aligned_head(addresses: Sequence[int], element_sizes: Sequence[int]) -> int | None:
    """Elements to peel off the front of a tensor so that every list's rest starts 16-byte aligned: 0 when it
    already does, None when no common count exists (the lists are misaligned differently)."""
    heads = set()
    for address, size in zip(addresses, element_sizes):
        gap = -address % ALIGNMENT_BYTES
        if gap % size:
            return None
        heads.add(gap // size)
    return heads.pop() if len(heads) == 1 else None


def build_table(tensor_lists: Sequence[Sequence[torch.Tensor]], chunk_size: int) -> ChunkTable:
    """Build (uncached) the grouped chunk table for parallel lists of same-shaped contiguous tensors."""
    first = tensor_lists[0]
    device = first[0].device
    bases = [[t.data_ptr() for t in ts] for ts in tensor_lists]
    sizes = [[t.element_size() for t in ts] for ts in tensor_lists]
    if (chunk_size * min(min(s) for s in sizes)) % ALIGNMENT_BYTES:
        raise ValueError(f"chunk_size {chunk_size} does not keep chunk starts {ALIGNMENT_BYTES}-byte aligned")
    # A chunk is aligned when all its lists start on a 16-byte boundary (later chunks of the tensor then are too).
    # A misaligned tensor (e.g. an odd view into a flat buffer) has its unaligned head peeled into a short chunk of
    # its own, so the rest keeps 128-bit vector access; without a common head the whole tensor runs unaligned.
    # Chunks are grouped by (dtypes, aligned): one launch per group.
    chunks: dict[tuple, list[tuple[int, int, int]]] = {}
    for i, t in enumerate(first):
        dtypes = tuple(ts[i].dtype for ts in tensor_lists)
        numel = t.numel()
        head = aligned_head([b[i] for b in bases], [s[i] for s in sizes])
        split = numel if head is None else min(head, numel)
        if split:
            chunks.setdefault((dtypes, False), []).extend(
                (i, start, min(chunk_size, split - start)) for start in range(0, split, chunk_size))
        if split < numel:
            chunks.setdefault((dtypes, True), []).extend(
                (i, start, min(chunk_size, numel - start)) for start in range(split, numel, chunk_size))
    groups, first_row = [], 0
    width = len(tensor_lists) + 2
    for (dtypes, aligned), plan in sorted(chunks.items(), key=lambda kv: (kv[1][0][0], not kv[0][1])):
        rows = chunk_rows(bases, sizes, plan)
        groups.append(ChunkGroup(_upload(rows, width, device), len(rows), dtypes, aligned, first_row))
        first_row += len(rows)
    return ChunkTable(groups, first_row, device)


_ptr, _numel, _contiguous = torch.Tensor.data_ptr, torch.Tensor.numel, torch.Tensor.is_contiguous
_dtype = operator.attrgetter("dtype")


def table_key(tensor_lists: Sequence[Sequence[torch.Tensor]]) -> tuple:
    """Everything a table depends on, read with C-level calls (a few hundred ns per tensor): addresses, sizes,
    dtypes and contiguity of every tensor, the device and the chunk size."""
    key = [_tuning.chunk_size, tensor_lists[0][0].device]
    for ts in tensor_lists:
        key += (tuple(map(_ptr, ts)), tuple(map(_numel, ts)), tuple(map(_dtype, ts)), tuple(map(_contiguous, ts)))
    return tuple(key)


def cached(key: tuple, build: Callable[[], object]) -> object:
    """Cache of tables (or of a decision not to build one) keyed by :func:`table_key`; the oldest entry goes
    first when full (a hit costs one hash of the key, no reordering)."""
    entry = _CACHE.get(key, _MISSING)
    if entry is _MISSING:
        entry = build()
        _CACHE[key] = entry
        if len(_CACHE) > _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
    return entry


def chunk_table(tensor_lists: Sequence[Sequence[torch.Tensor]]) -> ChunkTable:
    """Cached :func:`build_table` for non-empty, validated, contiguous lists, with the current chunk size."""
    return cached(table_key(tensor_lists), lambda: build_table(tensor_lists, _tuning.chunk_size))


class ChunkPlans:
    """The chunk tables of one owner (an optimizer): built once for its parameter / gradient / state lists and
    rebuilt only when one of those tensors moves (a new address, size or dtype), e.g. gradients re-allocated by
    ``zero_grad(set_to_none=True)``. Owning the tables ties their lifetime to the lists they describe (a captured
    CUDA graph replays addresses that must stay valid), and the per-call check is one address tuple per list,
    not the global cache's full key. The owner keeps gradient storage stable (zeroing in place, DDP
    ``gradient_as_bucket_view=True``) so steady-state steps never rebuild.
    """

    MAX_ENTRIES = 64  # per op: old entries go first (tensors moved, e.g. set_to_none every step)

    def __init__(self) -> None:
        self._tables: dict[str, OrderedDict] = {}
        self.builds = 0  # tables built so far (tests check that steady-state steps build none)

    def get(self, op: str, tensor_lists: Sequence[Sequence[torch.Tensor]], build: Callable[[], object]) -> object:
        # addresses of every list, plus the sizes and dtypes a new tensor at a reused address could differ in
        key = (_tuning.chunk_size, tuple(map(_numel, tensor_lists[0])),
               *(tuple(map(_ptr, ts)) for ts in tensor_lists), *(tuple(map(_dtype, ts)) for ts in tensor_lists))
        tables = self._tables.setdefault(op, OrderedDict())
        entry = tables.get(key, _MISSING)
        if entry is _MISSING:
            entry = tables[key] = build()
            self.builds += 1
            if len(tables) > self.MAX_ENTRIES:
                tables.popitem(last=False)
        return entry

    def clear(self) -> None:
        self._tables.clear()


_RADII_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def radii_tensor(radii: Sequence[float], device: torch.device) -> torch.Tensor:
    """Per-tensor radii as a cached fp32 device tensor (uploaded without a host sync)."""
    key = (device, tuple(radii))
    out = _RADII_CACHE.get(key)
    if out is None:
        host = torch.tensor(list(radii), dtype=torch.float32)
        out = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
        _RADII_CACHE[key] = out
        if len(_RADII_CACHE) > _CACHE_SIZE:
            _RADII_CACHE.popitem(last=False)
    return out


def block_size(kernel_block: int) -> int:
    """Elements per loop iteration: the kernel's preferred block, capped by the tuning."""
    return min(kernel_block, _tuning.max_block)
