"""Multi-tensor scaled LMO step of (Clipped) Scion, reading its scale from device memory.

    unconstrained:  x ← x + lr·s·r_ℓ·dir_ℓ
    constrained:    x ← (1 − lr·s)·x + lr·s·r_ℓ·dir_ℓ        (Frank-Wolfe step onto the r_ℓ-ball)
(Pethick et al. 2025, arXiv:2506.01913, Algorithms 3–4 in the reference code's form W ← W − lr·η·u with
η = min(1, S/ρ) and S from kernels.scion_inner_product; the constrained form is x ← x − lr·η·(x − r·lmo).)
``scale`` is a 0-dim device tensor; if it is non-finite nothing is written. fp32 math, fp32 or bf16 params.
"""
from __future__ import annotations

import torch

from .chunk_table import ChunkTable, block_size, radii_tensor
from .dispatch import (as_radii, check_backend, check_list, check_python_float, select_, triton_table, upcast,
                       validate_lists)
from .triton_common import TL_DTYPES, chunk_pointer, device_guard, is_finite, launch, load_f32, store_as
from .triton_common import tl, triton

BLOCK = 2048
NUM_WARPS = 8


def scion_update_torch(params, directions, radii, *, lr, scale, constrained) -> None:
    """Reference: foreach ops in fp32 temporaries, then a device-side select in place (a non-finite scale writes
    nothing)."""
    if not params:
        return
    s = scale.reshape(()).to(device=params[0].device, dtype=torch.promote_types(scale.dtype, torch.float32))
    ok = torch.isfinite(s)
    s = torch.where(ok, s, torch.zeros_like(s))
    step = torch._foreach_mul([upcast(v) for v in directions], [lr * r for r in radii])
    torch._foreach_mul_(step, s)
    p32 = [upcast(p) for p in params]
    if constrained:
        p_new = torch._foreach_mul(p32, 1.0 - lr * s)
        torch._foreach_add_(p_new, step)
    else:
        torch._foreach_add_(step, p32)  # step + x: the same sum as x + step, in the temporary (no second one)
        p_new = step
    select_(params, p_new, ok)


@triton.jit
def _scion_block(x_ptr, v_ptr, offsets, mask, keep, coef, CONSTRAINED: tl.constexpr, MASKED: tl.constexpr):
    x = load_f32(x_ptr, offsets, mask, MASKED)
    if CONSTRAINED:
        x = keep * x
    x += coef * load_f32(v_ptr, offsets, mask, MASKED)
    store_as(x_ptr, offsets, x, mask, MASKED)


@triton.jit
def _scion_update_kernel(rows_ptr, radii_ptr, scale_ptr, lr, CONSTRAINED: tl.constexpr, X_DTYPE: tl.constexpr,
                         V_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One program per row [x, v, count, index]: x = keep·x + lr·s·r·v; nothing written if s is NaN/inf."""
    s = tl.load(scale_ptr)
    if is_finite(s):
        row = rows_ptr + tl.program_id(0).to(tl.int64) * 4
        x_ptr = chunk_pointer(row, 0, X_DTYPE, ALIGNED)
        v_ptr = chunk_pointer(row, 1, V_DTYPE, ALIGNED)
        count = tl.load(row + 2)
        coef = lr * s * tl.load(radii_ptr + tl.load(row + 3))
        keep = 1.0 - lr * s
        offsets = tl.arange(0, BLOCK)
        num_full = (count // BLOCK) * BLOCK
        for start in range(0, num_full, BLOCK):
            _scion_block(x_ptr, v_ptr, start + offsets, None, keep, coef, CONSTRAINED, False)
        tail = num_full + offsets
        _scion_block(x_ptr, v_ptr, tail, tail < count, keep, coef, CONSTRAINED, True)


def scion_update_triton(table: ChunkTable, radii, *, lr, scale, constrained) -> None:
    """Launcher: one launch per (param, direction) dtype pair in the table."""
    radii_on_device = radii_tensor(radii, table.device)
    scale = scale.reshape(()).to(device=table.device, dtype=torch.float32)
    with device_guard(table.device):
        for group in table.groups:
            launch(_scion_update_kernel, (group.num_rows,), group.rows, radii_on_device, scale, lr,
                   CONSTRAINED=constrained, X_DTYPE=TL_DTYPES[group.dtypes[0]], V_DTYPE=TL_DTYPES[group.dtypes[1]],
                   ALIGNED=group.aligned, BLOCK=block_size(BLOCK), num_warps=NUM_WARPS)


def scion_update_(params, directions, radii, *, lr, scale, constrained, backend: str = "auto",
                  plans=None) -> None:
    """In-place scaled LMO step (see module doc)."""
    op = "scion_update_"
    named = {"params": check_list(params, "params", op=op),
             "directions": check_list(directions, "directions", op=op)}
    radii = as_radii(radii, len(named["params"]), op=op)
    lr = check_python_float(lr, "lr", op=op)
    if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
        raise ValueError(f"kernels.{op}: scale must be a 0-dim device tensor, got {type(scale).__name__}")
    if not isinstance(constrained, bool):
        raise TypeError(f"kernels.{op}: constrained must be a bool, got {type(constrained).__name__}")
    if not named["params"]:
        check_backend(backend, op=op)
        return
    table = triton_table(backend, named, op=op, plans=plans)
    if table is not None:
        scion_update_triton(table, radii, lr=lr, scale=scale, constrained=constrained)
        return
    validate_lists(named, op=op)
    scion_update_torch(named["params"], named["directions"], radii, lr=lr, scale=scale, constrained=constrained)
