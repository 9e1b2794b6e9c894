"""torch's AdamW update with our stats, on-device non-finite skip, optional global-norm clipping, name-keyed state.

Decoupled weight decay Adam (Loshchilov & Hutter 2019, Algorithm 2), as torch.optim.AdamW computes it:
    p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
Each group runs torch's fused kernel where it is safe (a fused-capable device, contiguous floating tensors; the
`fused` flag: None = auto, True = require, False = never) and `adamw_foreach_` otherwise. Both paths skip a step
with a non-finite gradient on the device (the fused kernel through its `found_inf` input, as GradScaler uses it),
and both take GradScaler's `grad_scale` / `found_inf` (`_step_supports_amp_scaling`). `max_grad_norm` (None: off)
scales the gradients by min(1, max_grad_norm / (||g|| + 1e-6)), torch's clip_grad_norm_, with the norm the step
computes anyway; stats()["grad_norm"] is the pre-clip (and unscaled) norm.
"""
from __future__ import annotations

import torch
from torch.optim.adam import adam as torch_adam
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from .base import (
    OptimizerStatsMixin,
    groups_with_grads,
    run_closure,
)
from .settings import (
    OptimizerSetting,
    check_backend,
    check_betas,
    check_lr,
    check_max_grad_norm,
    check_range,
    clip_coefficient,
)
from .sharding import local_list


def fused_supported(tensors: list[torch.Tensor]) -> bool:
    """Can torch's fused AdamW kernel update these tensors? (device, floating dtype, contiguous: torch's fused CPU
    kernel writes outside a non-contiguous view.)"""
    devices = _get_fused_kernels_supported_devices()
    return all(t.device.type in devices and t.is_floating_point() and t.is_contiguous() for t in tensors)


def adamw_foreach_(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1: float, beta2: float, eps: float,
                   weight_decay: float, maximize: bool, ok: torch.Tensor, grad_factor: torch.Tensor | None = None
                   ) -> None:
    """One AdamW step (module doc) with foreach ops; g = grad * grad_factor (unscale and clip). Where `ok` (0-dim
    bool) is false nothing changes: moments, step counts and parameters stay as they were, decided on the device.
    `lr` is a float or a 1-element tensor; the step counts are device tensors."""
    dtype = torch.promote_types(params[0].dtype, torch.float32)  # scalars in fp32, or fp64 for fp64 parameters
    okf = ok.to(dtype)
    factor = okf if grad_factor is None else torch.where(ok, grad_factor.to(dtype), 0.0)
    if maximize:
        factor = -factor
    g = [torch.where(ok, grad, 0.0) for grad in grads]  # where, not multiply: NaN * 0 is NaN
    torch._foreach_mul_(g, factor)
    torch._foreach_add_(steps, okf)
    torch._foreach_mul_(exp_avgs, 1.0 + (beta1 - 1.0) * okf)  # beta, or 1 on a skipped step
    torch._foreach_add_(exp_avgs, torch._foreach_mul(g, 1.0 - beta1))
    torch._foreach_mul_(exp_avg_sqs, 1.0 + (beta2 - 1.0) * okf)
    torch._foreach_addcmul_(exp_avg_sqs, g, g, value=1.0 - beta2)
    t = [s.to(dtype).clamp_min(1.0) for s in steps]
    bc1 = torch._foreach_pow(beta1, t)
    bc2 = torch._foreach_pow(beta2, t)
    lr_ok = (lr.to(okf) * okf if isinstance(lr, torch.Tensor) else lr * okf).reshape(())
    step_sizes = [lr_ok / (1.0 - b) for b in bc1]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [torch.sqrt(1.0 - b) for b in bc2])
    torch._foreach_add_(denom, eps)
    if weight_decay:
        torch._foreach_mul_(params, 1.0 - lr_ok * weight_decay)
    update = torch._foreach_div(exp_avgs, denom)
    torch._foreach_mul_(update, step_sizes)
    torch._foreach_sub_(params, update)


