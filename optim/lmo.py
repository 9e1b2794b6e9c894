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
        c = M.size(1) if spec.is_normalized else 1
        return torch.mul(torch.sign(d), -1.0 / c, out=out)
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
    """lmo of every tensor; all spectral ones go through one batched (and rank-split) orthogonalization call.
    ``out`` (one buffer per tensor, kept by the caller) receives the results, so their addresses stay put from
    step to step (the optimizer's chunk tables over them are built once)."""
    spectral = [i for i, s in enumerate(specs) if s.norm == "spectral"]
    for i in spectral:
        _math_view(ds[i], specs[i])
    ortho = orthogonalize([ds[i] for i in spectral], steps=ns_steps, dtype=ns_dtype,
                          split_across_ranks=split_across_ranks, process_group=process_group, method=method)
    by_index = dict(zip(spectral, ortho))
    outs = out if out is not None else [None] * len(ds)
    return [lmo(d, s, orthogonalized=by_index.get(i), out=o) for i, (d, s, o) in enumerate(zip(ds, specs, outs))]


def spectral_norm_estimate(M: torch.Tensor, iters: int) -> torch.Tensor:
    """||M||_2 from below by `iters` power iterations on M^T M (start: the all-ones vector), fp32 or fp64 math.

    No SVD, no host sync; the Rayleigh-quotient error is small both with a spectral gap and with a flat spectrum.
    """
    A = M.to(torch.promote_types(M.dtype, torch.float32))
    u = torch.ones(A.size(1), dtype=A.dtype, device=A.device)
    for _ in range(iters):
        u = A.mT @ (A @ u)
        u = u / (u.norm() + 1e-30)
    return (A @ u).norm()


def layer_norm(w: torch.Tensor, spec: LMOSpec, *, power_iters: int | None = None) -> torch.Tensor:
    """The primal layer norm ||w|| whose unit ball lmo minimizes over (exact, spectral via SVD; with `power_iters`
    the spectral norm is the power-iteration estimate, which does not synchronize the host on CUDA)."""
    M = _math_view(w, spec)
    if spec.norm == "spectral":
        sigma = torch.linalg.matrix_norm(M, ord=2) if power_iters is None else spectral_norm_estimate(M, power_iters)
        return sigma / spectral_scale(tuple(w.shape), spec)
    if spec.norm == "sign":
        return M.abs().max() * (M.size(1) if spec.is_normalized else 1)
    if spec.norm == "colnorm":
        d_out, d_in = M.shape
        return M.norm(dim=0).max() / math.sqrt(d_out) * (d_in if spec.is_normalized else 1)
    if spec.norm == "rownorm":
        return M.norm(dim=1).max() * (math.sqrt(M.size(1)) if spec.is_normalized else 1)
    return w.norm() / math.sqrt(w.numel())


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
