"""Global L2 norm of a list of tensors: sqrt(Σ_t Σ_i t_i²), accumulated in fp32.

Returns a 0-dim fp32 tensor on the tensors' device; NaN or inf when any element is non-finite; 0 for an
empty list (on the CPU, as there is no device to take). No host synchronisation.
"""
from __future__ import annotations

import torch

from kernels.dispatch import as_tensor_list, resolve_backend


def global_norm_torch(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Reference: one ``_foreach_norm`` per dtype (fp32 accumulation and output), then the norm of norms."""
    if not tensors:
        return torch.zeros((), dtype=torch.float32)
    norms = []
    for dtype in sorted({t.dtype for t in tensors}, key=str):
        group = [t for t in tensors if t.dtype == dtype]
        norms.extend(torch._foreach_norm(group, 2, dtype=torch.float32))
    return torch.linalg.vector_norm(torch.stack(norms))


def global_norm(tensors, backend: str = "auto") -> torch.Tensor:
    """0-dim fp32 global L2 norm of ``tensors`` (see module doc); ``backend`` in auto|triton|torch."""
    tensors = as_tensor_list(tensors, "tensors", op="global_norm")
    if resolve_backend(backend, [tensors], op="global_norm") == "triton":
        raise NotImplementedError("kernels.global_norm: the Triton kernel lands in the next commit")
    return global_norm_torch(tensors)
