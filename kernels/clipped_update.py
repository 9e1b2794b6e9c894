"""Fused clipped SGD step: clip factor from the global norm, optional momentum, weight decay.

Per element, with c = clip_factor(norm) (kernels.clip_factor):
    coupled:       g' = c·(g + wd·p)                (L2 folded into the gradient after the norm is taken,
                                                     as in the δ-GClip reference code, Tucat et al. 2025)
    decoupled:     g' = c·g
    momentum > 0:  m = μ·m + g';   u = g' + μ·m (Nesterov) or m (heavy ball)
    otherwise:     u = g'
    p = p − lr·u  (decoupled: p = p·(1 − lr·wd) − lr·u)
Rule none with coupled wd is ``torch.optim.SGD(momentum, weight_decay, nesterov)`` (dampening 0) exactly; rule
gclip is torch ``clip_grad_norm_`` followed by that ``SGD``.
If ``norm`` is non-finite nothing is written. ``lr`` is a Python float or a 1-element device tensor; the Triton kernel
always reads it from device memory (a float is first written into a 0-dim tensor), and computes 1 − lr·wd itself, so
a launch carries no per-step Python number and a CUDA graph of the step replays with whatever lr the tensor holds.
Parameters may be fp32 or bf16; the math is fp32.
"""
from __future__ import annotations

import torch

from .chunk_table import ChunkTable, block_size
from .clip_factor import CLIP_RULES, clip_factor, validate_clip_args
from .dispatch import (check_backend, check_list, check_python_float, select_, triton_table, upcast,
                       validate_lists)
from .triton_common import TL_DTYPES, chunk_pointer, device_guard, is_finite, launch, load_f32, store_as
from .triton_common import tl, triton

WEIGHT_DECAY_MODES = ("decoupled", "coupled")
BLOCK = 1024
NUM_WARPS = 4


def clipped_sgd_update_torch(params, grads, momenta, norm, *, lr, rule, gamma, delta, beta, momentum, nesterov,
                             weight_decay, weight_decay_mode) -> None:
    """Reference (foreach ops in fp32 temporaries, then a device-side select so a non-finite norm writes nothing)."""
    if not params:
        return
    c = clip_factor(norm.to(params[0].device), rule, gamma=gamma, delta=delta, beta=beta)
    ok = torch.isfinite(c)
    c = torch.where(ok, c, torch.zeros_like(c))
    p32 = [upcast(p) for p in params]
    g32 = [upcast(g) for g in grads]
    if weight_decay_mode == "coupled" and weight_decay != 0.0:
        g32 = torch._foreach_add(g32, p32, alpha=weight_decay)
    g_scaled = torch._foreach_mul(g32, c)
    if momentum > 0:
        m_new = torch._foreach_mul([upcast(m) for m in momenta], momentum)
        torch._foreach_add_(m_new, g_scaled)
        u = torch._foreach_add(g_scaled, m_new, alpha=momentum) if nesterov else m_new
    else:
        u = g_scaled
    if isinstance(lr, torch.Tensor):  # a device tensor lr: no host read (alpha= would read it)
        lr = lr.to(device=p32[0].device, dtype=p32[0].dtype)
        u = torch._foreach_mul(u, -lr)
        p_new = torch._foreach_mul(p32, 1.0 - lr * weight_decay) if weight_decay_mode == "decoupled" else p32
        p_new = torch._foreach_add(p_new, u)
    elif weight_decay_mode == "decoupled":
        p_new = torch._foreach_mul(p32, 1.0 - lr * weight_decay)
        torch._foreach_add_(p_new, u, alpha=-lr)
    else:
        p_new = torch._foreach_add(p32, u, alpha=-lr)
    select_(params, p_new, ok)
    if momentum > 0:
        select_(momenta, m_new, ok)


