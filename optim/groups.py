"""Parameter-group rules: match parameter names to roles (embed, hidden, head, vector), one role per parameter.

The rules are config data (`optim.groups.*`, see optim/config.py). `resolve_roles` fails with the offending name when a
parameter matches no role or several; `describe_assignment` renders the result for the trainer's log.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch

from .config import GroupRule, GroupRules, OptimConfig
from .splits import split_sizes_for


def resolve_roles(named_params: list[tuple[str, torch.Tensor]], rules: GroupRules
                  ) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """{role: [(name, param), ...]} for the trainable parameters; every one lands in exactly one role."""
    resolved: dict[str, list[tuple[str, torch.Tensor]]] = {role: [] for role, _ in rules.items()}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        matches = [role for role, rule in rules.items() if any(fnmatchcase(name, pat) for pat in rule.patterns)]
        if len(matches) != 1:
            table = "; ".join(f"optim.groups.{role}.patterns={rule.patterns}" for role, rule in rules.items())
            what = "matches no role" if not matches else f"matches several roles ({', '.join(matches)})"
            raise ValueError(f"parameter {name!r} {what}: every parameter must match exactly one of {table}")
        resolved[matches[0]].append((name, param))
    return resolved


def build_param_groups(named_params: list[tuple[str, torch.Tensor]], cfg: OptimConfig, *, lr: float | None = None,
                       roles: list[str] | None = None, extra: dict | None = None) -> list[dict]:
    """torch param groups, one per non-empty role, carrying `param_names` (state keyed by name), `role`, the lr
    (lr * lr_mult), the weight decay (0 for exempt roles), the Scion LMO fields `norm`, `radius`, `normalized`,
    `transpose`, and `split_sizes` (per parameter, from the role's `splits`; optim/splits.py). `roles` restricts to
    a subset; `extra` is merged into every group."""
    base_lr = cfg.lr if lr is None else lr
    groups = []
    for role, members in resolve_roles(named_params, cfg.groups).items():
        if not members or (roles is not None and role not in roles):
            continue
        rule: GroupRule = getattr(cfg.groups, role)
        groups.append(dict(
            params=[p for _, p in members], param_names=[n for n, _ in members], role=role,
            lr=base_lr * rule.lr_mult, weight_decay=cfg.weight_decay if rule.weight_decay else 0.0,
            norm=rule.norm, radius=rule.radius, normalized=rule.normalized, transpose=rule.transpose,
            split_sizes=[split_sizes_for(n, p.shape, rule.splits, f"optim.groups.{role}.splits") for n, p in members],
            **(extra or {}),
        ))
    return groups


def describe_assignment(named_params: list[tuple[str, torch.Tensor]], cfg: OptimConfig) -> str:
    """Human-readable resolved assignment: one line per role with its settings, count and parameter names."""
    lines = [f"optimizer {cfg.name}: parameter groups"]
    for role, members in resolve_roles(named_params, cfg.groups).items():
        rule: GroupRule = getattr(cfg.groups, role)
        numel = sum(p.numel() for _, p in members)
        split = sum(split_sizes_for(n, p.shape, rule.splits, role) is not None for n, p in members)
        lines.append(f"  {role:<7} norm={rule.norm} radius={rule.radius:g} lr_mult={rule.lr_mult:g} "
                     f"weight_decay={'on' if rule.weight_decay and cfg.weight_decay else 'off'} "
                     f"tensors={len(members)} params={numel}{f' split={split}' if split else ''}: "
                     f"{', '.join(n for n, _ in members) or '-'}")
    return "\n".join(lines)
