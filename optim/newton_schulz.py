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
    """
    if G.ndim < 2:
        raise ValueError(f"newton_schulz5 needs a matrix (or a batch of matrices), got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
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


def split_by_cost(shapes: list[tuple[int, ...]], world: int) -> list[int]:
    """An owner rank per matrix: shape buckets in order, each bucket's matrices dealt to the least-loaded ranks
    (cost m*n*min(m, n) per matrix), no padding. Deterministic, so every rank computes the same split."""
    load = [0] * world
    owners = [0] * len(shapes)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, shape in enumerate(shapes):
        buckets[shape].append(i)
    for shape, idx in buckets.items():
        cost = shape[-2] * shape[-1] * min(shape[-2:])
        for i in idx:
            r = min(range(world), key=lambda r: (load[r], r))
            owners[i] = r
            load[r] += cost
    return owners


def orthogonalize(matrices: list[torch.Tensor], *, steps: int = 5, dtype: torch.dtype = torch.bfloat16,
                  split_across_ranks: bool = True, process_group=None, method: str = "newton_schulz"
                  ) -> list[torch.Tensor]:
    """newton_schulz5 (or, `method="svd"`, the exact svd_orthogonalize) of every matrix, batched by shape; under DDP
    each rank orthogonalizes the matrices it owns.

    Every rank must call this with the same list (same shapes, same order), as DDP ranks do with the averaged
    gradients. Matrices are dealt to ranks by cost (:func:`split_by_cost`, no zero padding); each rank runs its share
    of a shape bucket as one batch, then broadcasts the results in the Newton-Schulz dtype (the results are exactly
    representable there, so nothing is lost) asynchronously, so one bucket's exchange overlaps the next bucket's
    Newton-Schulz. Per step each rank receives the bytes of the matrices it does not own, once. Returns new tensors
    in the input order.
    """
    if method not in ORTHOGONALIZERS:
        raise ValueError(f"orthogonalize: method must be one of {ORTHOGONALIZERS}, got {method!r}")

    def run(stack):
        return svd_orthogonalize(stack) if method == "svd" else newton_schulz5(stack, steps, dtype)

    rank, world = _dist_info(process_group) if split_across_ranks else (0, 1)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(matrices):
        buckets[(tuple(m.shape), m.dtype, m.device)].append(i)
    out: list[torch.Tensor | None] = [None] * len(matrices)
    if world == 1:
        for idx in buckets.values():
            result = run(torch.stack([matrices[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = result[j]
        return out  # type: ignore[return-value]
    owners = split_by_cost([tuple(m.shape) for m in matrices], world)
    pending = []
    for (shape, out_dtype, device), idx in buckets.items():
        for r in range(world):
            mine = [i for i in idx if owners[i] == r]
            if not mine:
                continue
            wire = out_dtype if method == "svd" else dtype  # exact results travel in the matrices' dtype
            if r == rank:
                buf = run(torch.stack([matrices[i] for i in mine])).to(wire).contiguous()
            else:
                buf = torch.empty((len(mine), *shape), dtype=wire, device=device)
            work = dist.broadcast(buf, src=dist.get_global_rank(process_group, r) if process_group is not None else r,
                                  group=process_group, async_op=True)
            pending.append((work, buf, mine, out_dtype))
    for work, buf, mine, out_dtype in pending:
        work.wait()
        for j, i in enumerate(mine):
            out[i] = buf[j].to(out_dtype)
    return out  # type: ignore[return-value]
