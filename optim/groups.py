"""Parameter-group rules: match parameter names to roles (embed, hidden, head, vector), one role per parameter.

The rules are config data (`optim.groups.*`, see optim/config.py). `resolve_roles` fails with the offending name when a
parameter matches no role or several; a parameter that matches no pattern takes its role by module when the model's
module facts are given (optim/module_roles.py; `optim.build` passes them), so any model builds. `describe_assignment`
renders the result for the trainer's log.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch

from .config import GroupRule, GroupRules, OptimConfig
from .module_roles import ParamFacts
from .splits import split_sizes_for


def by_module(named_params: list[tuple[str, torch.Tensor]], rules: GroupRules,
              facts: dict[str, ParamFacts] | None) -> list[str]:
    """The trainable parameters that take their role from their module: no pattern matches them (facts given)."""
    if facts is None:
        return []
    patterns = [pat for _, rule in rules.items() for pat in rule.patterns]
    return [name for name, p in named_params if p.requires_grad and not any(fnmatchcase(name, pat)
                                                                             for pat in patterns)]


def resolve_roles(named_params: list[tuple[str, torch.Tensor]], rules: GroupRules,
                  facts: dict[str, ParamFacts] | None = None) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """{role: [(name, param), ...]} for the trainable parameters; every one lands in exactly one role: the role whose
    patterns match it, or, when none does and module facts are given, its role by module."""
    resolved: dict[str, list[tuple[str, torch.Tensor]]] = {role: [] for role, _ in rules.items()}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        matches = [role for role, rule in rules.items() if any(fnmatchcase(name, pat) for pat in rule.patterns)]
        if not matches and facts is not None and name in facts:
            fact = facts[name]
            if fact.role is None:
                raise ValueError(f"parameter {name!r} matches no optim.groups pattern and {fact.why}; give it a role "
                                 f"with optim.groups.<role>.patterns")
            matches = [fact.role]
        if len(matches) != 1:
            table = "; ".join(f"optim.groups.{role}.patterns={rule.patterns}" for role, rule in rules.items())
            what = "matches no role" if not matches else f"matches several roles ({', '.join(matches)})"
            raise ValueError(f"parameter {name!r} {what}: every parameter must match exactly one of {table}")
        resolved[matches[0]].append((name, param))
    return resolved


def _split(name: str, param: torch.Tensor, rule: GroupRule, key: str, facts: dict[str, ParamFacts] | None):
    known = True if facts is None or name not in facts else facts[name].known_layout
    return split_sizes_for(name, param.shape, rule.splits, key, transpose=rule.transpose, known_layout=known)


def build_param_groups(named_params: list[tuple[str, torch.Tensor]], cfg: OptimConfig, *, lr: float | None = None,
                       roles: list[str] | None = None, extra: dict | None = None,
                       facts: dict[str, ParamFacts] | None = None) -> list[dict]:
    """torch param groups, one per non-empty role, carrying `param_names` (state keyed by name), `role`, the lr
    (lr * lr_mult), the weight decay (0 for exempt roles), the Scion LMO fields `norm`, `radius`, `normalized`,
    `transpose`, and `split_sizes` (per parameter, from the role's `splits`; optim/splits.py). `roles` restricts to
    a subset; `extra` is merged into every group; `facts` (optim/module_roles.py) give roles by module when no
    parameter matches a pattern, and tell which tensors have a known (out, in) layout for the split axis."""
    base_lr = cfg.lr if lr is None else lr
    groups = []
    for role, members in resolve_roles(named_params, cfg.groups, facts).items():
        if not members or (roles is not None and role not in roles):
            continue
        rule: GroupRule = getattr(cfg.groups, role)
        groups.append(dict(
            params=[p for _, p in members], param_names=[n for n, _ in members], role=role,
            lr=base_lr * rule.lr_mult, weight_decay=cfg.weight_decay if rule.weight_decay else 0.0,
            norm=rule.norm, radius=rule.radius, normalized=rule.normalized, transpose=rule.transpose,
            split_sizes=[_split(n, p, rule, f"optim.groups.{role}.splits", facts) for n, p in members],
            **(extra or {}),
        ))
    return groups


def describe_assignment(named_params: list[tuple[str, torch.Tensor]], cfg: OptimConfig,
                        facts: dict[str, ParamFacts] | None = None) -> str:
    """Human-readable resolved assignment: one line per role with its settings, count and parameter names."""
    from_modules = by_module(named_params, cfg.groups, facts)
    source = f" ({len(from_modules)} tensors matching no pattern take their role by module)" if from_modules else ""
    lines = [f"optimizer {cfg.name}: parameter groups{source}"]
    for role, members in resolve_roles(named_params, cfg.groups, facts).items():
        rule: GroupRule = getattr(cfg.groups, role)
        numel = sum(p.numel() for _, p in members)
        split = sum(_split(n, p, rule, role, facts) is not None for n, p in members)
        lines.append(f"  {role:<7} norm={rule.norm} radius={rule.radius:g} lr_mult={rule.lr_mult:g} "
                     f"weight_decay={'on' if rule.weight_decay and cfg.weight_decay else 'off'} "
                     f"tensors={len(members)} params={numel}{f' split={split}' if split else ''}: "
                     f"{', '.join(n for n, _ in members) or '-'}")
    return "\n".join(lines)
