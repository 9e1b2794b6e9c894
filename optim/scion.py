"""Scion and Clipped Scion: layer-wise LMO steps on an averaged gradient, optionally clipped by the dual norm.

Per step k (Pethick et al., NeurIPS 2025, Algorithms 3-4; Scion: Pethick et al., ICML 2025, Algorithm 3):
    d_l = (1 - alpha) d_l + alpha g_l                        (eq. 1.2; d_0 = 0, so d_1 = alpha g_1)
    s_l = lmo_l(d_l)                                         (optim/lmo.py; points against d_l)
    unconstrained:  G = -sum_l r_l <d_l, s_l>                (eq. 4.3, the product-norm dual norm of d)
                    x_l <- x_l + lr * eta * r_l s_l            (eq. 4.6 with lr = gamma*rho, see below)
    constrained:    G = sum_l <d_l, x_l - r_l s_l>            (the Frank-Wolfe gap, eq. 4.7)
                    x_l <- (1 - lr eta) x_l + lr eta r_l s_l     (eq. 4.9, Variant 2 with the 4 absorbed into rho)
    eta = min(1, G / rho) for Clipped Scion (clamped at 0), eta = 1 for Scion (rho -> 0).

`lr` is the code's step, lr = gamma*rho of the paper (brief section 5). G is computed from the same LMO outputs as the
update (no extra SVD), once, from the DDP-averaged gradient, so rho means the same at every world size;
`rho_scaling="reference"` reproduces the public code, which sums G over the ranks (its rho = 600 on 4 GPUs is 150 here).
Spectral LMOs of all groups run batched by shape and split across DDP ranks (optim/newton_schulz.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

import kernels

from .base import OptimizerStatsMixin, finite_flag, params_with_grads, run_closure
from .lmo import NORMS, LMOSpec, lmo_many

_NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


class ClippedScion(OptimizerStatsMixin, torch.optim.Optimizer):
    """(Unconstrained) Clipped Scion; `rho=None` gives (Unconstrained) Scion. Groups carry `norm` and `radius`."""

    def __init__(self, params, lr: float, rho: float | None, alpha: float = 0.1, constrained: bool = False, *,
                 norm: str = "spectral", radius: float = 1.0, normalized: bool | None = None, transpose: bool = False,
                 rho_scaling: str = "world_size_free", ns_steps: int = 5, ns_dtype: str | torch.dtype = "bfloat16",
                 split_across_ranks: bool = True, process_group=None, backend: str = "auto"):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if rho is not None and not rho > 0:
            raise ValueError(f"rho must be > 0 (or None for Scion), got {rho}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if rho_scaling not in ("world_size_free", "reference"):
            raise ValueError(f"rho_scaling must be 'world_size_free' or 'reference', got {rho_scaling!r}")
        defaults = dict(lr=lr, alpha=alpha, norm=norm, radius=radius, normalized=normalized, transpose=transpose)
        super().__init__(params, defaults)
        for i, group in enumerate(self.param_groups):
            if group["norm"] not in NORMS:
                raise ValueError(f"param group {i}: norm must be one of {NORMS}, got {group['norm']!r}")
            if not group["radius"] > 0:
                raise ValueError(f"param group {i}: radius must be > 0, got {group['radius']}")
            if not 0 < group["alpha"] <= 1:
                raise ValueError(f"param group {i}: alpha must be in (0, 1], got {group['alpha']}")
        self.rho = rho
        self.constrained = constrained
        self.rho_scaling = rho_scaling
        self.ns_steps = ns_steps
        self.ns_dtype = _NS_DTYPES[ns_dtype] if isinstance(ns_dtype, str) else ns_dtype
        self.split_across_ranks = split_across_ranks
        self.process_group = process_group
        self.backend = backend

    def _effective_rho(self) -> float:
        if self.rho_scaling == "reference" and dist.is_available() and dist.is_initialized():
            return self.rho / dist.get_world_size(self.process_group)
        return self.rho

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        params, grads, ds, specs, radii, lrs, alphas = [], [], [], [], [], [], []
        for group in self.param_groups:
            ps, gs = params_with_grads(group)
            spec = LMOSpec(group["norm"], group["normalized"], group["transpose"])
            for p, g in zip(ps, gs):
                params.append(p)
                grads.append(g)
                ds.append(self.state_buffer(p, "momentum_buffer"))
                specs.append(spec)
                radii.append(float(group["radius"]))
                lrs.append(float(group["lr"]))
                alphas.append(float(group["alpha"]))
        if not params:
            return loss
        grad_norm = kernels.global_norm(grads, backend=self.backend)
        ok = finite_flag(grad_norm)
        for alpha in sorted(set(alphas)):  # a non-finite gradient norm leaves every d untouched
            idx = [i for i, a in enumerate(alphas) if a == alpha]
            kernels.lerp_momentum_([ds[i] for i in idx], [grads[i] for i in idx], alpha, backend=self.backend,
                                   skip_if_nonfinite=grad_norm)
        directions = lmo_many(ds, specs, ns_steps=self.ns_steps, ns_dtype=self.ns_dtype,
                              split_across_ranks=self.split_across_ranks, process_group=self.process_group)
        nan = torch.full_like(grad_norm, float("nan"))
        stats = {"grad_norm": grad_norm}
        if self.rho is None:
            scale = torch.ones_like(grad_norm)
        else:
            gap = kernels.scion_inner_product(ds, directions, radii, params if self.constrained else None,
                                              backend=self.backend)
            gap = gap.clamp(min=0)  # Newton-Schulz / bf16 can make it slightly negative; never step uphill
            scale = torch.clamp(gap / self._effective_rho(), max=1.0)
            stats["dual_norm"] = gap
        scale = torch.where(ok, scale, nan)
        stats["clip_factor"] = scale
        for lr in sorted(set(lrs)):
            idx = [i for i, v in enumerate(lrs) if v == lr]
            kernels.scion_update_([params[i] for i in idx], [directions[i] for i in idx], [radii[i] for i in idx],
                                  lr=lr, scale=scale, constrained=self.constrained, backend=self.backend)
        self._record(ok, **stats)
        return loss


class Scion(ClippedScion):
    """(Unconstrained) Scion: x_l <- x_l + lr r_l lmo_l(d_l), or (1 - lr) x_l + lr r_l lmo_l(d_l) when constrained."""

    def __init__(self, params, lr: float, alpha: float = 0.1, constrained: bool = False, **kwargs):
        super().__init__(params, lr, None, alpha=alpha, constrained=constrained, **kwargs)
