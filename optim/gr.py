"""Gradient regularization by finite differences, with the GR warmups (Zhao, Zhang & Hu, ICML 2024).

    L_GR = L + lambda ||grad L||                                 (eq. 1; the norm is not squared)
    g = (1 - alpha) g1 + alpha g2,  g1 = grad L(theta),  g2 = grad L(theta + r g1/||g1||),  lambda = alpha r   (eq. 4)

`normalized_g1=False` (our default) mixes g1 itself: eq. 4, the exact gradient of L_GR for a quadratic. True mixes
g1/||g1||, the reference code's default (`norm_perturbations`). Warmups over `warmup_steps` optimizer steps with
s(t) = min(1, t/T_w): "r" ramps r_t = r s(t); "lambda" ramps alpha_t = alpha s(t); "zero" uses plain gradients
(one pass) for t < T_w, full GR afterwards.

The trainer's `backward()` closure zeroes the grads and runs forward/backward over all micro-batches of the *same*
global batch (DDP-averaged), so g1 is the accumulated full-batch, all-rank gradient and one global perturbation is
used (the code's `sync_perturbations=True`, our default): the result does not depend on the world size or the
micro-batching. `sync_perturbations=False` is the reference code's default: each rank perturbs with its own local g1
(`backward(sync=False)`, no gradient all-reduce), mixes its local g1 and g2, and the mixed gradients are averaged
over the ranks once (like SAM's m-sharpness; the result depends on the world size).

Both passes see the same dropout masks, as in the reference (one RNG key for both): the CPU and CUDA RNG states are
saved before the first pass, restored for the second, and afterwards set to where the first pass left them, so the
RNG stream continues exactly as after one plain step.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from .config import GRConfig
from .sharding import global_norms


class GradientRegularization:
    """Training-step option: `compute(params, backward, step)` leaves the GR gradient in `.grad`, returns the loss."""

    def __init__(self, cfg: GRConfig, total_steps: int, backend: str = "auto"):
        cfg.validate()
        self.cfg = cfg
        self.total_steps = total_steps
        self.backend = backend
        self.enabled = cfg.enabled and cfg.r > 0 and cfg.alpha > 0

    def warmup_factor(self, step: int) -> float:
        """s(t) = min(1, t / warmup_steps); 1 without a warmup."""
        steps = self.cfg.warmup_steps
        return 1.0 if steps == 0 else min(1.0, step / steps)

    def schedule(self, step: int) -> tuple[float, float, bool]:
        """(r_t, alpha_t, use_gr) at optimizer step `step` (0-based); use_gr False means one plain pass."""
        cfg = self.cfg
        if not self.enabled or (cfg.warmup == "zero" and step < cfg.warmup_steps):
            return 0.0, 0.0, False
        s = self.warmup_factor(step)
        r_t = cfg.r * s if cfg.warmup == "r" else cfg.r
        alpha_t = cfg.alpha * s if cfg.warmup == "lambda" else cfg.alpha
        return r_t, alpha_t, True

    def compute(self, params: list[torch.Tensor], backward: Callable[..., torch.Tensor], step: int) -> torch.Tensor:
        r_t, alpha_t, use_gr = self.schedule(step)
        local = use_gr and not self.cfg.sync_perturbations and dist.is_available() and dist.is_initialized()
        rng_before = rng_state() if use_gr else None
        loss = backward(sync=False) if local else backward()
        if not use_gr:
            return loss
        params = [p for p in params if p.grad is not None]
        if not params:
            return loss
        g1 = [p.grad.detach().clone() for p in params]
        inv_norm = 1.0 / (global_norms([g1], backend=self.backend)[0] + self.cfg.eps)
        if r_t > 0 and alpha_t > 0:
            with torch.no_grad():
                saved = [p.detach().clone() for p in params]
                torch._foreach_add_(params, torch._foreach_mul(g1, inv_norm * r_t))
            rng_after = rng_state()
            set_rng_state(rng_before)  # the same dropout masks as the first pass
            backward(sync=False) if local else backward()  # at theta' = theta + r_t g1/||g1||; grads hold g2
            set_rng_state(rng_after)  # where one plain pass leaves the RNG
            with torch.no_grad():
                torch._foreach_copy_(params, saved)
            grads = [p.grad for p in params]
        else:  # r_t = 0 gives theta' = theta, so g2 = g1 without a second pass
            grads = [p.grad for p in params]
            torch._foreach_copy_(grads, g1)
        if self.cfg.normalized_g1:
            torch._foreach_mul_(g1, inv_norm)
        with torch.no_grad():
            torch._foreach_lerp_(grads, g1, 1.0 - alpha_t)  # g2 + (1-alpha)(g1 - g2) = (1-alpha) g1 + alpha g2
            if local:  # per-rank perturbations: average the mixed gradients once
                for g in grads:
                    dist.all_reduce(g)
                torch._foreach_div_(grads, float(dist.get_world_size()))
        return loss


def rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The CPU RNG state and, once CUDA is initialized, every CUDA device's (host-side copies, no device sync)."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)


def set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
