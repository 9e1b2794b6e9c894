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
        grad_norm, ok = self._global_grad_norm(work)
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
        apply_updates_(targets, ortho, okf, self.lr_of)

    def _adamw_step(self, group, params, grads, ok, okf) -> None:
        """torch.optim.AdamW's arithmetic, op for op, as foreach ops over the group (one launch per op on CUDA)."""
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
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        ms, vs = local_list([s["exp_avg"] for s in states]), local_list([s["exp_avg_sq"] for s in states])
        params = local_list(params)
        # One foreach add, not `state["step"].add_(okf)` per parameter: under torch.compile's inductor backend that
        # per-tensor form makes the 0-dim counters created in the graph share one storage, so each counted every
        # parameter's step (docs/optimizers.md, "Known issue: inductor aliases 0-dim tensors"). A list of okf, not
        # okf itself: the tensor-scalar overload reads the scalar on the host on CPU.
        torch._foreach_add_(steps, [okf] * len(steps))
        torch._foreach_mul_(ms, b1)  # m = b1 m + g (1 - b1)
        torch._foreach_add_(ms, torch._foreach_mul(grads, 1 - b1))
        torch._foreach_mul_(vs, b2)  # v = b2 v + g g (1 - b2)
        g2 = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g2, 1 - b2)
        torch._foreach_add_(vs, g2)
        t = torch._foreach_clamp_min([s.to(dtype) for s in steps], 1)  # a step saved in fp32 counts the same
        bc1 = torch._foreach_pow(beta1, t)  # 1 - beta^t, as -(beta^t) + 1 (the same rounding)
        torch._foreach_neg_(bc1)
        torch._foreach_add_(bc1, 1)
        bc2 = torch._foreach_pow(beta2, t)
        torch._foreach_neg_(bc2)
        torch._foreach_add_(bc2, 1)
        denom = torch._foreach_sqrt(vs)  # sqrt(v) / sqrt(1 - beta2^t) + eps
        torch._foreach_div_(denom, torch._foreach_sqrt(bc2))
        torch._foreach_add_(denom, eps)
        torch._foreach_mul_(params, 1 - lr * wd * okf)
        step = torch._foreach_div(ms, denom)  # p += m / denom * (-lr okf / (1 - beta1^t))
        torch._foreach_mul_(step, torch._foreach_div([-lr * okf] * len(bc1), bc1))
        torch._foreach_add_(params, step)


def apply_updates_(targets, ortho, okf, lr_of) -> None:
    """p = p (1 - lr wd okf) + o (-lr scale okf) for every (group, p, scale) target and its orthogonalized update o,
    as foreach ops per group (the same arithmetic as one matrix at a time; o is a temporary and is scaled in place)."""
    by_group: dict[int, tuple] = {}
    for (group, p, scale), o in zip(targets, ortho):
        by_group.setdefault(id(group), (group, [], [], []))
        _, ps, os_, scales = by_group[id(group)]
        ps.append(p)
        os_.append(o)
        scales.append(scale)
    for group, ps, os_, scales in by_group.values():
        lr = lr_of(group)  # a float, or a 1-element tensor used on the device
        torch._foreach_mul_(ps, 1 - lr * float(group["weight_decay"]) * okf)
        if isinstance(lr, torch.Tensor):
            torch._foreach_mul_(os_, scales)
            torch._foreach_mul_(os_, -lr * okf)
        else:  # o * fp32(-lr scale) * okf: the bits of o * (-lr scale okf), okf being 1 or 0
            torch._foreach_mul_(os_, [-lr * s for s in scales])
            torch._foreach_mul_(os_, okf)
        torch._foreach_add_(ps, os_)
