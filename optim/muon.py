"""Muon baseline: Nesterov momentum + Newton-Schulz orthogonalization for hidden matrices, AdamW for the rest.

Muon groups (`use_muon=True`, 2-D parameters; Jordan et al. 2024, as in modded-nanogpt):
    m = mu m + g;  u = g + mu m (Nesterov) or m;  p = p (1 - lr wd) - lr * sqrt(max(1, d_out/d_in)) * NS5(u)
A group's `split_sizes` (optim/splits.py) orthogonalizes the pieces of a fused parameter (q, k, v) separately, each
with its own d_out/d_in, as modded-nanogpt does with its separate q, k, v.
AdamW groups (`use_muon=False`): decoupled-weight-decay Adam (Loshchilov & Hutter 2019), as torch.optim.AdamW.
Every quantity stays on the device: the Adam step counter is a device tensor and a non-finite gradient turns every
update into an exact no-op through device-side factors (no host sync).
"""
from __future__ import annotations

import math

import torch

from .base import (
    OptimizerStatsMixin,
    global_grad_norm,
    groups_with_grads,
    run_closure,
    zero_where_not_,
)
from .lmo_sharded import orthogonalize_sharded
from .newton_schulz import orthogonalize
from .sharding import local, local_list, shard_group
from .settings import (
    DtypeSetting,
    OptimizerSetting,
    check_backend,
    check_betas,
    check_lr,
    check_max_grad_norm,
    check_range,
    check_orthogonalization,
    check_torch_flags,
    clip_coefficient,
    dtype_name,
)
from .splits import check_group_splits, sizes_by_param, split_pieces


def muon_scale(shape: torch.Size) -> float:
    """Muon's shape factor sqrt(max(1, d_out/d_in)) of one (piece of a) matrix."""
    return math.sqrt(max(1.0, shape[0] / shape[1]))