class AdamW(OptimizerStatsMixin, torch.optim.AdamW):
    """AdamW plus `stats()` (grad_norm, skipped_steps), the non-finite skip and `max_grad_norm` clipping.

    Our defaults differ from torch's: betas (0.9, 0.95) and weight_decay 0 (torch: (0.9, 0.999), 0.01); lr defaults to
    1e-3 as torch's. torch flags: `maximize`, `foreach` and `fused` (None = auto) are honoured; `capturable` is accepted
    (state lives on the device either way); `amsgrad` and `differentiable` are refused."""

    _SETTINGS = ("max_grad_norm", "backend")
    _MUST_MATCH = ("max_grad_norm", "amsgrad", "decoupled_weight_decay")
    _RUNTIME = ("backend", "fused", "foreach", "capturable", "differentiable")
    max_grad_norm = OptimizerSetting()
    backend = OptimizerSetting()

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, *, maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False,
                 max_grad_norm: float | None = None, backend: str = "auto"):
        if amsgrad:
            raise ValueError("AdamW: amsgrad=True is not supported")
        if differentiable:
            raise ValueError("AdamW: differentiable=True is not supported: the step runs under torch.no_grad()")
        if fused and foreach:
            raise ValueError("AdamW: fused=True and foreach=True exclude each other")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=False,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=False, fused=fused,
                        decoupled_weight_decay=True, max_grad_norm=max_grad_norm, backend=backend)
        torch.optim.Optimizer.__init__(self, params, defaults)  # torch.optim.Adam's checks are _check_group's
        self._step_supports_amp_scaling = True  # GradScaler hands us grad_scale / found_inf on every path

    def _check_group(self, group: dict, where: str) -> None:
        check_lr(group["lr"], where)
        check_betas(group, where)
        check_range(group["eps"], "eps", 0, float("inf"), where)
        check_range(group["weight_decay"], "weight_decay", 0, float("inf"), where)
        check_max_grad_norm(group["max_grad_norm"], where)
        if group["fused"] and not fused_supported(group["params"]):
            bad = [(tuple(p.shape), str(p.dtype), p.device.type) for p in group["params"] if not fused_supported([p])]
            devices = ", ".join(_get_fused_kernels_supported_devices())
            raise ValueError(f"{where}: fused=True needs contiguous floating tensors on {devices}, got {bad}; "
                             f"use fused=None (auto)")
        check_backend(group, where)

    def __setstate__(self, state):
        super().__setstate__(state)
        self._step_supports_amp_scaling = True

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # torch keeps a non-fused "step" on the host; ours lives by its parameter
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    state["step"] = torch.as_tensor(state["step"]).to(device=p.device, dtype=torch.float32)

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        work = groups_with_grads(self.param_groups)
        if not work:
            return loss
        self._begin_step()
        grad_scale = getattr(self, "grad_scale", None)  # set by GradScaler.step around this call
        found_inf = getattr(self, "found_inf", None)
        grad_norm, ok = self._global_grad_norm(work)
        if grad_scale is not None:
            grad_norm = grad_norm / grad_scale.to(grad_norm)
        if found_inf is not None:
            ok = ok & (found_inf.to(ok.device) == 0)
        inv_factor = None if grad_scale is None else grad_scale.to(grad_norm)  # the kernels divide by it
        if self.max_grad_norm is not None:
            coef = torch.where(ok, clip_coefficient(grad_norm, self.max_grad_norm), 1.0)
            inv_factor = 1.0 / coef if inv_factor is None else inv_factor / coef
        for group, params, grads in work:
            states = [self._state(p) for p in params]
            lists = [local_list([s[k] for s in states]) for k in ("exp_avg", "exp_avg_sq", "step")]
            params, grads = local_list(params), local_list(grads)  # elementwise: local shards under FSDP
            beta1, beta2 = group["betas"]
            hyper = dict(lr=self.lr_of(group), beta1=beta1, beta2=beta2, eps=group["eps"],
                         weight_decay=group["weight_decay"], maximize=group["maximize"])
            # the fused kernel reads grad_scale in fp32: fp64 parameters with a scale or clip keep it in fp64 below
            exact = inv_factor is None or all(p.dtype != torch.float64 for p in params)
            if group["fused"] is not False and exact and fused_supported(params + grads):
                torch_adam(params, grads, lists[0], lists[1], [], lists[2], fused=True, amsgrad=False,
                           grad_scale=None if inv_factor is None else inv_factor.float(),
                           found_inf=(~ok).to(torch.float32), decoupled_weight_decay=True, **hyper)
            elif group["foreach"] is False:
                for i, (p, g) in enumerate(zip(params, grads)):
                    adamw_foreach_([p], [g], *[[lst[i]] for lst in lists], ok=ok,
                                   grad_factor=None if inv_factor is None else 1.0 / inv_factor, **hyper)
            else:
                adamw_foreach_(params, grads, *lists, ok=ok,
                               grad_factor=None if inv_factor is None else 1.0 / inv_factor, **hyper)
        self._record(ok, grad_norm=grad_norm)
        return loss
