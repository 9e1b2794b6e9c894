"""Clip factors of the global gradient norm: one scalar that multiplies the whole gradient.

* ``"none"``:       c = 1
* ``"gclip"``:      c = min(1, γ/n)                 (GClip, Tucat et al. 2025, arXiv:2404.08624, Def. 1)
* ``"dgclip"``:     c = min(1, max(δ, γ/n))         (δ-GClip, same paper, Def. 2; the step lies in [lr·δ, lr])
* ``"normalized"``: c = 1/(n + β)                   (normalized GD; n + β = 0 gives 1: the gradient is 0)

n = 0 gives 0 for gclip/dgclip/normalized: no step, as the δ-GClip reference (step size 0 when ‖g‖ = 0), so
coupled weight decay does not move the weights either; rule none stays 1 (torch SGD decays them). A non-finite n gives NaN for every rule, so a
caller that multiplies by c cannot silently apply a poisoned step; the update kernels write nothing then.
Everything stays on the device: no host synchronisation.
"""
from __future__ import annotations

import math

import torch

CLIP_RULES = ("none", "gclip", "dgclip", "normalized")


def validate_clip_args(rule: str, gamma: float | None, delta: float, beta: float) -> None:
    """Raise ValueError naming the argument at fault."""
    if rule not in CLIP_RULES:
        raise ValueError(f"clip rule must be one of {CLIP_RULES}, got {rule!r}")
    if rule in ("gclip", "dgclip"):
        if gamma is None or not isinstance(gamma, (int, float)) or not (gamma > 0 and math.isfinite(gamma)):
            raise ValueError(f"clip rule {rule!r} needs a finite gamma > 0, got {gamma!r}")
    if rule == "dgclip" and not (isinstance(delta, (int, float)) and 0.0 <= delta <= 1.0):
        raise ValueError(f"clip rule 'dgclip' needs 0 <= delta <= 1, got {delta!r}")
    if rule == "normalized" and not (isinstance(beta, (int, float)) and beta >= 0.0 and math.isfinite(beta)):
        raise ValueError(f"clip rule 'normalized' needs a finite beta >= 0, got {beta!r}")


def clip_factor(norm: torch.Tensor, rule: str, *, gamma: float | None = None, delta: float = 0.0,
                beta: float = 0.0) -> torch.Tensor:
    """0-dim fp32 (fp64 for an fp64 norm) clip factor for the global norm ``norm`` (a 0-dim device tensor); see module doc."""
    validate_clip_args(rule, gamma, delta, beta)
    if not isinstance(norm, torch.Tensor) or norm.numel() != 1:
        raise ValueError(f"clip_factor: norm must be a 0-dim tensor, got {type(norm).__name__} "
                         f"{getattr(norm, 'shape', '')}")
    n = norm.reshape(()).to(torch.promote_types(norm.dtype, torch.float32))
    if rule == "none":
        c = torch.ones_like(n)
    elif rule == "gclip":
        c = torch.clamp(gamma / n, max=1.0)  # n = 0: γ/0 = inf -> 1, zeroed below
    elif rule == "dgclip":
        c = torch.clamp(gamma / n, min=delta, max=1.0)  # min(1, max(δ, γ/n))
    else:
        c = 1.0 / torch.where(n > 0, n + beta, torch.ones_like(n))
    if rule != "none":
        c = torch.where(n > 0, c, torch.zeros_like(n))
    return torch.where(torch.isfinite(n), c, torch.full_like(n, float("nan")))
