"""Backend selection shared by every kernel entry point.

``backend="auto"`` runs the Triton kernel when the tensors live on a CUDA device and the torch reference
otherwise; ``"triton"`` and ``"torch"`` force one (``"triton"`` on CPU tensors needs the Triton
interpreter, ``TRITON_INTERPRET=1`` set before triton is imported). Inputs the kernels do not handle
(non-contiguous tensors) fall back to the torch reference with a one-time warning naming the op.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import torch

BACKENDS = ("auto", "triton", "torch")


def triton_interpreter_enabled() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _device_of(tensor_lists: Sequence[Sequence[torch.Tensor]]) -> torch.device | None:
    device = None
    for tensors in tensor_lists:
        for t in tensors:
            if device is None:
                device = t.device
            elif t.device != device:
                raise ValueError(f"all tensors must be on one device, found {device} and {t.device}")
    return device


_warned: set[str] = set()


def _warn_fallback(op: str, reason: str) -> None:
    if op not in _warned:
        _warned.add(op)
        warnings.warn(f"kernels.{op}: {reason}; using the torch reference instead of Triton", stacklevel=3)


def resolve_backend(backend: str, tensor_lists: Sequence[Sequence[torch.Tensor]], *, op: str) -> str:
    """Return ``"triton"`` or ``"torch"`` for ``op`` given the requested backend and the inputs.

    ``tensor_lists`` holds every list of tensors the op reads or writes (None entries skipped).
    """
    if backend not in BACKENDS:
        raise ValueError(f"kernels.{op}: backend must be one of {BACKENDS}, got {backend!r}")
    lists = [ts for ts in tensor_lists if ts is not None]
    device = _device_of(lists)
    if backend == "torch":
        return "torch"
    if backend == "auto" and not (device is not None and device.type == "cuda" and triton_available()):
        return "torch"
    usable_device = device is None or device.type == "cuda" or (
        device.type == "cpu" and triton_interpreter_enabled())
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(f"kernels.{op}: backend='triton' needs the triton package, which is not installed")
        if not usable_device:
            raise RuntimeError(f"kernels.{op}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU "
                               f"tensors), got tensors on {device}")
    if any(not t.is_contiguous() for ts in lists for t in ts):
        _warn_fallback(op, "non-contiguous input tensor")
        return "torch"
    return "triton"


def as_tensor_list(tensors, name: str, *, op: str) -> list[torch.Tensor]:
    """Check that ``tensors`` is a list/tuple of tensors and return it as a list."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"kernels.{op}: {name} must be a list of tensors, got {type(tensors).__name__}")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"kernels.{op}: {name}[{i}] must be a tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise TypeError(f"kernels.{op}: {name}[{i}] has dtype {t.dtype}; supported: float32, bfloat16, float16")
    return list(tensors)


def check_matching(reference: list[torch.Tensor], other: list[torch.Tensor], ref_name: str, name: str, *,
                   op: str) -> None:
    """Raise ValueError unless ``other`` has one tensor of the same shape per tensor of ``reference``."""
    if len(other) != len(reference):
        raise ValueError(f"kernels.{op}: {name} has {len(other)} tensors but {ref_name} has {len(reference)}")
    for i, (a, b) in enumerate(zip(reference, other)):
        if a.shape != b.shape:
            raise ValueError(f"kernels.{op}: {name}[{i}] has shape {tuple(b.shape)} but {ref_name}[{i}] has "
                             f"{tuple(a.shape)}")


def as_radii(radii, count: int, *, op: str) -> list[float]:
    """Per-tensor radii as Python floats (a list/tuple of numbers, one per tensor)."""
    if isinstance(radii, torch.Tensor) or not isinstance(radii, (list, tuple)):
        raise TypeError(f"kernels.{op}: radii must be a list of Python floats, got {type(radii).__name__}")
    if len(radii) != count:
        raise ValueError(f"kernels.{op}: radii has {len(radii)} entries but there are {count} tensors")
    out = []
    for i, r in enumerate(radii):
        if not isinstance(r, (int, float)) or isinstance(r, bool):
            raise TypeError(f"kernels.{op}: radii[{i}] must be a Python float, got {type(r).__name__}")
        out.append(float(r))
    return out


def check_python_float(value, name: str, *, op: str) -> float:
    """Hyper-parameters are Python numbers: a tensor here would force a host sync."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"kernels.{op}: {name} must be a Python float, got {type(value).__name__}")
    return float(value)
