"""Layer-sum inner product of Clipped Scion: S = Σ_ℓ ⟨d_ℓ, x_ℓ − r_ℓ·dir_ℓ⟩ with x_ℓ = params_ℓ or 0.

dir_ℓ = lmo_ℓ(d_ℓ) is the unit-ball LMO direction (it points against d_ℓ), so with params=None
S = Σ_ℓ r_ℓ·⟨d_ℓ, −lmo_ℓ(d_ℓ)⟩ = Σ_ℓ r_ℓ‖d_ℓ‖_* ≥ 0 is the layer-wise dual norm G of Clipped Scion
(Pethick et al. 2025, eq. 7), and with params it is the Frank-Wolfe gap ⟨d, x − s⟩ of the constrained variant.
Returns a 0-dim fp32 tensor accumulated in fp32; no host synchronisation.
"""
from __future__ import annotations

import torch

from kernels.dispatch import as_radii, as_tensor_list, check_matching, resolve_backend


def scion_inner_product_torch(ds, directions, radii, params=None) -> torch.Tensor:
    """Reference: per-layer fp32 dot products summed in layer order."""
    if not ds:
        return torch.zeros((), dtype=torch.float32)
    targets = torch._foreach_mul([v.float() for v in directions], [-r for r in radii])
    if params is not None:
        torch._foreach_add_(targets, [p.float() for p in params])
    dots = [torch.dot(d.reshape(-1).float(), t.reshape(-1)) for d, t in zip(ds, targets)]
    return torch.stack(dots).sum()


def scion_inner_product(ds, directions, radii, params=None, backend: str = "auto") -> torch.Tensor:
    """S = Σ_ℓ ⟨d_ℓ, (params_ℓ or 0) − r_ℓ·dir_ℓ⟩ as a 0-dim fp32 tensor (see module doc)."""
    op = "scion_inner_product"
    ds = as_tensor_list(ds, "ds", op=op)
    directions = as_tensor_list(directions, "directions", op=op)
    check_matching(ds, directions, "ds", "directions", op=op)
    radii = as_radii(radii, len(ds), op=op)
    if params is not None:
        params = as_tensor_list(params, "params", op=op)
        check_matching(ds, params, "ds", "params", op=op)
    if resolve_backend(backend, [ds, directions, params], op=op) == "triton":
        raise NotImplementedError(f"kernels.{op}: the Triton kernel lands in the next commit")
    return scion_inner_product_torch(ds, directions, radii, params)
