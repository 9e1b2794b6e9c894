"""The SGD family as one composition: a clip factor of the gradient norm times a (momentum) SGD direction.

    c = clip_factor(||g||)          none: 1                         (SGD)
                                    gclip: min(1, gamma/||g||)       (Zhang et al. 2020, eq. 5)
                                    dgclip: min(1, max(delta, gamma/||g||))   (Tucat et al. 2025, Def. 2)
                                    normalized: 1/(||g|| + beta)     (Zhang et al. 2020, eq. 6)
    g' = c (g + wd p) [coupled, the default] or c g [decoupled];  m = mu m + g';  u = g' + mu m (Nesterov) or m
    p -= lr u  [coupled];  p = p (1 - lr wd) - lr u  [decoupled]

||g|| is the L2 norm over **all** parameters of the optimizer (`norm_scope="global"`, the papers' definition; under
DDP the gradients are already averaged), per parameter group (`"group"`, as the delta-GClip code's per-group loop),
or per tensor (`"tensor"`, the per-tensor delta-GClip variant `deltaGClip_c` of Anirbit-AI/Delta-GClip). Momentum is
off by default as in the papers; with momentum the gradient is clipped *before* it enters the buffer
(clip-then-average). Weight decay is coupled by default: added to the gradient after the norm is taken and scaled by
c, as in the delta-GClip reference code, and inside the momentum buffer, so rule "none" is exactly
torch.optim.SGD(momentum, weight_decay, nesterov). `"decoupled"` is the AdamW-style alternative. ||g|| = 0 gives
c = 0 for the clipped rules (no step, as the delta-GClip reference; rule "none" keeps torch SGD's decay).
The math runs in `kernels.clipped_sgd_update_` (torch reference on CPU, Triton on CUDA).
"""
from __future__ import annotations

import torch

from .base import (
    OptimizerStatsMixin,
    groups_with_grads,
    run_closure,
)
from .kernel_api import kernels
from .sharding import global_norms, local_list
from .settings import OptimizerSetting, check_backend, check_lr, check_range, check_torch_flags


NORM_SCOPES = ("global", "group", "tensor")


