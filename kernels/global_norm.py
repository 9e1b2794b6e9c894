"""Global L2 norm of a list of tensors: sqrt(Σ_t Σ_i t_i²), accumulated in fp32.

Returns a 0-dim fp32 tensor (fp64 when a tensor is fp64, torch reference only) on the tensors' device; NaN or inf when any element is non-finite; 0 for an
empty list (on the CPU, as there is no device to take). No host synchronisation.
"""
from __future__ import annotations

import torch


from .chunk_table import ChunkTable, block_size
from .dispatch import check_backend, check_list, compute_dtype, triton_table, validate_lists
from .triton_common import TL_DTYPES, chunk_pointer, device_guard, finish_reduction, launch, load_f32
from .triton_common import tl, triton

BLOCK = 2048
NUM_WARPS = 8


def global_norm_torch(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Reference: one ``_foreach_norm`` per dtype (fp32 accumulation, fp64 for fp64), then the norm of norms."""
    if not tensors:
        return torch.zeros((), dtype=torch.float32)
    norms = []
    for dtype in sorted({t.dtype for t in tensors}, key=str):
        group = [t for t in tensors if t.dtype == dtype]
        norms.extend(torch._foreach_norm(group, 2, dtype=compute_dtype(dtype)))
    return torch.linalg.vector_norm(torch.stack(norms))


@triton.jit
def _sum_squares_kernel(rows_ptr, partials_ptr, first_row, DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
                        BLOCK: tl.constexpr):
    """First stage: partials[first_row + pid] = Σ x² over the chunk of table row ``pid`` (fp32)."""
    pid = tl.program_id(0)
    row = rows_ptr + pid.to(tl.int64) * 3  # row: [address, count, tensor index]
    x_ptr = chunk_pointer(row, 0, DTYPE, ALIGNED)
    count = tl.load(row + 1)
    num_full = (count // BLOCK) * BLOCK
    offsets = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, num_full, BLOCK):
        x = load_f32(x_ptr, start + offsets, None, False)
        acc += x * x
    tail = num_full + offsets
    x = load_f32(x_ptr, tail, tail < count, True)
    acc += x * x
    tl.store(partials_ptr + first_row + pid, tl.sum(acc, axis=0))


def global_norm_triton(table: ChunkTable) -> torch.Tensor:
    """Launcher: one first-stage launch per dtype in the table plus one second-stage launch."""
    if table.num_rows == 0:
        return torch.zeros((), dtype=torch.float32, device=table.device)
    partials = torch.empty(table.num_rows, dtype=torch.float32, device=table.device)
    with device_guard(table.device):
        for group in table.groups:
            launch(_sum_squares_kernel, (group.num_rows,), group.rows, partials, group.first_row,
                   DTYPE=TL_DTYPES[group.dtypes[0]], ALIGNED=group.aligned, BLOCK=block_size(BLOCK),
                   num_warps=NUM_WARPS)
        return finish_reduction(partials, sqrt=True)


def global_norm(tensors, backend: str = "auto", *, plans=None) -> torch.Tensor:
    """0-dim fp32 global L2 norm of ``tensors`` (see module doc); ``backend`` in auto|triton|torch."""
    op = "global_norm"
    named = {"tensors": check_list(tensors, "tensors", op=op)}
    if not named["tensors"]:
        check_backend(backend, op=op)
        return torch.zeros((), dtype=torch.float32)
    table = triton_table(backend, named, op=op, plans=plans)
    if table is not None:
        return global_norm_triton(table)
    validate_lists(named, op=op)
    return global_norm_torch(named["tensors"])
