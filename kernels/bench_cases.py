"""What ``python -m kernels.bench`` times: parameter sets shaped like the project's models, and per kernel the
Triton path, the torch eager foreach code a user would write, and that same code under ``torch.compile``.

Shapes are computed here from the model presets (configs/*.toml) instead of importing the model package, so
the benchmark measures the kernels alone. Bytes are the minimum a pass must move (every input read once,
every output written once), the basis of the GB/s and %-of-copy columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .clipped_update import clipped_sgd_update_
from .global_norm import global_norm
from .lerp_momentum import lerp_momentum_
from .scion_inner_product import scion_inner_product
from .scion_update import scion_update_

try:
    from torch.nn.utils import get_total_norm  # what clip_grad_norm_(foreach=True) runs first (torch >= 2.6)
except ImportError:  # pragma: no cover - older torch
    from .global_norm import global_norm_torch as get_total_norm

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ModelShape:
    vocab: int
    width: int
    layers: int
    context: int
    classic: bool  # GPT-2 original: learned positions, LayerNorm with bias, linear biases


MODELS = {
    # configs/tiny.toml-like but with a small vocabulary, so the interpreter can run it
    "tiny": ModelShape(vocab=512, width=64, layers=2, context=128, classic=True),
    # configs/gpt2-124m.toml: RoPE, RMSNorm without gains, no biases, tied head: 49 tensors, 123.5M elements
    "gpt2-124m": ModelShape(vocab=50304, width=768, layers=12, context=1024, classic=False),
    # GPT-2 as released (many small tensors): 148 tensors, 124.5M elements
    "gpt2-124m-classic": ModelShape(vocab=50304, width=768, layers=12, context=1024, classic=True),
    # configs/gpt2-1b.toml (the Clipped Scion paper's 1B): width 2560, 12 layers: 49 tensors, 1.07B elements
    "gpt2-1b": ModelShape(vocab=50304, width=2560, layers=12, context=1024, classic=False),
}


def parameter_shapes(model: str) -> list[tuple[int, ...]]:
    """Shapes of the trainable tensors of a tied-embedding GPT, in ``named_parameters()`` order."""
    if model not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, got {model!r}")
    m = MODELS[model]
    d = m.width
    shapes = [(m.vocab, d)] + ([(m.context, d)] if m.classic else [])
    for _ in range(m.layers):
        block = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]  # qkv, attn proj, mlp fc, mlp proj
        if m.classic:
            block = [(d,), (d,), block[0], (3 * d,), block[1], (d,), (d,), (d,), block[2], (4 * d,), block[3], (d,)]
        shapes += block
    return shapes + ([(d,), (d,)] if m.classic else [])


@dataclass
class TensorSet:
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    momenta: list[torch.Tensor]
    directions: list[torch.Tensor]
    radii: list[float]

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def pass_bytes(self) -> int:
        """Bytes of one read of one list (all lists share shapes and dtype)."""
        return sum(p.numel() * p.element_size() for p in self.params)


def make_tensors(model: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> TensorSet:
    gen = torch.Generator(device=device).manual_seed(seed)
    shapes = parameter_shapes(model)

    def fill(scale):
        return [(scale * torch.randn(s, generator=gen, device=device)).to(dtype) for s in shapes]

    params, grads, momenta = fill(0.02), fill(1e-3), fill(1e-3)
    directions = [-torch.sign(t) for t in fill(1.0)]
    radii = [3.0 if len(s) == 2 else 1.0 for s in shapes]
    return TensorSet(params, grads, momenta, directions, radii)


# Hyper-parameters of the timed steps; gamma is large so the clip factor is 1 and repeated in-place steps keep
# the tensors in range (the kernels do the same work whatever the factor).
LR, GAMMA, DELTA, MOMENTUM, WD, ALPHA = 1e-3, 1e9, 0.1, 0.9, 0.1, 0.1


def eager_norm(grads):
    return get_total_norm(grads, norm_type=2.0, foreach=True)


def eager_update(params, grads, momenta, norm):
    """Foreach δ-GClip momentum step with decoupled weight decay, given the norm."""
    c = torch.clamp(GAMMA / norm, min=DELTA, max=1.0)
    torch._foreach_mul_(momenta, MOMENTUM)
    torch._foreach_add_(momenta, torch._foreach_mul(grads, c))
    torch._foreach_mul_(params, 1.0 - LR * WD)
    torch._foreach_add_(params, momenta, alpha=-LR)


def eager_step(params, grads, momenta):
    """What clip_grad_norm_(foreach=True) runs (total norm, then grads scaled in place), then the foreach step."""
    norm = get_total_norm(grads, norm_type=2.0, foreach=True)
    torch._foreach_mul_(grads, torch.clamp(GAMMA / norm, min=DELTA, max=1.0))
    torch._foreach_mul_(momenta, MOMENTUM)
    torch._foreach_add_(momenta, grads)
    torch._foreach_mul_(params, 1.0 - LR * WD)
    torch._foreach_add_(params, momenta, alpha=-LR)


def eager_lerp(ds, grads):
    torch._foreach_lerp_(ds, grads, ALPHA)


def eager_inner(ds, directions, radii):
    from .scion_inner_product import scion_inner_product_torch
    return scion_inner_product_torch(ds, directions, radii)


def eager_scion_update(params, directions, radii, scale):
    step = torch._foreach_mul(directions, scale)
    torch._foreach_mul_(step, [LR * r for r in radii])
    torch._foreach_add_(params, step)


def triton_step(params, grads, momenta):
    norm = global_norm(grads, backend="triton")
    clipped_sgd_update_(params, grads, momenta, norm, lr=LR, rule="dgclip", gamma=GAMMA, delta=DELTA,
                                momentum=MOMENTUM, weight_decay=WD, backend="triton")


@dataclass
class Case:
    """One benchmarked operation: minimal bytes moved and a zero-argument callable per implementation."""
    name: str
    bytes: int
    impls: dict[str, Callable[[], object]]


def build_cases(ts: TensorSet, names: list[str], backends: list[str]) -> list[Case]:
    """Cases for the requested kernels; ``backends`` among triton, torch (eager foreach), compile."""
    P, G, M, V, R = ts.params, ts.grads, ts.momenta, ts.directions, ts.radii
    b = ts.pass_bytes
    norm = global_norm(G, backend="torch")
    scale = torch.full((), 0.5, device=P[0].device)
    compiled = {}

    def compile_once(fn):
        if fn not in compiled:
            compiled[fn] = torch.compile(fn, dynamic=False)  # static shapes, as a training run has
        return compiled[fn]

    table = {
        "global_norm": (b, lambda: global_norm(G, backend="triton"), eager_norm, (G,)),
        "clipped_update": (5 * b, lambda: clipped_sgd_update_(
            P, G, M, norm, lr=LR, rule="dgclip", gamma=GAMMA, delta=DELTA, momentum=MOMENTUM, weight_decay=WD,
            backend="triton"), eager_update, (P, G, M, norm)),
        "clip_step": (6 * b, lambda: triton_step(P, G, M), eager_step, (P, G, M)),
        "lerp_momentum": (3 * b, lambda: lerp_momentum_(M, G, ALPHA, backend="triton"), eager_lerp, (M, G)),
        "scion_inner_product": (2 * b, lambda: scion_inner_product(M, V, R, backend="triton"), eager_inner,
                                (M, V, R)),
        "scion_update": (3 * b, lambda: scion_update_(P, V, R, lr=LR, scale=scale, constrained=False,
                                                               backend="triton"), eager_scion_update, (P, V, R, scale)),
    }
    cases = [Case("copy", 2 * (b // 4) * 4, {"torch": _copy_fn(ts)})]
    for name in names:
        if name not in table:
            raise ValueError(f"--kernels: unknown kernel {name!r}; choose from {sorted(table)}")
        nbytes, triton_fn, eager_fn, args = table[name]
        impls = {}
        if "triton" in backends:
            impls["triton"] = triton_fn
        if "torch" in backends:
            impls["torch"] = (lambda f=eager_fn, a=args: f(*a))
        if "compile" in backends:
            impls["compile"] = (lambda f=eager_fn, a=args: compile_once(f)(*a))
        cases.append(Case(name, nbytes, impls))
    return cases


def _copy_fn(ts: TensorSet) -> Callable[[], object]:
    """y.copy_(x) over one flat buffer of the same bytes as one pass: the device's practical bandwidth."""
    src = torch.ones(ts.pass_bytes // 4, dtype=torch.float32, device=ts.params[0].device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


KERNEL_NAMES = ["global_norm", "clipped_update", "clip_step", "lerp_momentum", "scion_inner_product", "scion_update"]
