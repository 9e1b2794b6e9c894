"""Linear minimization oracles (LMOs) of the layer norms used by Scion / Clipped Scion, with their primal and dual norms.

lmo(d) = argmin_{||s|| <= 1} <d, s> points *against* d (Pethick et al. 2025, eq. 1.1), so -<d, lmo(d)> = ||d||_* >= 0.
The layer norms carry the dimension scalings of Scion (Pethick et al., ICML 2025, Tables 2-4), written for the
"math" matrix M of shape (d_out, d_in); `transpose=True` says the stored tensor is (d_in, d_out), as an embedding
table (vocab, d) is. `normalized` selects the hidden-layer scaling (default per norm, see DEFAULT_NORMALIZED):

| norm      | ||M||                                   | lmo(M)                                    |
|-----------|-----------------------------------------|-------------------------------------------|
| spectral  | ||M||_2 / s,  s = sqrt(d_out/d_in)       | -s * UV^T  (UV^T by Newton-Schulz)         |
|           |   (normalized=False: s = sqrt(d_out))   |                                           |
| sign      | d_in * max|M_ij|  (False: max|M_ij|)    | -sign(M) / d_in                            |
| colnorm   | max_j ||M_:j||_2 / sqrt(d_out) * c       | col_j -> -sqrt(d_out)/c * M_:j/||M_:j||     |
|           |   c = d_in if normalized else 1         |                                           |
| rownorm   | max_i ||M_i:||_2 * c,  c = sqrt(d_in)    | row_i -> -M_i:/(c ||M_i:||)                |
|           |   if normalized else 1                  |                                           |
| bias_rms  | ||b||_RMS = ||b||_2/sqrt(n)              | -b / ||b||_RMS                             |
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .newton_schulz import orthogonalize

NORMS = ("spectral", "sign", "colnorm", "rownorm", "bias_rms")
DEFAULT_NORMALIZED = {"spectral": True, "sign": True, "colnorm": False, "rownorm": True, "bias_rms": True}
_EPS = 1e-8


@dataclass(frozen=True)
class LMOSpec:
    """Which norm ball a tensor's update lives in: the norm, its scaling flag, and the stored orientation."""
    norm: str
    normalized: bool | None = None
    transpose: bool = False

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid norms: {', '.join(NORMS)}")

    @property
    def is_normalized(self) -> bool:
        return DEFAULT_NORMALIZED[self.norm] if self.normalized is None else self.normalized


def _math_view(t: torch.Tensor, spec: LMOSpec) -> torch.Tensor:
    if spec.norm == "bias_rms":
        return t
    if t.ndim != 2:
        raise ValueError(f"norm {spec.norm!r} needs a 2-D tensor, got shape {tuple(t.shape)}; use 'bias_rms' for vectors")
    return t.mT if spec.transpose else t


def spectral_scale(shape: tuple[int, ...], spec: LMOSpec) -> float:
    """The factor s in lmo = -s * UV^T for a stored tensor of `shape`."""
    d_out, d_in = (shape[1], shape[0]) if spec.transpose else (shape[0], shape[1])
    return math.sqrt(d_out / d_in) if spec.is_normalized else math.sqrt(d_out)


def _sign_scale(d: torch.Tensor, spec: LMOSpec) -> float:
    """The factor of sign(d) in the sign LMO: -1/d_in (normalized) or -1."""
    return -1.0 / (_math_view(d, spec).size(1) if spec.is_normalized else 1)


def lmo(d: torch.Tensor, spec: LMOSpec, *, orthogonalized: torch.Tensor | None = None, ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.bfloat16, method: str = "newton_schulz",
        out: torch.Tensor | None = None) -> torch.Tensor:
    """lmo(d) of one tensor (d's dtype), written into ``out`` when given (a buffer of d's shape and dtype that the
    caller keeps across steps), else a new tensor. For spectral, pass `orthogonalized` (≈UV^T of d) to reuse a
    batch; `method="svd"` uses the exact UV^T (optim/newton_schulz.py)."""
    M = _math_view(d, spec)
    if out is None:
        out = torch.empty_like(d, memory_format=torch.contiguous_format)
    if spec.norm == "spectral":
        O = orthogonalized if orthogonalized is not None else orthogonalize(
            [d], steps=ns_steps, dtype=ns_dtype, split_across_ranks=False, method=method)[0]
        return torch.mul(O, -spectral_scale(tuple(d.shape), spec), out=out)
    if spec.norm == "sign":
        return torch.mul(torch.sign(d), _sign_scale(d, spec), out=out)
    if spec.norm == "bias_rms":
        rms = d.norm() / math.sqrt(d.numel())
        return torch.div(d, -(rms + _EPS), out=out)  # = -d / (rms + eps) exactly: IEEE division is sign-symmetric
    if spec.norm == "colnorm":
        d_out, d_in = M.shape
        denom = M.norm(dim=0, keepdim=True) / math.sqrt(d_out) * (d_in if spec.is_normalized else 1) + _EPS
    else:  # rownorm
        d_in = M.size(1)
        denom = M.norm(dim=1, keepdim=True) * (math.sqrt(d_in) if spec.is_normalized else 1) + _EPS
    torch.div(M, -denom, out=out.mT if spec.transpose else out)
    return out


