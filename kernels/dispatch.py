"""Backend selection and input validation shared by every kernel entry point.

``backend="auto"`` runs the Triton kernel when the tensors live on a CUDA device and the torch reference
otherwise; ``"triton"`` and ``"torch"`` force one (``"triton"`` on CPU tensors needs the Triton interpreter,
``TRITON_INTERPRET=1`` set before triton is imported). Inputs the kernels do not handle (non-contiguous
or float64 tensors) fall back to the torch reference with a one-time warning naming the op.

The Triton path validates the lists once per chunk table: a call whose tensors have the addresses, sizes,
dtypes and contiguity of an earlier call reuses that call's validated table, so the per-call host cost is a
few C-level attribute reads per tensor.
"""
from __future__ import annotations

import os
import warnings

import torch

from .triton_common import HAVE_TRITON
from .chunk_table import ChunkPlans, ChunkTable, build_table, cached, table_key, tuning

BACKENDS = ("auto", "triton", "torch")
try:  # sharded tensors have no plain storage here (data_ptr 0, numel the global size): refused by name
    from torch.distributed.tensor import DTensor as _DTENSOR
except ImportError:  # pragma: no cover - torch built without distributed
    _DTENSOR = None
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # float64 runs the torch reference


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The torch references' math dtype: float64 for float64 tensors, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in its math dtype (a copy for bf16/fp16, ``t`` itself for fp32/fp64)."""
    return t.to(compute_dtype(t.dtype))


def select_(dsts: list[torch.Tensor], news: list[torch.Tensor], ok: torch.Tensor) -> None:
    """dst = new if ``ok`` else dst for each pair (``ok`` a 0-dim device bool, never read on the host): the torch
    references' non-finite skip. In place, one launch per tensor and nothing allocated when ``new`` has dst's dtype;
    a bf16/fp16 ``dst`` takes the fp32 select through a copy (where cannot cast into its out). No foreach op selects
    exactly through NaN/inf, so this stays one select per tensor."""
    for dst, new in zip(dsts, news):
        if new.dtype == dst.dtype:
            torch.where(ok, new, dst, out=dst)
        else:
            dst.copy_(torch.where(ok, new, dst))


_NON_CONTIGUOUS = "non-contiguous input tensor"  # cached decisions for inputs the kernels do not take
_FLOAT64 = "float64 input tensor"


def triton_interpreter_enabled() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_available() -> bool:
    return HAVE_TRITON


_warned: set[tuple[str, str]] = set()


def _warn_fallback(op: str, reason: str) -> None:
    if (op, reason) not in _warned:
        _warned.add((op, reason))
        warnings.warn(f"kernels.{op}: {reason}; using the torch reference instead of Triton", stacklevel=4)


def check_backend(backend: str, *, op: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"kernels.{op}: backend must be one of {BACKENDS}, got {backend!r}")


def wants_triton(backend: str, device: torch.device, *, op: str) -> bool:
    """Whether ``backend`` asks for the Triton kernel on ``device`` (raises if it cannot run there)."""
    check_backend(backend, op=op)
    if backend == "torch":
        return False
    if backend == "auto":
        return device.type == "cuda" and triton_available()
    if not triton_available():
        raise RuntimeError(f"kernels.{op}: backend='triton' needs the triton package, which is not installed "
                           f"(pip install triton, Linux only); use backend='auto' or 'torch' for the torch reference")
    if device.type != "cuda" and not (device.type == "cpu" and triton_interpreter_enabled()):
        raise RuntimeError(f"kernels.{op}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU "
                           f"tensors), got tensors on {device}")
    return True


def check_list(tensors, name: str, *, op: str) -> list:
    """The container check done on every call (element checks happen in :func:`validate_lists`)."""
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"kernels.{op}: {name} must be a list of tensors, got {type(tensors).__name__}")
    if _DTENSOR is not None:
        for i, t in enumerate(tensors):
            if isinstance(t, _DTENSOR):
                raise TypeError(f"kernels.{op}: {name}[{i}] is a DTensor (shape {tuple(t.shape)}, placements "
                                f"{t.placements}); the kernels take plain local tensors: pass t.to_local() and join "
                                f"reductions across ranks yourself (optim/sharding.py does both)")
    return tensors if isinstance(tensors, list) else list(tensors)


