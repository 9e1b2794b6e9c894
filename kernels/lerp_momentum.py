"""Momentum averaging of Scion / Clipped Scion: d = (1 − α)·d + α·g, in place, fp32 math.

(Scion / Clipped Scion reference code: d ← (1−α)d + αg; Pethick et al. 2025, arXiv:2502.07529 and
arXiv:2506.01913, Algorithms 3–4.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.chunk_table import ChunkTable, block_size
from kernels.dispatch import check_backend, check_list, check_python_float, triton_table, validate_lists
from kernels.triton_common import TL_DTYPES, device_guard, chunk_pointer, launch, load_f32, store_as

BLOCK = 2048
NUM_WARPS = 8


def lerp_momentum_torch(ds: list[torch.Tensor], grads: list[torch.Tensor], alpha: float) -> None:
    """Reference: one ``_foreach_lerp_`` in fp32 (bf16 buffers go through fp32 copies)."""
    if not ds:
        return
    d32 = [d.float() for d in ds]
    torch._foreach_lerp_(d32, [g.float() for g in grads], alpha)
    low = [(d, x) for d, x in zip(ds, d32) if d.dtype != torch.float32]
    if low:
        torch._foreach_copy_([d for d, _ in low], [x for _, x in low])


@triton.jit
def _lerp_block(d_ptr, g_ptr, offsets, mask, keep, alpha, MASKED: tl.constexpr):
    d = keep * load_f32(d_ptr, offsets, mask, MASKED) + alpha * load_f32(g_ptr, offsets, mask, MASKED)
    store_as(d_ptr, offsets, d, mask, MASKED)


@triton.jit
def _lerp_kernel(rows_ptr, keep, alpha, D_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
                 BLOCK: tl.constexpr):
    """One program per table row [d, g, count, tensor index]: d = keep·d + alpha·g with keep = 1 − alpha."""
    row = rows_ptr + tl.program_id(0).to(tl.int64) * 4
    d_ptr = chunk_pointer(row, 0, D_DTYPE, ALIGNED)
    g_ptr = chunk_pointer(row, 1, G_DTYPE, ALIGNED)
    count = tl.load(row + 2)
    offsets = tl.arange(0, BLOCK)
    num_full = (count // BLOCK) * BLOCK
    for start in range(0, num_full, BLOCK):
        _lerp_block(d_ptr, g_ptr, start + offsets, None, keep, alpha, False)
    tail = num_full + offsets
    _lerp_block(d_ptr, g_ptr, tail, tail < count, keep, alpha, True)


def lerp_momentum_triton(table: ChunkTable, alpha: float) -> None:
    """Launcher: one launch per (d, g) dtype pair in the table."""
    with device_guard(table.device):
        for group in table.groups:
            launch(_lerp_kernel, (group.num_rows,), group.rows, 1.0 - alpha, alpha,
                   D_DTYPE=TL_DTYPES[group.dtypes[0]], G_DTYPE=TL_DTYPES[group.dtypes[1]], ALIGNED=group.aligned,
                   BLOCK=block_size(BLOCK), num_warps=NUM_WARPS)


def lerp_momentum_(ds, grads, alpha, backend: str = "auto") -> None:
    """In place d = (1 − alpha)·d + alpha·g for every pair; alpha a Python float in [0, 1]."""
    op = "lerp_momentum_"
    named = {"ds": check_list(ds, "ds", op=op), "grads": check_list(grads, "grads", op=op)}
    alpha = check_python_float(alpha, "alpha", op=op)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"kernels.{op}: alpha must be in [0, 1], got {alpha}")
    if not named["ds"]:
        check_backend(backend, op=op)
        return
    table = triton_table(backend, named, op=op)
    if table is not None:
        lerp_momentum_triton(table, alpha)
        return
    validate_lists(named, op=op)
    lerp_momentum_torch(named["ds"], named["grads"], alpha)