def lmo_many(ds: list[torch.Tensor], specs: list[LMOSpec], *, ns_steps: int = 5,
             ns_dtype: torch.dtype = torch.bfloat16, split_across_ranks: bool = True,
             process_group=None, method: str = "newton_schulz", out: list[torch.Tensor] | None = None
             ) -> list[torch.Tensor]:
    """lmo of every tensor, bitwise :func:`lmo` of each: all spectral ones go through one batched (and rank-split)
    orthogonalization call, and the elementwise parts (the spectral scaling, sign, bias_rms) run as one foreach op
    per stage over all tensors of that norm; colnorm/rownorm reduce along an axis per tensor. ``out`` (one buffer
    per tensor, kept by the caller) receives the results, so their addresses stay put from step to step (the
    optimizer's chunk tables over them are built once)."""
    spectral = [i for i, s in enumerate(specs) if s.norm == "spectral"]
    for i in spectral:
        _math_view(ds[i], specs[i])
    ortho = orthogonalize([ds[i] for i in spectral], steps=ns_steps, dtype=ns_dtype,
                          split_across_ranks=split_across_ranks, process_group=process_group, method=method)
    outs = list(out) if out is not None else [torch.empty_like(d, memory_format=torch.contiguous_format) for d in ds]
    # the elementwise LMOs as one foreach op per stage over every tensor of a kind (the same arithmetic, op for op,
    # as lmo() on each tensor: bitwise its result); orthogonalize's results are fresh tensors, scaled in place
    if spectral:
        torch._foreach_mul_(ortho, [-spectral_scale(tuple(ds[i].shape), specs[i]) for i in spectral])
        torch._foreach_copy_([outs[i] for i in spectral], ortho)
    sign = [i for i, s in enumerate(specs) if s.norm == "sign"]
    for i in sign:
        torch.sign(ds[i], out=outs[i])
    if sign:
        torch._foreach_mul_([outs[i] for i in sign], [_sign_scale(ds[i], specs[i]) for i in sign])
    rms = [i for i, s in enumerate(specs) if s.norm == "bias_rms"]
    if rms:
        vectors = [ds[i] for i in rms]
        denom = torch._foreach_div(torch._foreach_norm(vectors), [math.sqrt(v.numel()) for v in vectors])
        torch._foreach_add_(denom, _EPS)
        torch._foreach_neg_(denom)
        torch._foreach_copy_([outs[i] for i in rms], torch._foreach_div(vectors, denom))
    for i, s in enumerate(specs):  # colnorm / rownorm: one reduction along an axis per tensor
        if s.norm in ("colnorm", "rownorm"):
            lmo(ds[i], s, out=outs[i])
    return outs


SPECTRAL_NORM_SQUARINGS = 12  # 2^12 = 4096 power-iteration steps: float64 to ~1e-15, fp32 to ~1e-7 (tests)


