"""torch's AdamW (fused kernel on CUDA and CPU) with our stats, on-device non-finite skip and name-keyed state.

The skip uses the fused kernel's own `found_inf` input (as torch's GradScaler does): with a non-finite gradient the
fused step writes nothing and rolls its step counter back, all on the device.
"""
from __future__ import annotations

import torch

from .base import OptimizerStatsMixin, finite_flag, params_with_grads, run_closure
from .sharding import global_norms


class AdamW(OptimizerStatsMixin, torch.optim.AdamW):
    """torch.optim.AdamW(fused=True) plus `stats()` (grad_norm, skipped_steps) and the non-finite skip."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0, *,
                 backend: str = "auto"):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=True)
        self.backend = backend

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        grads = [g for group in self.param_groups for g in params_with_grads(group)[1]]
        if not grads:
            return loss
        grad_norm = global_norms([grads], backend=self.backend)[0]
        ok = finite_flag(grad_norm)
        self.found_inf = (~ok).to(torch.float32)
        super().step()
        del self.found_inf
        self._record(ok, grad_norm=grad_norm)
        return loss