@triton.jit
def clip_factor_in_kernel(n, gamma, delta, beta, RULE: tl.constexpr):
    """kernels.clip_factor for a finite norm n >= 0 (the caller has already excluded NaN/inf). Divisions are
    round-to-nearest (``div_rn``), as torch's, not the approximate ``div.full.f32`` that ``/`` compiles to."""
    if RULE == 0:  # none
        c = tl.full((), 1.0, tl.float32)
    elif RULE == 1:  # gclip: min(1, γ/n)
        c = tl.where(n > gamma, tl.div_rn(gamma, tl.maximum(n, gamma)), 1.0)  # the maximum only avoids γ/0
    elif RULE == 2:  # dgclip: min(1, max(δ, γ/n)); n finite here, so maximum cannot meet a NaN
        c = tl.where(n > gamma, tl.maximum(tl.div_rn(gamma, tl.maximum(n, gamma)), delta), 1.0)
    else:  # normalized: 1/(n + β)
        c = tl.div_rn(1.0, tl.where(n > 0.0, n + beta, 1.0))
    if RULE != 0:  # n = 0: no step (the δ-GClip reference's step size 0)
        c = tl.where(n > 0.0, c, 0.0)
    return c


@triton.jit
def _sgd_block(p_ptr, g_ptr, m_ptr, offsets, mask, c, lr, decay, c_wd, momentum, HAS_MOMENTUM: tl.constexpr,
               NESTEROV: tl.constexpr, COUPLED: tl.constexpr, MASKED: tl.constexpr):
    # every load before the first store: the momentum store cannot hold back the parameter load
    p = load_f32(p_ptr, offsets, mask, MASKED)
    g = load_f32(g_ptr, offsets, mask, MASKED) * c
    if COUPLED:
        g += c_wd * p
    if HAS_MOMENTUM:
        m = momentum * load_f32(m_ptr, offsets, mask, MASKED) + g
        store_as(m_ptr, offsets, m, mask, MASKED)
        if NESTEROV:
            u = g + momentum * m
        else:
            u = m
    else:
        u = g
    if COUPLED:
        p = p - lr * u
    else:
        p = p * decay - lr * u
    store_as(p_ptr, offsets, p, mask, MASKED)