def spectral_norm_estimate(M: torch.Tensor, squarings: int = SPECTRAL_NORM_SQUARINGS) -> torch.Tensor:
    """||M||_2 of the last two dims of M (batched), without SVD and without a host sync; fp32 or fp64 math.

    Power iteration on the Gram matrix G = A A^T (A = M / max|M_ij| in its wide orientation, m <= n), run 2^J
    steps by J repeated squarings P <- P P / ||P P||_F from P = G: then P ~ G^(2^J) = sum_i s_i^(2^(J+1)) u_i u_i^T,
    and its largest column u = G^(2^J) e_k is the power iterate from the best unit start e_k (its weight on the top
    singular vector is >= 1/sqrt(m)). The Rayleigh quotient ||A^T u|| / ||u|| <= s_1 is taken elementwise (no
    low-precision matmul in it). A flat top of the spectrum (NS directions) is where plain power iteration from a
    fixed start is slow: 20 steps underestimate by 1-2% at 768 x 768. Cost: J + 1 m x m (x n) matmuls per matrix.
    """
    A = M.to(torch.promote_types(M.dtype, torch.float32))
    if A.size(-2) > A.size(-1):
        A = A.mT
    peak = A.abs().amax(dim=(-2, -1), keepdim=True)
    A = A / peak.clamp(min=torch.finfo(A.dtype).tiny)  # entries in [-1, 1] (or all 0): no overflow below
    P = A @ A.mT
    for _ in range(squarings):
        P = P @ P
        P = P / torch.linalg.vector_norm(P, dim=(-2, -1), keepdim=True).clamp(min=torch.finfo(A.dtype).tiny)
    best = torch.linalg.vector_norm(P, dim=-2).argmax(dim=-1)  # the column with the largest norm, per matrix
    u = torch.gather(P, -1, best[..., None, None].expand(*P.shape[:-1], 1))  # (..., m, 1)
    Atu = (A * u).sum(dim=-2)  # A^T u, elementwise
    quotient = torch.linalg.vector_norm(Atu, dim=-1) / torch.linalg.vector_norm(u, dim=(-2, -1)).clamp(
        min=torch.finfo(A.dtype).tiny)
    return quotient * peak[..., 0, 0]


def layer_norm(w: torch.Tensor, spec: LMOSpec, *, exact: bool = True) -> torch.Tensor:
    """The primal layer norm ||w|| whose unit ball lmo minimizes over (spectral: exactly by SVD, or with
    `exact=False` by :func:`spectral_norm_estimate`, which does not synchronize the host on CUDA)."""
    M = _math_view(w, spec)
    if spec.norm == "spectral":
        sigma = torch.linalg.matrix_norm(M, ord=2) if exact else spectral_norm_estimate(M)
        return sigma / spectral_scale(tuple(w.shape), spec)
    if spec.norm == "sign":
        return M.abs().max() * (M.size(1) if spec.is_normalized else 1)
    if spec.norm == "colnorm":
        d_out, d_in = M.shape
        return M.norm(dim=0).max() / math.sqrt(d_out) * (d_in if spec.is_normalized else 1)
    if spec.norm == "rownorm":
        return M.norm(dim=1).max() * (math.sqrt(M.size(1)) if spec.is_normalized else 1)
    return w.norm() / math.sqrt(w.numel())


def layer_norms(ws: list[torch.Tensor], specs: list[LMOSpec], *, exact: bool = True) -> list[torch.Tensor]:
    """:func:`layer_norm` of every tensor; with `exact=False` the spectral ones are estimated batched by shape and
    dtype (one :func:`spectral_norm_estimate` per bucket)."""
    out = [None if (not exact and spec.norm == "spectral") else layer_norm(w, spec) for w, spec in zip(ws, specs)]
    buckets: dict[tuple, list[int]] = {}
    for i, o in enumerate(out):
        if o is None:
            buckets.setdefault((tuple(ws[i].shape), ws[i].dtype, ws[i].device), []).append(i)
    for idx in buckets.values():
        sigma = spectral_norm_estimate(torch.stack([ws[i] for i in idx]))  # the norm is transpose-invariant
        for j, i in enumerate(idx):
            out[i] = sigma[j] / spectral_scale(tuple(ws[i].shape), specs[i])
    return out  # type: ignore[return-value]


def dual_norm(d: torch.Tensor, spec: LMOSpec) -> torch.Tensor:
    """||d||_* = max_{||s||<=1} <d, s> = -<d, lmo(d)> (exact; spectral via the nuclear norm)."""
    M = _math_view(d, spec)
    if spec.norm == "spectral":
        return torch.linalg.matrix_norm(M, ord="nuc") * spectral_scale(tuple(d.shape), spec)
    if spec.norm == "sign":
        return M.abs().sum() / (M.size(1) if spec.is_normalized else 1)
    if spec.norm == "colnorm":
        d_out, d_in = M.shape
        return M.norm(dim=0).sum() * math.sqrt(d_out) / (d_in if spec.is_normalized else 1)
    if spec.norm == "rownorm":
        return M.norm(dim=1).sum() / (math.sqrt(M.size(1)) if spec.is_normalized else 1)
    return d.norm() * math.sqrt(d.numel())
