"""Multi-tensor scaled LMO step of (Clipped) Scion, reading its scale from device memory.

    unconstrained:  x ← x + lr·s·r_ℓ·dir_ℓ
    constrained:    x ← (1 − lr·s)·x + lr·s·r_ℓ·dir_ℓ        (Frank-Wolfe step onto the r_ℓ-ball)
(Pethick et al. 2025, Alg. 1; Clipped Scion uses s = min(1, G/ρ) or similar from kernels.scion_inner_product.)
``scale`` is a 0-dim device tensor; if it is non-finite nothing is written. fp32 math, fp32 or bf16 params.
"""
from __future__ import annotations

import torch

from kernels.dispatch import as_radii, as_tensor_list, check_matching, check_python_float, resolve_backend


def scion_update_torch(params, directions, radii, *, lr, scale, constrained) -> None:
    """Reference: foreach ops in fp32 temporaries, then a device-side select (non-finite scale writes nothing)."""
    if not params:
        return
    s = scale.reshape(()).to(device=params[0].device, dtype=torch.float32)
    ok = torch.isfinite(s)
    s = torch.where(ok, s, torch.zeros_like(s))
    step = torch._foreach_mul([v.float() for v in directions], [lr * r for r in radii])
    torch._foreach_mul_(step, s)
    p32 = [p.float() for p in params]
    if constrained:
        p_new = torch._foreach_mul(p32, 1.0 - lr * s)
        torch._foreach_add_(p_new, step)
    else:
        p_new = torch._foreach_add(p32, step)
    for dst, new in zip(params, p_new):
        dst.copy_(torch.where(ok, new, dst))


def scion_update_(params, directions, radii, *, lr, scale, constrained, backend: str = "auto") -> None:
    """In-place scaled LMO step (see module doc)."""
    op = "scion_update_"
    params = as_tensor_list(params, "params", op=op)
    directions = as_tensor_list(directions, "directions", op=op)
    check_matching(params, directions, "params", "directions", op=op)
    radii = as_radii(radii, len(params), op=op)
    lr = check_python_float(lr, "lr", op=op)
    if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
        raise ValueError(f"kernels.{op}: scale must be a 0-dim device tensor, got {type(scale).__name__}")
    if not isinstance(constrained, bool):
        raise TypeError(f"kernels.{op}: constrained must be a bool, got {type(constrained).__name__}")
    if resolve_backend(backend, [params, directions], op=op) == "triton":
        raise NotImplementedError(f"kernels.{op}: the Triton kernel lands in the next commit")
    scion_update_torch(params, directions, radii, lr=lr, scale=scale, constrained=constrained)