@triton.jit
def _clipped_sgd_kernel(rows_ptr, norm_ptr, lr_ptr, weight_decay, momentum, gamma, delta, beta,
                        RULE: tl.constexpr, HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
                        COUPLED: tl.constexpr, P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr,
                        M_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One program per table row [p, g, (m,) count, tensor index]; reads the norm and lr from device memory and
    writes nothing when the norm is NaN or inf. ``decay`` = 1 − lr·wd (decoupled)."""
    n = tl.load(norm_ptr)
    if is_finite(n):
        lr = tl.load(lr_ptr)
        decay = 1.0 - lr * weight_decay
        pid = tl.program_id(0).to(tl.int64)
        if HAS_MOMENTUM:
            row = rows_ptr + pid * 5
            m_ptr = chunk_pointer(row, 2, M_DTYPE, ALIGNED)
            count = tl.load(row + 3)
        else:
            row = rows_ptr + pid * 4
            m_ptr = chunk_pointer(row, 1, G_DTYPE, ALIGNED)  # unused
            count = tl.load(row + 2)
        p_ptr = chunk_pointer(row, 0, P_DTYPE, ALIGNED)
        g_ptr = chunk_pointer(row, 1, G_DTYPE, ALIGNED)
        c = clip_factor_in_kernel(n, gamma, delta, beta, RULE)
        c_wd = c * weight_decay
        offsets = tl.arange(0, BLOCK)
        num_full = (count // BLOCK) * BLOCK
        for start in range(0, num_full, BLOCK):
            _sgd_block(p_ptr, g_ptr, m_ptr, start + offsets, None, c, lr, decay, c_wd, momentum,
                       HAS_MOMENTUM, NESTEROV, COUPLED, False)
        tail = num_full + offsets
        _sgd_block(p_ptr, g_ptr, m_ptr, tail, tail < count, c, lr, decay, c_wd, momentum,
                   HAS_MOMENTUM, NESTEROV, COUPLED, True)


def device_scalar(value, device: torch.device) -> torch.Tensor:
    """``value`` (a Python float or 1-element tensor) as a 0-dim fp32 tensor on ``device``: the tensor itself when it
    already is one (no copy, so a CUDA graph sees the caller's storage), else a fill without a host sync."""
    if isinstance(value, torch.Tensor):
        return value.reshape(()).to(device=device, dtype=torch.float32)
    return torch.full((), value, dtype=torch.float32, device=device)


def clipped_sgd_update_triton(table: ChunkTable, norm, *, lr, rule, gamma, delta, beta, momentum, nesterov,
                              weight_decay, weight_decay_mode) -> None:
    """Launcher: one launch per dtype signature of (param, grad, momentum) rows in the table. The per-step values
    (norm, lr) travel as device tensors; every other argument is a setting of the parameter group."""
    norm = norm.reshape(()).to(device=table.device, dtype=torch.float32)
    lr = device_scalar(lr, table.device)
    with device_guard(table.device):
        for group in table.groups:
            m_dtype = group.dtypes[2] if momentum > 0 else group.dtypes[1]
            launch(_clipped_sgd_kernel, (group.num_rows,), group.rows, norm, lr, weight_decay, momentum, float(gamma or 0.0), delta, beta,
                   RULE=CLIP_RULES.index(rule), HAS_MOMENTUM=momentum > 0, NESTEROV=nesterov,
                   COUPLED=weight_decay_mode == "coupled", P_DTYPE=TL_DTYPES[group.dtypes[0]],
                   G_DTYPE=TL_DTYPES[group.dtypes[1]], M_DTYPE=TL_DTYPES[m_dtype], ALIGNED=group.aligned,
                   BLOCK=block_size(BLOCK), num_warps=NUM_WARPS)


def check_update_args(params, grads, momenta, norm, *, lr, rule, gamma, delta, beta, momentum, nesterov,
                      weight_decay, weight_decay_mode, op: str):
    """Validate the scalar arguments and list containers (tensors are checked by validate_lists);
    returns (params, grads, momenta, lr, momentum, wd)."""
    params = check_list(params, "params", op=op)
    grads = check_list(grads, "grads", op=op)
    validate_clip_args(rule, gamma, delta, beta)
    if isinstance(lr, torch.Tensor) and lr.numel() == 1:  # a tensor lr (torch.optim allows it) stays on the device
        lr = lr.detach().reshape(())
    else:
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
        momenta = check_list(momenta, "momenta", op=op)
    else:
        momenta = None
    if not isinstance(norm, torch.Tensor) or norm.numel() != 1:
        raise ValueError(f"kernels.{op}: norm must be a 0-dim tensor (from kernels.global_norm), got "
                         f"{type(norm).__name__}")
    return params, grads, momenta, lr, momentum, weight_decay


def clipped_sgd_update_(params, grads, momenta, norm, *, lr, rule, gamma=None, delta=0.0, beta=0.0, momentum=0.0,
                        nesterov=False, weight_decay=0.0, weight_decay_mode="decoupled", backend="auto",
                        plans=None) -> None:
    """In-place clipped SGD step over lists of tensors (see module doc); ``backend`` in auto|triton|torch."""
    op = "clipped_sgd_update_"
    params, grads, momenta, lr, momentum, weight_decay = check_update_args(
        params, grads, momenta, norm, lr=lr, rule=rule, gamma=gamma, delta=delta, beta=beta, momentum=momentum,
        nesterov=nesterov, weight_decay=weight_decay, weight_decay_mode=weight_decay_mode, op=op)
    kwargs = dict(lr=lr, rule=rule, gamma=gamma, delta=delta, beta=beta, momentum=momentum, nesterov=nesterov,
                  weight_decay=weight_decay, weight_decay_mode=weight_decay_mode)
    if not params:
        check_backend(backend, op=op)
        if grads or momenta:
            raise ValueError(f"kernels.{op}: params is empty but grads/momenta are not")
        return
    named = {"params": params, "grads": grads, "momenta": momenta}
    table = triton_table(backend, named, op=op, plans=plans)
    if table is not None:
        clipped_sgd_update_triton(table, norm, **kwargs)
        return
    validate_lists(named, op=op)
    clipped_sgd_update_torch(params, grads, momenta, norm, **kwargs)
