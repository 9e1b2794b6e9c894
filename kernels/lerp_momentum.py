"""Momentum averaging of Scion / Clipped Scion: d = (1 − α)·d + α·g, in place, fp32 math.

(Pethick et al. 2025, "Training Deep Learning Models with Norm-Constrained LMOs", Alg. 1 line 3.)
"""
from __future__ import annotations

import torch

from kernels.dispatch import as_tensor_list, check_matching, check_python_float, resolve_backend


def lerp_momentum_torch(ds: list[torch.Tensor], grads: list[torch.Tensor], alpha: float) -> None:
    """Reference: one ``_foreach_lerp_`` in fp32 (bf16 buffers go through fp32 copies)."""
    if not ds:
        return
    d32 = [d.float() for d in ds]
    torch._foreach_lerp_(d32, [g.float() for g in grads], alpha)
    low = [(d, x) for d, x in zip(ds, d32) if d.dtype != torch.float32]
    if low:
        torch._foreach_copy_([d for d, _ in low], [x for _, x in low])


def lerp_momentum_(ds, grads, alpha, backend: str = "auto") -> None:
    """In place d = (1 − alpha)·d + alpha·g for every pair; alpha a Python float in [0, 1]."""
    op = "lerp_momentum_"
    ds = as_tensor_list(ds, "ds", op=op)
    grads = as_tensor_list(grads, "grads", op=op)
    check_matching(ds, grads, "ds", "grads", op=op)
    alpha = check_python_float(alpha, "alpha", op=op)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"kernels.{op}: alpha must be in [0, 1], got {alpha}")
    if resolve_backend(backend, [ds, grads], op=op) == "triton":
        raise NotImplementedError(f"kernels.{op}: the Triton kernel lands in the next commit")
    lerp_momentum_torch(ds, grads, alpha)
