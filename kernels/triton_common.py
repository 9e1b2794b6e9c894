"""Pieces shared by the Triton kernels: dtype mapping, chunk-pointer loads, launch counting.

Triton is optional (pyproject installs it on Linux only): without it, ``triton`` and ``tl`` here are stand-ins that
let the kernel modules define their (never launched) kernels, every ``backend="auto"`` call runs the torch
reference, and ``backend="triton"`` raises an error saying triton is not installed (kernels/dispatch.py).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except ImportError:  # the torch reference path still works
    HAVE_TRITON = False


class _TritonMissing:
    """Stand-in for ``triton`` / ``triton.language`` when triton is not installed: ``@triton.jit`` returns the
    function unchanged and any attribute (``tl.float32``, ``tl.constexpr``) is this same inert object."""

    def __getattr__(self, name: str) -> "_TritonMissing":
        return self

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return self


if not HAVE_TRITON:
    triton = tl = _TritonMissing()

TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@triton.jit
def chunk_pointer(row_ptr, column: tl.constexpr, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    """Typed pointer to the chunk start stored as an int64 byte address in ``row_ptr[column]``.

    The alignment hint must come after the int64 -> pointer cast, or the compiler cannot prove 16-byte
    alignment and emits scalar loads instead of 128-bit vector loads.
    """
    ptr = tl.load(row_ptr + column).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


@triton.jit
def load_f32(ptr, offsets, mask, MASKED: tl.constexpr):
    """fp32 values at ``ptr + offsets``; the unmasked form lets the compiler use vector loads."""
    if MASKED:
        x = tl.load(ptr + offsets, mask=mask, other=0.0)
    else:
        x = tl.load(ptr + offsets)
    return x.to(tl.float32)


@triton.jit
def store_as(ptr, offsets, value, mask, MASKED: tl.constexpr):
    """Store fp32 ``value`` converted to the pointer's element type."""
    if MASKED:
        tl.store(ptr + offsets, value.to(ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(ptr + offsets, value.to(ptr.dtype.element_ty))


@triton.jit
def is_finite(x):
    """True for finite x; NaN compares false, so NaN is not finite (never use tl.minimum/maximum for this)."""
    return tl.abs(x) < float("inf")


class LaunchCounter:
    """Counts kernel launches made through :func:`launch` (tests check launches per optimizer step) and keeps each
    launch's arguments (tests check that no per-step Python number reaches a kernel: a CUDA graph would freeze it)."""

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []
        self.calls: list[tuple[str, tuple, tuple, dict]] = []  # (kernel name, grid, args, kwargs)


_counters: list[LaunchCounter] = []


@contextlib.contextmanager
def count_launches() -> Iterator[LaunchCounter]:
    counter = LaunchCounter()
    _counters.append(counter)
    try:
        yield counter
    finally:
        _counters.remove(counter)


def device_guard(device: torch.device):
    """Make ``device`` current while launching (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def launch(kernel, grid: tuple[int, ...], *args, **kwargs) -> None:
    """Launch ``kernel[grid](*args, **kwargs)``; every Triton launch in this package goes through here."""
    for counter in _counters:
        name = getattr(kernel, "__name__", None) or kernel.fn.__name__
        counter.count += 1
        counter.names.append(name)
        counter.calls.append((name, grid, args, kwargs))
    kernel[grid](*args, **kwargs)


@triton.jit
def sum_partials_kernel(partials_ptr, out_ptr, num_partials, SQRT: tl.constexpr, BLOCK: tl.constexpr):
    """Second stage of the deterministic reductions: one program sums the per-chunk partials in a fixed
    order (strided lanes, then a fixed tree) and writes the sum, or its square root, as a 0-dim fp32."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, num_partials, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        acc += tl.load(partials_ptr + offsets, mask=offsets < num_partials, other=0.0)
    total = tl.sum(acc, axis=0)
    if SQRT:
        total = tl.sqrt_rn(total)  # round-to-nearest, not sqrt.approx
    tl.store(out_ptr, total)


def finish_reduction(partials: torch.Tensor, *, sqrt: bool) -> torch.Tensor:
    """Launch the second stage over ``partials`` and return the 0-dim fp32 result."""
    out = torch.empty((), dtype=torch.float32, device=partials.device)
    launch(sum_partials_kernel, (1,), partials, out, partials.numel(), SQRT=sqrt, BLOCK=1024, num_warps=4)
    return out