def validate_lists(named_lists: dict, *, op: str) -> None:
    """Every entry a float tensor, one device, and the same shapes as the first list (None lists skipped)."""
    items = [(name, ts) for name, ts in named_lists.items() if ts is not None]
    ref_name, reference = items[0]
    device = None
    for name, ts in items:
        if len(ts) != len(reference):
            raise ValueError(f"kernels.{op}: {name} has {len(ts)} tensors but {ref_name} has {len(reference)}")
        for i, t in enumerate(ts):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"kernels.{op}: {name}[{i}] must be a tensor, got {type(t).__name__}")
            if t.dtype not in FLOAT_DTYPES:
                raise TypeError(f"kernels.{op}: {name}[{i}] has dtype {t.dtype}; supported: float32, bfloat16, "
                                f"float16, float64")
            if t.shape != reference[i].shape:
                raise ValueError(f"kernels.{op}: {name}[{i}] has shape {tuple(t.shape)} but {ref_name}[{i}] has "
                                 f"{tuple(reference[i].shape)}")
            device = device or t.device
            if t.device != device:
                raise ValueError(f"kernels.{op}: all tensors must be on one device, found {device} and "
                                 f"{t.device} ({name}[{i}])")


def triton_table(backend: str, named_lists: dict, *, op: str, plans: ChunkPlans | None = None) -> ChunkTable | None:
    """The chunk table to run ``op``'s Triton kernel with, or None to run the torch reference.

    ``named_lists`` maps argument names to the lists the kernel reads or writes (None entries skipped); the
    first list must be non-empty. Validation runs when a table is built, not on cache hits. ``plans`` (an
    optimizer's :class:`ChunkPlans`) owns the table; without it the module-wide cache is used.
    """
    lists = [ts for ts in named_lists.values() if ts is not None]
    first = lists[0][0]
    if not wants_triton(backend, first.device if isinstance(first, torch.Tensor) else torch.device("cpu"), op=op):
        return None
    if plans is None:
        try:
            key = table_key(lists)
        except TypeError:  # a non-tensor entry: let validation name it
            validate_lists(named_lists, op=op)
            raise

    def build():
        validate_lists(named_lists, op=op)
        if not all(t.is_contiguous() for ts in lists for t in ts):
            return _NON_CONTIGUOUS
        if not all(t.dtype in TRITON_DTYPES for ts in lists for t in ts):
            return _FLOAT64
        return build_table(lists, tuning().chunk_size)

    if plans is not None:
        try:
            entry = plans.get(op, lists, build)
        except TypeError:  # a non-tensor entry: let validation name it
            validate_lists(named_lists, op=op)
            raise
    else:
        entry = cached(key, build)
    if isinstance(entry, str):  # one of the reasons above
        _warn_fallback(op, entry)
        return None
    return entry


def as_radii(radii, count: int, *, op: str) -> list[float]:
    """Per-tensor radii as Python floats (a list/tuple of numbers, one per tensor)."""
    if isinstance(radii, torch.Tensor) or not isinstance(radii, (list, tuple)):
        raise TypeError(f"kernels.{op}: radii must be a list of Python floats, got {type(radii).__name__}")
    if len(radii) != count:
        raise ValueError(f"kernels.{op}: radii has {len(radii)} entries but there are {count} tensors")
    for i, r in enumerate(radii):
        if not isinstance(r, (int, float)) or isinstance(r, bool):
            raise TypeError(f"kernels.{op}: radii[{i}] must be a Python float, got {type(r).__name__}")
    return radii


def check_python_float(value, name: str, *, op: str) -> float:
    """Hyper-parameters are Python numbers: a tensor here would force a host sync."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"kernels.{op}: {name} must be a Python float, got {type(value).__name__}")
    return float(value)
