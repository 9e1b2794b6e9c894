"""Settings and validation shared by our optimizers: optimizer-wide settings stored in the param groups, the checks
every group passes (in `__init__` and `add_param_group` alike), torch's common flags, and the clip coefficient."""
from __future__ import annotations

import torch

from .kernel_api import kernels
from .newton_schulz import ORTHOGONALIZERS


class OptimizerSetting:
    """An optimizer-wide setting kept in every param group (so deepcopy, pickle and state_dict() carry it), read and
    written as an attribute: ``opt.rho`` is ``opt.param_groups[0]["rho"]``; assignment updates every group."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        groups = obj.__dict__.get("param_groups") or [obj.defaults]
        return groups[0][self.name]

    def __set__(self, obj, value):
        obj.defaults[self.name] = value
        for group in obj.__dict__.get("param_groups", []):
            group[self.name] = value


class DtypeSetting(OptimizerSetting):
    """A dtype setting, stored by name ("bfloat16") so state dicts load with weights_only=True; reads a torch.dtype."""

    def __get__(self, obj, owner=None):
        value = super().__get__(obj, owner)
        return value if obj is None else getattr(torch, value)

    def __set__(self, obj, value):
        super().__set__(obj, dtype_name(value))


def dtype_name(dtype: str | torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16 or 'bfloat16'; a ValueError for anything that is not a floating dtype."""
    name = str(dtype).removeprefix("torch.")
    if not isinstance(getattr(torch, name, None), torch.dtype) or not getattr(torch, name).is_floating_point:
        raise ValueError(f"ns_dtype must be a floating dtype such as 'bfloat16' or 'float32', got {dtype!r}")
    return name


def lr_buckets(lrs: list) -> list[tuple[object, list[int]]]:
    """[(lr, indices)] grouping equal float lrs, and tensor lrs by identity (never read on the host)."""
    buckets: dict = {}
    for i, lr in enumerate(lrs):
        key = ("tensor", id(lr)) if isinstance(lr, torch.Tensor) else ("float", float(lr))
        buckets.setdefault(key, (lr, []))[1].append(i)
    return list(buckets.values())


def group_label(index: int, group: dict) -> str:
    """'param group 1 (hidden)': how errors name a group."""
    return f"param group {index}" + (f" ({group['role']})" if group.get("role") else "")


def check_lr(lr, where: str) -> None:
    """lr is a number >= 0 or a 1-element tensor (read once here, never in step())."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{where}: a tensor lr must have 1 element, got shape {tuple(lr.shape)}")
        if lr.requires_grad:
            raise ValueError(f"{where}: a tensor lr must not require grad")
        value = float(lr)
    elif isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"{where}: lr must be a float or a 1-element tensor, got {type(lr).__name__}")
    else:
        value = lr
    if not value >= 0:
        raise ValueError(f"{where}: lr must be >= 0, got {value}")


def check_range(value, name: str, low: float, high: float, where: str, *, low_open=False, high_open=False) -> None:
    """`value` in the interval [low, high] (ends open where asked), or a ValueError naming `where` and `name`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{where}: {name} must be in {interval}, got {value!r}")


def check_torch_flags(owner: str, *, maximize=False, foreach=None, fused=None, capturable=False,
                      differentiable=False) -> None:
    """torch.optim's common flags, for optimizers that run their own multi-tensor kernels (docs/optimizers.md)."""
    if maximize:
        raise ValueError(f"{owner}: maximize=True is not supported; negate the loss instead")
    if foreach is False:
        raise ValueError(f"{owner}: foreach=False is not supported: the step is always multi-tensor (foreach ops or "
                         f"Triton); backend='torch' selects the torch reference path")
    if fused:
        raise ValueError(f"{owner}: fused=True is not supported; backend='triton' selects the fused Triton kernels")
    if capturable:
        raise ValueError(f"{owner}: capturable=True is not supported (CUDA-graph capture is untested); the step "
                         f"never syncs the host, so torch.compile(opt.step) works without it")
    if differentiable:
        raise ValueError(f"{owner}: differentiable=True is not supported: the step runs under torch.no_grad()")


def check_max_grad_norm(value, where: str) -> None:
    """None (no clipping) or a number > 0."""
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{where}: max_grad_norm must be > 0 or None (off), got {value!r}")


def clip_coefficient(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """min(1, max_norm / (norm + 1e-6)) on the device: torch.nn.utils.clip_grad_norm_'s factor (global L2 norm)."""
    return torch.clamp(max_norm / (norm + 1e-6), max=1.0)


def run_load_pre_hooks(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """torch's load_state_dict pre-hooks, run before our name matching (so a renaming hook is honoured)."""
    state_dict = dict(state_dict)
    for hook in optimizer._optimizer_load_state_dict_pre_hooks.values():
        result = hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    return state_dict


def check_betas(group: dict, where: str) -> None:
    """Adam's (beta1, beta2), each in [0, 1); stored back as a tuple."""
    betas = tuple(group["betas"])
    if len(betas) != 2:
        raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {group['betas']!r}")
    group["betas"] = betas
    check_range(betas[0], "betas[0]", 0, 1, where, high_open=True)
    check_range(betas[1], "betas[1]", 0, 1, where, high_open=True)


def check_backend(group: dict, where: str) -> None:
    if group["backend"] not in kernels.BACKENDS:
        raise ValueError(f"{where}: backend must be one of {kernels.BACKENDS}, got {group['backend']!r}")


def check_orthogonalization(group: dict, where: str) -> None:
    """The spectral LMO / Muon settings: spectral_lmo, ns_steps, ns_dtype."""
    if group["spectral_lmo"] not in ORTHOGONALIZERS:
        raise ValueError(f"{where}: spectral_lmo must be one of {ORTHOGONALIZERS}, got {group['spectral_lmo']!r}")
    if not (isinstance(group["ns_steps"], int) and group["ns_steps"] >= 1):
        raise ValueError(f"{where}: ns_steps must be an integer >= 1, got {group['ns_steps']!r}")
    dtype_name(group["ns_dtype"])
