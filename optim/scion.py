"""Scion and Clipped Scion: layer-wise LMO steps on an averaged gradient, optionally clipped by the dual norm.

Per step k (Pethick et al., NeurIPS 2025, Algorithms 3-4; Scion: Pethick et al., ICML 2025, Algorithm 3):
    d_l = (1 - alpha) d_l + alpha g_l                        (eq. 1.2; d_0 = 0, so d_1 = alpha g_1)
    s_l = lmo_l(d_l)                                         (optim/lmo.py; points against d_l)
    unconstrained:  G = -sum_l r_l <d_l, s_l>                (eq. 4.3, the product-norm dual norm of d)
                    x_l <- x_l + lr * eta * r_l s_l            (eq. 4.6 with lr = gamma*rho, see below)
    constrained:    G = sum_l <d_l, x_l - r_l s_l>            (the Frank-Wolfe gap, eq. 4.7)
                    x_l <- (1 - lr eta) x_l + lr eta r_l s_l     (eq. 4.9, Variant 2 with the 4 absorbed into rho)
    eta = min(1, G / rho) for Clipped Scion, eta = 1 for Scion (rho -> 0). A negative gap gives eta < 0, as in the
    reference code (`clamp_gap=True`: eta >= 0); `variant=1` is S3CG Variant 1 (eq. 4.8a, see variant1_factor).

A layer l is a parameter, or a piece of one: a group's `split_sizes` (optim/splits.py) makes q, k and v of a fused
qkv weight three layers, each with its own LMO, shape scaling and term of G.

`lr` is the code's step, lr = gamma*rho of the paper (docs/optimizers.md, rho units). G is computed from the same LMO outputs as the
update (no extra SVD), once, from the DDP-averaged gradient, so rho means the same at every world size;
`rho_scaling="reference"` reproduces the public code, which sums G over the ranks (its rho = 600 on 4 GPUs is 150 here).
Spectral LMOs of all groups run batched by shape and split across DDP ranks (optim/newton_schulz.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .base import OptimizerStatsMixin, finite_flag, params_with_grads, run_closure
from .kernel_api import kernels
from .lmo import NORMS, LMOSpec, layer_norms, lmo_many
from .lmo_sharded import lmo_many_sharded
from .sharding import local_list, shard_group, sum_across
from .settings import (
    DtypeSetting,
    OptimizerSetting,
    check_backend,
    check_lr,
    check_orthogonalization,
    check_range,
    check_torch_flags,
    dtype_name,
    lr_buckets,
)
from .splits import check_group_splits, sizes_by_param, split_pieces


class ClippedScion(OptimizerStatsMixin, torch.optim.Optimizer):
    """(Unconstrained) Clipped Scion; `rho=None` gives (Unconstrained) Scion. Groups carry `norm` and `radius`."""

    _SETTINGS = ("rho", "constrained", "rho_scaling", "ns_steps", "ns_dtype", "split_across_ranks", "backend",
                 "spectral_lmo", "clamp_gap", "variant")
    _MUST_MATCH = ("rho", "constrained", "rho_scaling", "ns_steps", "ns_dtype", "spectral_lmo", "clamp_gap",
                   "variant", "norm", "normalized", "transpose", "split_sizes")
    _RUNTIME = ("backend", "split_across_ranks")
    rho = OptimizerSetting()
    constrained = OptimizerSetting()
    rho_scaling = OptimizerSetting()
    ns_steps = OptimizerSetting()
    ns_dtype = DtypeSetting()
    split_across_ranks = OptimizerSetting()
    backend = OptimizerSetting()
    spectral_lmo = OptimizerSetting()
    clamp_gap = OptimizerSetting()
    variant = OptimizerSetting()

    def __init__(self, params, lr: float, rho: float | None, alpha: float = 0.1, constrained: bool = False, *,
                 norm: str = "spectral", radius: float = 1.0, normalized: bool | None = None, transpose: bool = False,
                 rho_scaling: str = "world_size_free", ns_steps: int = 5, ns_dtype: str | torch.dtype = "bfloat16",
                 split_across_ranks: bool = True, process_group=None, backend: str = "auto",
                 spectral_lmo: str = "newton_schulz", clamp_gap: bool = False, variant: int = 2, **torch_flags):
        check_torch_flags(type(self).__name__, **torch_flags)
        defaults = dict(lr=lr, alpha=alpha, norm=norm, radius=radius, normalized=normalized, transpose=transpose,
                        rho=rho, constrained=constrained, rho_scaling=rho_scaling, ns_steps=ns_steps,
                        ns_dtype=dtype_name(ns_dtype), split_across_ranks=split_across_ranks, backend=backend,
                        spectral_lmo=spectral_lmo, clamp_gap=clamp_gap, variant=variant)
        super().__init__(params, defaults)
        self.process_group = process_group

    def _check_group(self, group: dict, where: str) -> None:
        check_lr(group["lr"], where)
        rho = group["rho"]
        if rho is not None and not (isinstance(rho, (int, float)) and rho > 0):
            raise ValueError(f"{where}: rho must be > 0 (or None for Scion), got {rho}")
        check_range(group["alpha"], "alpha", 0, 1, where, low_open=True)
        if group["norm"] not in NORMS:
            raise ValueError(f"{where}: norm must be one of {NORMS}, got {group['norm']!r}")
        if not (isinstance(group["radius"], (int, float)) and group["radius"] > 0):
            raise ValueError(f"{where}: radius must be > 0, got {group['radius']}")
        if group["norm"] != "bias_rms":
            shapes = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
            if shapes:
                raise ValueError(f"{where}: norm {group['norm']!r} needs 2-D tensors, got shapes {shapes}; "
                                 f"use norm='bias_rms' for vectors")
        check_group_splits(group, where)
        check_orthogonalization(group, where)
        check_backend(group, where)
        if group["variant"] not in (1, 2):
            raise ValueError(f"{where}: variant must be 1 or 2 (S3CG short step, eq. 4.8a/b), "
                             f"got {group['variant']!r}")
        if group["rho_scaling"] not in ("world_size_free", "reference"):
            raise ValueError(f"{where}: rho_scaling must be 'world_size_free' or 'reference', "
                             f"got {group['rho_scaling']!r}")
        for key in ("constrained", "clamp_gap"):
            if not isinstance(group[key], bool):
                raise ValueError(f"{where}: {key} must be True or False, got {group[key]!r}")

    def _effective_rho(self) -> float:
        if self.rho_scaling == "reference" and dist.is_available() and dist.is_initialized():
            return self.rho / dist.get_world_size(self.process_group)
        return self.rho

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        params, grads, ds, specs, radii, lrs, alphas, splits = [], [], [], [], [], [], [], []
        self._begin_step()
        for group in self.param_groups:
            ps, gs = params_with_grads(group)
            spec = LMOSpec(group["norm"], group["normalized"], group["transpose"])
            sizes = sizes_by_param(group)
            for p, g in zip(ps, gs):
                params.append(p)
                grads.append(g)
                ds.append(self.state_buffer(p, "momentum_buffer"))
                specs.append(spec)
                radii.append(float(group["radius"]))
                lrs.append(self.lr_of(group))
                alphas.append(float(group["alpha"]))
                splits.append(sizes.get(p))
        if not params:
            return loss
        grad_norm = self._grad_norm(grads)
        ok = finite_flag(grad_norm)
        shards = shard_group(params)  # FSDP: kernels on local shards, reductions joined by one all-reduce each
        for alpha in sorted(set(alphas)):  # a non-finite gradient norm leaves every d untouched
            idx = [i for i, a in enumerate(alphas) if a == alpha]
            kernels.lerp_momentum_(local_list([ds[i] for i in idx]), local_list([grads[i] for i in idx]), alpha,
                                   backend=self.backend, skip_if_nonfinite=grad_norm, plans=self.chunk_plans)
        if shards is not None:
            if self.constrained and self.variant == 1:
                raise ValueError("s3cg_variant=1 is not supported on sharded (FSDP) parameters; use variant 2")
            # whole tensors at their owner ranks (split pieces handled there); this rank's rows come back
            directions = lmo_many_sharded(ds, specs, splits, ns_steps=self.ns_steps, ns_dtype=self.ns_dtype,
                                          method=self.spectral_lmo)
            params, ds = local_list(params), local_list(ds)
        else:
            # every piece of a split parameter (q, k, v of a fused qkv) is a layer of its own from here on
            # the directions land in buffers kept across steps (scratch_buffer): their chunk tables are built once
            layers = [(x, d, o, spec, r, lr)
                      for p, d_full, spec, r, lr, sizes in zip(params, ds, specs, radii, lrs, splits)
                      for x, d, o in zip(split_pieces(p, sizes), split_pieces(d_full, sizes),
                                         split_pieces(self.scratch_buffer(p, "direction"), sizes))]
            params, ds, outs, specs, radii, lrs = (list(column) for column in zip(*layers))
            directions = lmo_many(ds, specs, ns_steps=self.ns_steps, ns_dtype=self.ns_dtype,
                                  split_across_ranks=self.split_across_ranks, process_group=self.process_group,
                                  method=self.spectral_lmo, out=outs)
        nan = torch.full_like(grad_norm, float("nan"))
        stats = {"grad_norm": grad_norm}
        if self.rho is None:
            scale = torch.ones_like(grad_norm)
        else:
            gap = kernels.scion_inner_product(ds, directions, radii, params if self.constrained else None,
                                              backend=self.backend, plans=self.chunk_plans)
            if shards is not None:
                gap = sum_across(gap.reshape(1), shards)[0]
            ratio = gap / self._effective_rho()
            if self.constrained and self.variant == 1:
                ratio = variant1_factor(ratio, params, directions, specs, radii, self.spectral_lmo)
            # A negative gap (x outside the ball) gives eta < 0 as in the reference code: the step x - lr eta v
            # still lowers the linear model <d, x>. clamp_gap=True freezes such steps instead.
            scale = torch.clamp(ratio, min=0.0 if self.clamp_gap else None, max=1.0)
            stats["dual_norm"] = gap
        scale = torch.where(ok, scale, nan)
        stats["clip_factor"] = scale
        for lr, idx in lr_buckets(lrs):  # a tensor lr joins the device-side scale: the update is lr*scale*r*s
            lr, lr_scale = (1.0, scale * lr.reshape(()).to(scale)) if isinstance(lr, torch.Tensor) else (lr, scale)
            kernels.scion_update_([params[i] for i in idx], [directions[i] for i in idx], [radii[i] for i in idx],
                                  lr=lr, scale=lr_scale, constrained=self.constrained, backend=self.backend,
                                  plans=self.chunk_plans)
        self._record(ok, **stats)
        return loss


def variant1_factor(ratio: torch.Tensor, params, directions, specs, radii, spectral_lmo: str) -> torch.Tensor:
    """S3CG Variant 1 (eq. 4.8a) in code units: G/rho * 4/||v||^2, ||v|| = max_l ||x_l - r_l lmo_l||_l / r_l.

    The code's rho is Variant 2's 4*rho_paper (docs/optimizers.md), so Variant 1's min(rho_paper, G/||v||^2) is
    lr min(1, 4 G / (rho ||v||^2)); ||v|| <= 2 inside the ball, so Variant 1 steps at least as far as Variant 2.
    Spectral norms by repeated-squaring power iteration, batched by shape (optim.lmo.spectral_norm_estimate: no host
    sync; exact SVD when spectral_lmo="svd"). ||v|| = 0 means v = 0: factor 0.
    """
    vs = [x - r * s for x, s, r in zip(params, directions, radii)]
    norms = [n / r for n, r in zip(layer_norms(vs, specs, exact=spectral_lmo == "svd"), radii)]
    v_norm = torch.stack([n.to(ratio.dtype) for n in norms]).amax()
    return torch.where(v_norm > 0, ratio * 4.0 / v_norm.square().clamp(min=1e-30), torch.zeros_like(ratio))


class Scion(ClippedScion):
    """(Unconstrained) Scion: x_l <- x_l + lr r_l lmo_l(d_l), or (1 - lr) x_l + lr r_l lmo_l(d_l) when constrained."""

    def __init__(self, params, lr: float, alpha: float = 0.1, constrained: bool = False, **kwargs):
        super().__init__(params, lr, None, alpha=alpha, constrained=constrained, **kwargs)