class ClippedSGD(OptimizerStatsMixin, torch.optim.Optimizer):
    """SGD whose step is scaled by a clip factor of the gradient norm; `rule` in none|gclip|dgclip|normalized."""

    _SETTINGS = ("norm_scope", "backend")
    _MUST_MATCH = ("rule", "weight_decay_mode", "norm_scope")
    norm_scope = OptimizerSetting()
    backend = OptimizerSetting()

    def __init__(self, params, lr: float, *, rule: str = "none", gamma: float | None = None, delta: float = 0.0,
                 beta: float = 0.0, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 weight_decay_mode: str = "coupled", norm_scope: str = "global", backend: str = "auto",
                 **torch_flags):
        check_torch_flags(type(self).__name__, **torch_flags)
        defaults = dict(lr=lr, rule=rule, gamma=gamma, delta=delta, beta=beta, momentum=momentum, nesterov=nesterov,
                        weight_decay=weight_decay, weight_decay_mode=weight_decay_mode, norm_scope=norm_scope,
                        backend=backend)
        super().__init__(params, defaults)

    def _check_group(self, group: dict, where: str) -> None:
        check_lr(group["lr"], where)
        rule, gamma = group["rule"], group["gamma"]
        if rule not in kernels.CLIP_RULES:
            raise ValueError(f"{where}: rule must be one of {kernels.CLIP_RULES}, got {rule!r}")
        if rule in ("gclip", "dgclip") and not (isinstance(gamma, (int, float)) and gamma > 0):
            raise ValueError(f"{where}: rule {rule!r} needs gamma > 0, got {gamma}")
        check_range(group["delta"], "delta", 0, 1, where)
        check_range(group["beta"], "beta", 0, float("inf"), where)
        check_range(group["momentum"], "momentum", 0, 1, where, high_open=True)
        check_range(group["weight_decay"], "weight_decay", 0, float("inf"), where)
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError(f"{where}: nesterov=True needs momentum > 0")
        if group["weight_decay_mode"] not in kernels.WEIGHT_DECAY_MODES:
            raise ValueError(f"{where}: weight_decay_mode must be one of {kernels.WEIGHT_DECAY_MODES}, "
                             f"got {group['weight_decay_mode']!r}")
        if group["norm_scope"] not in NORM_SCOPES:
            raise ValueError(f"{where}: norm_scope must be one of {NORM_SCOPES}, got {group['norm_scope']!r}")
        check_backend(group, where)

    def _check_norm_in_backward(self) -> None:
        if self.norm_scope != "global":
            raise ValueError(f"optim.norm_in_backward=true takes the global gradient norm during backward; "
                             f"optim.norm_scope={self.norm_scope!r} needs per-{self.norm_scope} norms read in step(): "
                             f"use optim.norm_scope='global' or optim.norm_in_backward=false")

    def _clip_kwargs(self, group: dict) -> dict:
        return dict(rule=group["rule"], gamma=group["gamma"], delta=group["delta"], beta=group["beta"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        work = groups_with_grads(self.param_groups)
        if not work:
            return loss
        self._begin_step()
        global_norm, ok = self._global_grad_norm(work)
        nan = torch.full_like(global_norm, float("nan"))
        factors = []  # per group / per tensor clip factors (their mean is reported)
        for group, params, grads in work:
            momenta = None
            if group["momentum"] > 0:
                momenta = [self.state_buffer(p, "momentum_buffer") for p in params]
            if self.norm_scope == "global":
                units = [(params, grads, momenta, global_norm)]
            elif self.norm_scope == "group":
                norm = global_norms([grads], backend=self.backend, plans=self.chunk_plans)[0]
                units = [(params, grads, momenta, norm)]
            else:  # sharded tensors: the per-tensor norms of the group in one all-reduce
                norms = global_norms([[g] for g in grads], backend=self.backend)
                units = [([p], [g], None if momenta is None else [m], norms[i])
                         for i, (p, g, m) in enumerate(zip(params, grads, momenta or [None] * len(params)))]
            for ps, gs, ms, norm in units:
                if self.norm_scope != "global":  # a non-finite gradient anywhere skips every group
                    norm = torch.where(ok, norm, nan)
                    factors.append(kernels.clip_factor(norm, **self._clip_kwargs(group)))
                kernels.clipped_sgd_update_(  # elementwise: on the local shards when sharded (FSDP)
                    local_list(ps), local_list(gs), local_list(ms), norm, lr=self.lr_of(group),
                    momentum=group["momentum"],
                    nesterov=group["nesterov"], weight_decay=float(group["weight_decay"]),
                    weight_decay_mode=group["weight_decay_mode"], backend=self.backend,
                    plans=self.chunk_plans if len(units) == 1 else None,  # per-tensor units: the shared cache
                    **self._clip_kwargs(group))
        factor = kernels.clip_factor(global_norm, **self._clip_kwargs(work[0][0])) if self.norm_scope == "global" \
            else torch.stack(factors).mean()
        self._record(ok, grad_norm=global_norm, clip_factor=factor)
        return loss


class SGD(ClippedSGD):
    """SGD with (Nesterov) momentum through the same kernel (rule "none")."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 **kwargs):
        super().__init__(params, lr, rule="none", momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         **kwargs)


class GClip(ClippedSGD):
    """Clipped GD, step lr*min(1, gamma/||g||) (Zhang et al., ICLR 2020, eq. 5)."""

    def __init__(self, params, lr: float, gamma: float, momentum: float = 0.0, weight_decay: float = 0.0, **kwargs):
        super().__init__(params, lr, rule="gclip", gamma=gamma, momentum=momentum, weight_decay=weight_decay, **kwargs)


class DeltaGClip(ClippedSGD):
    """delta-regularized GClip, step h = lr*min(1, max(delta, gamma/||g||)) in [lr*delta, lr] (Tucat et al. 2025)."""

    def __init__(self, params, lr: float, gamma: float, delta: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(params, lr, rule="dgclip", gamma=gamma, delta=delta, momentum=momentum,
                         weight_decay=weight_decay, **kwargs)


class NormalizedSGD(ClippedSGD):
    """Normalized GD, step lr/(||g|| + beta) (Zhang et al., ICLR 2020, eq. 6)."""

    def __init__(self, params, lr: float, beta: float = 1e-8, momentum: float = 0.0, weight_decay: float = 0.0,
                 **kwargs):
        super().__init__(params, lr, rule="normalized", beta=beta, momentum=momentum, weight_decay=weight_decay,
                         **kwargs)
