"""Fused clipped SGD step: clip factor from the global norm, optional momentum, weight decay.

Per element, with c = clip_factor(norm) (kernels.clip_factor):
    g' = c·g
    momentum > 0:  m = μ·m + g';   u = g' + μ·m (Nesterov) or m (heavy ball)
    otherwise:     u = g'
    decoupled:     p = p·(1 − lr·wd) − lr·u
    coupled:       p = p − lr·(u + c·wd·p)          (the δ-GClip paper's code, Koloskova et al. 2023)
For rule gclip and wd = 0 this is torch ``clip_grad_norm_`` followed by ``SGD`` (dampening 0).
If ``norm`` is non-finite nothing is written. Parameters may be fp32 or bf16; the math is fp32.
"""
from __future__ import annotations

import torch

from kernels.clip_factor import clip_factor, validate_clip_args
from kernels.dispatch import as_tensor_list, check_matching, check_python_float, resolve_backend

WEIGHT_DECAY_MODES = ("decoupled", "coupled")


def _select_(dsts: list[torch.Tensor], news: list[torch.Tensor], ok: torch.Tensor) -> None:
    """dst = new where ``ok`` (0-dim bool on the device) else dst, without reading ``ok`` on the host."""
    for dst, new in zip(dsts, news):
        dst.copy_(torch.where(ok, new, dst))


def clipped_sgd_update_torch(params, grads, momenta, norm, *, lr, rule, gamma, delta, beta, momentum, nesterov,
                             weight_decay, weight_decay_mode) -> None:
    """Reference (foreach ops in fp32 temporaries, then a device-side select so a non-finite norm writes nothing)."""
    if not params:
        return
    c = clip_factor(norm.to(params[0].device), rule, gamma=gamma, delta=delta, beta=beta)
    ok = torch.isfinite(c)
    c = torch.where(ok, c, torch.zeros_like(c))
    p32 = [p.float() for p in params]
    g_scaled = torch._foreach_mul([g.float() for g in grads], c)
    if momentum > 0:
        m_new = torch._foreach_mul([m.float() for m in momenta], momentum)
        torch._foreach_add_(m_new, g_scaled)
        u = torch._foreach_add(g_scaled, m_new, alpha=momentum) if nesterov else m_new
    else:
        u = g_scaled
    if weight_decay_mode == "decoupled":
        p_new = torch._foreach_mul(p32, 1.0 - lr * weight_decay)
        torch._foreach_add_(p_new, u, alpha=-lr)
    else:
        step = torch._foreach_mul(p32, c * weight_decay)
        torch._foreach_add_(step, u)
        p_new = torch._foreach_add(p32, step, alpha=-lr)
    _select_(params, p_new, ok)
    if momentum > 0:
        _select_(momenta, m_new, ok)


def check_update_args(params, grads, momenta, norm, *, lr, rule, gamma, delta, beta, momentum, nesterov,
                      weight_decay, weight_decay_mode, op: str):
    """Validate the arguments of clipped_sgd_update_; returns (params, grads, momenta, lr, momentum, wd)."""
    params = as_tensor_list(params, "params", op=op)
    grads = as_tensor_list(grads, "grads", op=op)
    check_matching(params, grads, "params", "grads", op=op)
    validate_clip_args(rule, gamma, delta, beta)
    lr = check_python_float(lr, "lr", op=op)
    momentum = check_python_float(momentum, "momentum", op=op)
    weight_decay = check_python_float(weight_decay, "weight_decay", op=op)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"kernels.{op}: momentum must be in [0, 1), got {momentum}")
    if nesterov and momentum == 0.0:
        raise ValueError(f"kernels.{op}: nesterov=True needs momentum > 0")
    if weight_decay < 0.0:
        raise ValueError(f"kernels.{op}: weight_decay must be >= 0, got {weight_decay}")
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"kernels.{op}: weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, "
                         f"got {weight_decay_mode!r}")
    if momentum > 0:
        if momenta is None:
            raise ValueError(f"kernels.{op}: momentum={momentum} needs momenta (a list of momentum buffers), got None")
        momenta = as_tensor_list(momenta, "momenta", op=op)
        check_matching(params, momenta, "params", "momenta", op=op)
    else:
        momenta = None
    if not isinstance(norm, torch.Tensor) or norm.numel() != 1:
        raise ValueError(f"kernels.{op}: norm must be a 0-dim tensor (from kernels.global_norm), got "
                         f"{type(norm).__name__}")
    return params, grads, momenta, lr, momentum, weight_decay


def clipped_sgd_update_(params, grads, momenta, norm, *, lr, rule, gamma=None, delta=0.0, beta=0.0, momentum=0.0,
                        nesterov=False, weight_decay=0.0, weight_decay_mode="decoupled", backend="auto") -> None:
    """In-place clipped SGD step over lists of tensors (see module doc); ``backend`` in auto|triton|torch."""
    op = "clipped_sgd_update_"
    params, grads, momenta, lr, momentum, weight_decay = check_update_args(
        params, grads, momenta, norm, lr=lr, rule=rule, gamma=gamma, delta=delta, beta=beta, momentum=momentum,
        nesterov=nesterov, weight_decay=weight_decay, weight_decay_mode=weight_decay_mode, op=op)
    kwargs = dict(lr=lr, rule=rule, gamma=gamma, delta=delta, beta=beta, momentum=momentum, nesterov=nesterov,
                  weight_decay=weight_decay, weight_decay_mode=weight_decay_mode)
    if resolve_backend(backend, [params, grads, momenta], op=op) == "triton":
        raise NotImplementedError(f"kernels.{op}: the Triton kernel lands in the next commit")
    clipped_sgd_update_torch(params, grads, momenta, norm, **kwargs)
