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


def _dist_info(process_group) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(process_group), dist.get_world_size(process_group)
    return 0, 1


def orthogonalize(matrices: list[torch.Tensor], *, steps: int = 5, dtype: torch.dtype = torch.bfloat16,
                  split_across_ranks: bool = True, process_group=None) -> list[torch.Tensor]:
    """newton_schulz5 of every matrix, batched by shape; under DDP each rank orthogonalizes its share, then all-gather.

    Every rank must call this with the same list (same shapes, same order), as DDP ranks do with the averaged
    gradients. For a bucket of n same-shape matrices and world size W, rank r takes the contiguous slice
    [r*k, (r+1)*k) with k = ceil(n/W) (the stack is zero-padded to W*k; NS of zero is zero), so the per-matrix math is
    the same batched computation as the unsplit one. Returns new tensors in the input order.
    """
    rank, world = _dist_info(process_group) if split_across_ranks else (0, 1)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(matrices):
        buckets[(tuple(m.shape), m.dtype, m.device)].append(i)
    out: list[torch.Tensor | None] = [None] * len(matrices)
    for (shape, _, _), idx in buckets.items():
        stack = torch.stack([matrices[i] for i in idx])
        if world == 1:
            result = newton_schulz5(stack, steps, dtype)
        else:
            k = -(-len(idx) // world)
            padded = stack.new_zeros((world * k, *shape))
            padded[: len(idx)] = stack
            mine = newton_schulz5(padded[rank * k:(rank + 1) * k], steps, dtype).contiguous()
            gathered = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(gathered, mine, group=process_group)
            result = torch.cat(gathered)[: len(idx)]
        for j, i in enumerate(idx):
            out[i] = result[j]
    return out  # type: ignore[return-value]
