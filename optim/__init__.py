"""Optimizers for GPT pretraining: AdamW and Muon baselines, the clipped SGD family (GClip, delta-GClip, normalized
SGD) and the Scion family (Scion, Clipped Scion, constrained and unconstrained), plus gradient regularization.

`optim.build(model, cfg)` builds `cfg.name` from the registry with the parameter-group rules of `cfg.groups`.
See docs/optimizers.md.
"""
from __future__ import annotations

import torch

from .adamw import AdamW
from .backward_norm import BackwardNorm
from .base import with_settings_of
from .capture import CapturedStep
from .clipped_sgd import SGD, ClippedSGD, DeltaGClip, GClip, NormalizedSGD
from .config import GroupRule, GroupRules, GRConfig, OPTIMIZER_NAMES, OptimConfig
from .gr import GradientRegularization
from .groups import build_param_groups, resolve_roles
from .groups import describe_assignment as _describe
from .module_roles import module_facts
from .lmo import LMOSpec, dual_norm, layer_norm, lmo, lmo_many
from .muon import Muon
from .newton_schulz import newton_schulz5, orthogonalize
from .registry import REGISTRY, build
from .scion import ClippedScion, Scion


def describe_assignment(model: torch.nn.Module, cfg: OptimConfig) -> str:
    """The resolved role of every parameter under `cfg.groups` (or by module, as `build` does), as text for the log."""
    return _describe(list(model.named_parameters()), cfg, module_facts(model))


def describe_groups(optimizer: torch.optim.Optimizer) -> str:
    """The built optimizer's groups: role, base lr (``initial_lr``, which an LR schedule multiplies; the group's
    current lr without one), weight decay, and only the group keys this optimizer reads (``optimizer.defaults``):
    the Scion family's norm/radius, Muon's use_muon, and split tensors where an LMO or Newton-Schulz sees them."""
    lines = [f"{type(optimizer).__name__}: {len(optimizer.param_groups)} parameter groups (lr = base LR, before the "
             f"schedule)"]
    reads = optimizer.defaults
    for i, group in enumerate(optimizer.param_groups):
        values = {"role": group.get("role"), "lr": group.get("initial_lr", group["lr"]),
                  "weight_decay": group.get("weight_decay")}
        values.update({k: group[k] for k in ("norm", "radius", "use_muon") if k in reads and k in group})
        settings = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
                            if v is not None)
        names = group.get("param_names", [f"<{len(group['params'])} unnamed>"])
        split = sum(s is not None for s in group.get("split_sizes") or [])
        if split and ("norm" in reads or group.get("use_muon")):  # tensors optimized as several layers (q, k, v)
            settings += f" split={split}"
        lines.append(f"  [{i}] {settings} tensors={len(group['params'])}: {', '.join(names)}")
    return "\n".join(lines)


def step_stats(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """0-dim device tensors from the optimizer's last step (empty for optimizers without `stats()`)."""
    stats = getattr(optimizer, "stats", None)
    return stats() if callable(stats) else {}


__all__ = [
    "AdamW", "BackwardNorm", "CapturedStep", "ClippedSGD", "ClippedScion", "DeltaGClip", "GClip", "GRConfig", "GradientRegularization", "GroupRule",
    "GroupRules", "LMOSpec", "Muon", "NormalizedSGD", "OPTIMIZER_NAMES", "OptimConfig", "REGISTRY", "SGD", "Scion",
    "build", "build_param_groups", "describe_assignment", "describe_groups", "dual_norm", "layer_norm", "lmo", "lmo_many",
    "module_facts", "newton_schulz5", "orthogonalize", "resolve_roles", "step_stats", "with_settings_of",
]
