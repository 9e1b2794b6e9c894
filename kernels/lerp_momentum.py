"""Momentum averaging of Scion / Clipped Scion: d = (1 − α)·d + α·g, in place, fp32 math.

With ``skip_if_nonfinite=t`` (a 0-dim device tensor, e.g. the global gradient norm) nothing is written when t
is NaN or inf, so an optimizer can skip a poisoned step without a per-tensor select of its own.

(Scion / Clipped Scion reference code: d ← (1−α)d + αg; Pethick et al. 2025, arXiv:2502.07529 and
arXiv:2506.01913, Algorithms 3–4.)
"""
from __future__ import annotations

import torch

from .chunk_table import ChunkTable, block_size
from .dispatch import (check_backend, check_list, check_python_float, select_, triton_table, upcast,
                       validate_lists)
from .triton_common import TL_DTYPES, chunk_pointer, device_guard, is_finite, launch, load_f32, store_as
from .triton_common import tl, triton

BLOCK = 2048
NUM_WARPS = 8


def lerp_momentum_torch(ds: list[torch.Tensor], grads: list[torch.Tensor], alpha: float,
                        skip_if_nonfinite: torch.Tensor | None = None) -> None:
    """Reference: one ``_foreach_lerp_`` in fp32 (bf16 buffers go through fp32 copies); with a guard, the
    result is selected on the device (``torch.where``) so a non-finite guard leaves ``ds`` untouched."""
    if not ds:
        return
    g32 = [upcast(g) for g in grads]
    if skip_if_nonfinite is not None:
        ok = torch.isfinite(skip_if_nonfinite.reshape(()).to(ds[0].device))
        select_(ds, torch._foreach_lerp([upcast(d) for d in ds], g32, alpha), ok)
        return
    d32 = [upcast(d) for d in ds]
    torch._foreach_lerp_(d32, g32, alpha)
    low = [(d, x) for d, x in zip(ds, d32) if x is not d]
    if low:
        torch._foreach_copy_([d for d, _ in low], [x for _, x in low])


@triton.jit
def _lerp_block(d_ptr, g_ptr, offsets, mask, keep, alpha, MASKED: tl.constexpr):
    d = keep * load_f32(d_ptr, offsets, mask, MASKED) + alpha * load_f32(g_ptr, offsets, mask, MASKED)
    store_as(d_ptr, offsets, d, mask, MASKED)


@triton.jit
def _lerp_kernel(rows_ptr, guard_ptr, keep, alpha, HAS_GUARD: tl.constexpr, D_DTYPE: tl.constexpr,
                 G_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One program per table row [d, g, count, tensor index]: d = keep·d + alpha·g with keep = 1 − alpha;
    with HAS_GUARD, nothing is written when the scalar at ``guard_ptr`` is NaN or inf."""
    if HAS_GUARD:
        run = is_finite(tl.load(guard_ptr))
    else:
        run = True
    if run:
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


def lerp_momentum_triton(table: ChunkTable, alpha: float, skip_if_nonfinite: torch.Tensor | None = None) -> None:
    """Launcher: one launch per (d, g) dtype pair in the table."""
    guard = None if skip_if_nonfinite is None else skip_if_nonfinite.reshape(()).to(table.device)
    with device_guard(table.device):
        for group in table.groups:
            launch(_lerp_kernel, (group.num_rows,), group.rows, group.rows if guard is None else guard,
                   1.0 - alpha, alpha, HAS_GUARD=guard is not None, D_DTYPE=TL_DTYPES[group.dtypes[0]], G_DTYPE=TL_DTYPES[group.dtypes[1]], ALIGNED=group.aligned,
                   BLOCK=block_size(BLOCK), num_warps=NUM_WARPS)


def lerp_momentum_(ds, grads, alpha, backend: str = "auto", *,
                   skip_if_nonfinite: torch.Tensor | None = None, plans=None) -> None:
    """In place d = (1 − alpha)·d + alpha·g for every pair; alpha a Python float in [0, 1]; nothing is written
    when the optional 0-dim ``skip_if_nonfinite`` tensor is NaN or inf."""
    op = "lerp_momentum_"
    named = {"ds": check_list(ds, "ds", op=op), "grads": check_list(grads, "grads", op=op)}
    alpha = check_python_float(alpha, "alpha", op=op)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"kernels.{op}: alpha must be in [0, 1], got {alpha}")
    if skip_if_nonfinite is not None and (not isinstance(skip_if_nonfinite, torch.Tensor)
                                          or skip_if_nonfinite.numel() != 1):
        raise ValueError(f"kernels.{op}: skip_if_nonfinite must be a 0-dim tensor or None, got "
                         f"{type(skip_if_nonfinite).__name__}")
    if not named["ds"]:
        check_backend(backend, op=op)
        return
    table = triton_table(backend, named, op=op, plans=plans)
    if table is not None:
        lerp_momentum_triton(table, alpha, skip_if_nonfinite)
        return
    validate_lists(named, op=op)
    lerp_momentum_torch(named["ds"], named["grads"], alpha, skip_if_nonfinite)
