"""Newton-Schulz orthogonalization (the spectral LMO's workhorse), batched by shape and split across DDP ranks.

The quintic iteration X <- aX + (bA + cA^2)X with A = XX^T and (a, b, c) = (3.4445, -4.7750, 2.0315) (Jordan et al.,
used by Muon and by Scion, Pethick et al. 2025, App. on LMOs) maps G = U S V^T to approximately U S' V^T with the
singular values S' in roughly [0.7, 1.2] after 5 steps: it does not converge to U V^T exactly, by design.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(G: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximate orthogonalization U V^T of the last two dims of G (batched over leading dims).

    X_0 = G / (||G||_F + 1e-7) per matrix (so ||X_0||_2 <= 1); wide orientation inside the loop. Returns G's dtype.
    The scalings b*A and a*X are taken in place (4 new tensors per step instead of 8; each sum adds the same two
    rounded terms as the reference, so the result is the same bit for bit).
    Each step evaluates c A^2 as (c A) A, the reference code's order (Muon / modded-nanogpt, LIONS-EPFL scion.py,
    the Clipped Scion code), so a bf16 result is bitwise theirs (tests/optim/test_newton_schulz_reference.py).
    """
    if G.ndim < 2:
        raise ValueError(f"newton_schulz5 needs a matrix (or a batch of matrices), got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):  # X is this function's own tensor from here on, so it and A are scaled in place
        A = X @ X.mT
        B = (c * A) @ A  # the reference's order (c*A first): bitwise its bf16 result
        B.add_(A.mul_(b))  # b*A + (c*A)@A: the sum of the same two rounded terms
        BX = B @ X
        X = X.mul_(a).add_(BX)  # a*X + B@X, in X's memory layout as the reference's sum (the next matmuls see it)
    if tall:
        X = X.mT
    return X.to(G.dtype)


def svd_orthogonalize(G: torch.Tensor) -> torch.Tensor:
    """Exact U V^T of the last two dims of G by SVD (float64 math; singular values <= eps*max drop out, so 0 -> 0).

    A testing reference for the spectral LMO: slower than Newton-Schulz and, on CUDA, the SVD synchronizes the host.
    """
    X = G.to(torch.float64)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * max(X.shape[-2:]) * torch.finfo(torch.float64).eps
    keep = (S > tol).to(X.dtype)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)


ORTHOGONALIZERS = ("newton_schulz", "svd")


def _dist_info(process_group) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(process_group), dist.get_world_size(process_group)
    return 0, 1


def orthogonalize(matrices: list[torch.Tensor], *, steps: int = 5, dtype: torch.dtype = torch.bfloat16,
                  split_across_ranks: bool = True, process_group=None, method: str = "newton_schulz"
                  ) -> list[torch.Tensor]:
    """newton_schulz5 (or, `method="svd"`, the exact svd_orthogonalize) of every matrix, batched by shape; under DDP
    each rank orthogonalizes the matrices it owns.

    Every rank must call this with the same list (same shapes, same order), as DDP ranks do with the averaged
    gradients. The work is planned once per shapes and world (optim/ns_plan.py: whole matrices by cost, a matrix
    split over a team of ranks when whole ones cannot balance); each rank runs its share of a shape bucket, then one
    asynchronous all-gather per bucket exchanges the results in the Newton-Schulz dtype (exactly representable there,
    so nothing is lost) while the next bucket computes (optim/ns_exchange.py). Returns new tensors in input order.
    """
    if method not in ORTHOGONALIZERS:
        raise ValueError(f"orthogonalize: method must be one of {ORTHOGONALIZERS}, got {method!r}")

    def run(stack):
        return svd_orthogonalize(stack) if method == "svd" else newton_schulz5(stack, steps, dtype)

    _, world = _dist_info(process_group) if split_across_ranks else (0, 1)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(matrices):
        buckets[(tuple(m.shape), m.dtype, m.device)].append(i)
    out: list[torch.Tensor | None] = [None] * len(matrices)
    if world == 1 or not matrices:
        for idx in buckets.values():
            result = run(torch.stack([matrices[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = result[j]
        return out  # type: ignore[return-value]
    from .ns_exchange import orthogonalize_planned  # it imports this module's coefficients

    wire = matrices[0].dtype if method == "svd" else dtype  # exact results travel in the matrices' dtype
    return orthogonalize_planned(matrices, run, wire=wire, steps=steps, ns_dtype=dtype, split=method != "svd",
                                 process_group=process_group)
