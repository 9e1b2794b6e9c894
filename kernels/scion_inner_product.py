"""Layer-sum inner product of Clipped Scion: S = Σ_ℓ ⟨d_ℓ, x_ℓ − r_ℓ·dir_ℓ⟩ with x_ℓ = params_ℓ or 0.

dir_ℓ = lmo_ℓ(d_ℓ) is the unit-ball LMO direction (it points against d_ℓ), so with params=None
S = Σ_ℓ r_ℓ·⟨d_ℓ, −lmo_ℓ(d_ℓ)⟩ = Σ_ℓ r_ℓ‖d_ℓ‖_* ≥ 0 is the layer-wise dual norm of Clipped Scion
(Pethick et al. 2025, arXiv:2506.01913, Algorithm 3: Σ_ℓ⟨d_ℓ, v_ℓ⟩ with v_ℓ = −r_ℓ·lmo(d_ℓ)), and with params it
is the Frank-Wolfe gap Σ_ℓ⟨d_ℓ, x_ℓ − r_ℓ·lmo(d_ℓ)⟩ of Algorithm 4.
Returns a 0-dim fp32 tensor accumulated in fp32; no host synchronisation.
"""
from __future__ import annotations

import torch

from .chunk_table import ChunkTable, block_size, radii_tensor
from .dispatch import as_radii, check_backend, check_list, triton_table, upcast, validate_lists
from .triton_common import TL_DTYPES, chunk_pointer, device_guard, finish_reduction, launch, load_f32
from .triton_common import tl, triton

BLOCK = 2048
NUM_WARPS = 8


def scion_inner_product_torch(ds, directions, radii, params=None) -> torch.Tensor:
    """Reference: per-layer fp32 (fp64 for fp64 inputs) dot products summed in layer order."""
    if not ds:
        return torch.zeros((), dtype=torch.float32)
    targets = torch._foreach_mul([upcast(v) for v in directions], [-r for r in radii])
    if params is not None:
        torch._foreach_add_(targets, [upcast(p) for p in params])
    dots = []
    for d, t in zip(ds, targets):
        dtype = torch.promote_types(upcast(d).dtype, t.dtype)
        dots.append(torch.dot(d.reshape(-1).to(dtype), t.reshape(-1).to(dtype)))
    return torch.stack(dots).sum()


@triton.jit
def _inner_block(d_ptr, v_ptr, x_ptr, offsets, mask, radius, HAS_PARAMS: tl.constexpr, MASKED: tl.constexpr):
    target = -radius * load_f32(v_ptr, offsets, mask, MASKED)
    if HAS_PARAMS:
        target += load_f32(x_ptr, offsets, mask, MASKED)
    return load_f32(d_ptr, offsets, mask, MASKED) * target


@triton.jit
def _inner_product_kernel(rows_ptr, radii_ptr, partials_ptr, first_row, HAS_PARAMS: tl.constexpr,
                          D_DTYPE: tl.constexpr, V_DTYPE: tl.constexpr, X_DTYPE: tl.constexpr,
                          ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """First stage: partials[first_row + pid] = Σ d·(x − r·v) over the chunk of row [d, v, (x,) count, index]."""
    pid = tl.program_id(0)
    if HAS_PARAMS:
        row = rows_ptr + pid.to(tl.int64) * 5
        x_ptr = chunk_pointer(row, 2, X_DTYPE, ALIGNED)
        count = tl.load(row + 3)
        radius = tl.load(radii_ptr + tl.load(row + 4))
    else:
        row = rows_ptr + pid.to(tl.int64) * 4
        x_ptr = chunk_pointer(row, 1, V_DTYPE, ALIGNED)  # unused
        count = tl.load(row + 2)
        radius = tl.load(radii_ptr + tl.load(row + 3))
    d_ptr = chunk_pointer(row, 0, D_DTYPE, ALIGNED)
    v_ptr = chunk_pointer(row, 1, V_DTYPE, ALIGNED)
    offsets = tl.arange(0, BLOCK)
    num_full = (count // BLOCK) * BLOCK
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, num_full, BLOCK):
        acc += _inner_block(d_ptr, v_ptr, x_ptr, start + offsets, None, radius, HAS_PARAMS, False)
    tail = num_full + offsets
    acc += _inner_block(d_ptr, v_ptr, x_ptr, tail, tail < count, radius, HAS_PARAMS, True)
    tl.store(partials_ptr + first_row + pid, tl.sum(acc, axis=0))


def scion_inner_product_triton(table: ChunkTable, radii, has_params: bool) -> torch.Tensor:
    """Launcher: one first-stage launch per dtype signature plus one second-stage launch."""
    if table.num_rows == 0:
        return torch.zeros((), dtype=torch.float32, device=table.device)
    radii_on_device = radii_tensor(radii, table.device)
    partials = torch.empty(table.num_rows, dtype=torch.float32, device=table.device)
    with device_guard(table.device):
        for group in table.groups:
            x_dtype = group.dtypes[2] if has_params else group.dtypes[1]
            launch(_inner_product_kernel, (group.num_rows,), group.rows, radii_on_device, partials, group.first_row,
                   HAS_PARAMS=has_params, D_DTYPE=TL_DTYPES[group.dtypes[0]],
                   V_DTYPE=TL_DTYPES[group.dtypes[1]], X_DTYPE=TL_DTYPES[x_dtype], ALIGNED=group.aligned,
                   BLOCK=block_size(BLOCK), num_warps=NUM_WARPS)
        return finish_reduction(partials, sqrt=False)


def scion_inner_product(ds, directions, radii, params=None, backend: str = "auto", *,
                        plans=None) -> torch.Tensor:
    """S = Σ_ℓ ⟨d_ℓ, (params_ℓ or 0) − r_ℓ·dir_ℓ⟩ as a 0-dim fp32 tensor (see module doc)."""
    op = "scion_inner_product"
    named = {"ds": check_list(ds, "ds", op=op), "directions": check_list(directions, "directions", op=op),
             "params": None if params is None else check_list(params, "params", op=op)}
    radii = as_radii(radii, len(named["ds"]), op=op)
    if not named["ds"]:
        check_backend(backend, op=op)
        return torch.zeros((), dtype=torch.float32)
    table = triton_table(backend, named, op=op, plans=plans)
    if table is not None:
        return scion_inner_product_triton(table, radii, params is not None)
    validate_lists(named, op=op)
    return scion_inner_product_torch(named["ds"], named["directions"], radii, named["params"])