class Muon(OptimizerStatsMixin, torch.optim.Optimizer):
    """Muon for groups with `use_muon=True` (default), AdamW (betas, eps) for groups with `use_muon=False`.

    `max_grad_norm` (None: off) scales every gradient by min(1, max_grad_norm / (||g|| + 1e-6)) before the update,
    torch's clip_grad_norm_ with the global norm the step computes anyway; stats()["grad_norm"] stays the pre-clip
    norm."""

    _SETTINGS = ("ns_steps", "ns_dtype", "split_across_ranks", "max_grad_norm", "backend", "spectral_lmo")
    _MUST_MATCH = ("use_muon", "ns_steps", "ns_dtype", "max_grad_norm", "spectral_lmo", "split_sizes")
    _RUNTIME = ("backend", "split_across_ranks")
    ns_steps = OptimizerSetting()
    ns_dtype = DtypeSetting()
    split_across_ranks = OptimizerSetting()
    max_grad_norm = OptimizerSetting()
    backend = OptimizerSetting()
    spectral_lmo = OptimizerSetting()

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8, *,
                 use_muon: bool = True, ns_steps: int = 5, ns_dtype: str | torch.dtype = "bfloat16",
                 split_across_ranks: bool = True, max_grad_norm: float | None = None, process_group=None,
                 backend: str = "auto", spectral_lmo: str = "newton_schulz", **torch_flags):
        check_torch_flags(type(self).__name__, **torch_flags)
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, betas=tuple(betas),
                        eps=eps, use_muon=use_muon, ns_steps=ns_steps, ns_dtype=dtype_name(ns_dtype),
                        split_across_ranks=split_across_ranks, max_grad_norm=max_grad_norm, backend=backend,
                        spectral_lmo=spectral_lmo)
        super().__init__(params, defaults)
        self.process_group = process_group

    def _check_group(self, group: dict, where: str) -> None:
        check_lr(group["lr"], where)
        check_range(group["momentum"], "momentum", 0, 1, where, high_open=True)
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError(f"{where}: nesterov=True needs momentum > 0")
        check_range(group["weight_decay"], "weight_decay", 0, float("inf"), where)
        check_betas(group, where)
        check_range(group["eps"], "eps", 0, float("inf"), where, low_open=True)
        check_max_grad_norm(group["max_grad_norm"], where)
        if group["use_muon"]:
            shapes = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
            if shapes:
                raise ValueError(f"{where}: Muon orthogonalizes 2-D matrices only, got shapes {shapes}; put other "
                                 f"tensors in a group with use_muon=False")
        check_group_splits(group, where)
        check_orthogonalization(group, where)
        check_backend(group, where)

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        work = groups_with_grads(self.param_groups)
        if not work:
            return loss
        self._begin_step()
        grad_norm, ok = global_grad_norm(work, self.backend, self.chunk_plans, self.replicas)
        okf = ok.to(grad_norm.dtype)  # float64 when the gradients are
        work = [(group, params, local_list(grads)) for group, params, grads in work]  # FSDP: this rank's rows
        for _, _, grads in work:
            zero_where_not_(grads, ok)
        if self.max_grad_norm is not None:  # clip_grad_norm_ with the norm computed above (grad_norm stays pre-clip)
            coef = torch.where(ok, clip_coefficient(grad_norm, self.max_grad_norm), 1.0)
            torch._foreach_mul_([g for _, _, grads in work for g in grads], coef)
        self._muon_step([w for w in work if w[0]["use_muon"]], ok, okf)
        for group, params, grads in work:
            if not group["use_muon"]:
                self._adamw_step(group, params, grads, ok, okf)
        self._record(ok, grad_norm=grad_norm)
        return loss

    def _muon_step(self, work, ok, okf) -> None:
        if not work:
            return
        sharded = shard_group([p for _, params, _ in work for p in params]) is not None
        updates, targets, whole_params, whole_splits = [], [], [], []
        for group, params, grads in work:
            mu = group["momentum"]
            mu_eff = 1.0 + (mu - 1.0) * okf  # mu, or 1 on a skipped step; okf's dtype (fp64 for fp64 grads)
            bufs = local_list([self.state_buffer(p, "momentum_buffer") for p in params])
            torch._foreach_mul_(bufs, mu_eff)
            torch._foreach_add_(bufs, grads)
            full = torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else list(bufs)
            sizes = sizes_by_param(group)
            for p, u in zip(params, full):  # each piece of a split parameter (q, k, v) is its own matrix
                if sharded:  # pieces are cut from the whole matrix at its owner rank
                    updates.append(u)
                    targets.append((group, local(p), 1.0))  # the owner applied each piece's scale
                    whole_params.append(p)
                    whole_splits.append(sizes.get(p))
                else:
                    updates += split_pieces(u, sizes.get(p))
                    targets += [(group, piece, muon_scale(piece.shape)) for piece in split_pieces(p, sizes.get(p))]
        if sharded:
            ortho = orthogonalize_sharded(whole_params, updates, whole_splits, steps=self.ns_steps,
                                          dtype=self.ns_dtype, method=self.spectral_lmo, piece_scale=muon_scale)
        else:
            ortho = orthogonalize(updates, steps=self.ns_steps, dtype=self.ns_dtype,
                                  split_across_ranks=self.split_across_ranks, process_group=self.process_group,
                                  method=self.spectral_lmo)
        for (group, p, shape_scale), o in zip(targets, ortho):
            lr = self.lr_of(group)  # a float, or a 1-element tensor used on the device
            p.mul_(1 - lr * float(group["weight_decay"]) * okf)
            p.add_(o * (-lr * shape_scale * okf))

    def _adamw_step(self, group, params, grads, ok, okf) -> None:
        beta1, beta2 = group["betas"]
        lr, wd, eps = self.lr_of(group), float(group["weight_decay"]), float(group["eps"])
        # scalars in the parameters' math dtype (fp32, fp64 for fp64 parameters), as torch.optim.AdamW's
        dtype = torch.promote_types(params[0].dtype, torch.float32)
        # a skipped step keeps the moments: m = 1*m + 0*0 (torch.full: a device fill, no host-to-device copy)
        b1 = torch.where(ok, torch.full((), beta1, dtype=dtype, device=ok.device), 1.0)
        b2 = torch.where(ok, torch.full((), beta2, dtype=dtype, device=ok.device), 1.0)
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=dtype, device=p.device)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        # One foreach add, not `state["step"].add_(okf)` per parameter: under torch.compile's inductor backend that
        # per-tensor form makes the 0-dim counters created in the graph share one storage, so each counted every
        # parameter's step (docs/optimizers.md, "Known issue: inductor aliases 0-dim tensors"). A list of okf, not
        # okf itself: the tensor-scalar overload reads the scalar on the host on CPU.
        steps = [self.state[p]["step"] for p in params]
        torch._foreach_add_(steps, [okf] * len(steps))
        for p, g in zip(params, grads):
            state = self.state[p]
            m, v, p = local(state["exp_avg"]), local(state["exp_avg_sq"]), local(p)
            m.mul_(b1).add_(g * (1 - b1))
            v.mul_(b2).add_(g * g * (1 - b2))
            t = state["step"].to(dtype).clamp(min=1)  # a step saved in fp32 by an older version counts the same
            bc1 = 1 - torch.pow(beta1, t)
            bc2 = 1 - torch.pow(beta2, t)
            denom = (v.sqrt() / bc2.sqrt()).add_(eps)
            p.mul_(1 - lr * wd * okf)
            p.add_(m / denom * (-lr * okf / bc1))
