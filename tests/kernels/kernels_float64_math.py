"""Float64 versions of the kernel formulas, written element-wise from docs/kernels.md (independent of kernels/)."""
from __future__ import annotations

import math

import torch


def norm64(tensors) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def clip64(n: float, rule: str, gamma=None, delta=0.0, beta=0.0) -> float:
    if not math.isfinite(n):
        return math.nan
    if rule == "none":
        return 1.0
    if n == 0:  # no step, as the delta-GClip reference
        return 0.0
    if rule == "gclip":
        return min(1.0, gamma / n)
    if rule == "dgclip":
        return min(1.0, max(delta, gamma / n))
    return 1.0 / (n + beta)


def clipped_sgd64(p, g, m, n, *, lr, rule, gamma=None, delta=0.0, beta=0.0, momentum=0.0, nesterov=False,
                  weight_decay=0.0, weight_decay_mode="decoupled"):
    """Returns (new p, new m) as float64 tensors."""
    c = clip64(n, rule, gamma, delta, beta)
    p, g = p.double(), g.double()
    if weight_decay_mode == "coupled":
        g = g + weight_decay * p
    g = c * g
    if momentum > 0:
        m = momentum * m.double() + g
        u = g + momentum * m if nesterov else m
    else:
        u = g
    if weight_decay_mode == "decoupled":
        p = p * (1 - lr * weight_decay) - lr * u
    else:
        p = p - lr * u
    return p, m


def inner64(ds, dirs, radii, params=None) -> float:
    total = 0.0
    for i, (d, v, r) in enumerate(zip(ds, dirs, radii)):
        x = params[i].double() if params is not None else torch.zeros_like(d, dtype=torch.float64)
        total += float((d.double() * (x - r * v.double())).sum())
    return total


def scion_update64(p, v, r, *, lr, scale, constrained):
    p, v = p.double(), v.double()
    return (1 - lr * scale) * p + lr * scale * r * v if constrained else p + lr * scale * r * v
