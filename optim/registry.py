"""`optim.name` -> builder. The names, the keys each reads and their summaries are data in optim/config.py
(`OPTIMIZERS`); this module adds the builder of each, which reads only those keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .adamw import AdamW
from .clipped_sgd import ClippedSGD
from .config import OPTIMIZERS, OptimConfig
from .groups import build_param_groups
from .module_roles import ParamFacts, module_facts
from .muon import Muon
from .scion import ClippedScion

NamedParams = list[tuple[str, torch.Tensor]]


Facts = dict[str, ParamFacts] | None  # optim/module_roles.py: roles by module, known layouts


@dataclass(frozen=True)
class OptimizerEntry:
    build: Callable[..., torch.optim.Optimizer]  # (named params, cfg, facts=None)
    keys: frozenset[str]
    summary: str


def _adamw(named: NamedParams, cfg: OptimConfig, facts: Facts = None) -> torch.optim.Optimizer:
    return AdamW(build_param_groups(named, cfg, facts=facts), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                 weight_decay=cfg.weight_decay, fused=None if cfg.fused == "auto" else cfg.fused,
                 max_grad_norm=cfg.max_grad_norm, backend=cfg.backend)


def _muon(named: NamedParams, cfg: OptimConfig, facts: Facts = None) -> torch.optim.Optimizer:
    spectral = [role for role, rule in cfg.groups.items() if rule.norm == "spectral"]
    others = [role for role, _ in cfg.groups.items() if role not in spectral]
    groups = (build_param_groups(named, cfg, roles=spectral, extra={"use_muon": True}, facts=facts)
              + build_param_groups(named, cfg, lr=cfg.adamw_lr, roles=others, extra={"use_muon": False}, facts=facts))
    return Muon(groups, lr=cfg.lr, momentum=0.95 if cfg.momentum is None else cfg.momentum,
                nesterov=True if cfg.nesterov is None else cfg.nesterov, weight_decay=cfg.weight_decay,
                betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, ns_steps=cfg.ns_steps, ns_dtype=cfg.ns_dtype,
                split_across_ranks=cfg.split_orthogonalization, max_grad_norm=cfg.max_grad_norm,
                backend=cfg.backend, spectral_lmo=cfg.spectral_lmo)


def _sgd_family(rule: str) -> Callable[..., torch.optim.Optimizer]:
    def build(named: NamedParams, cfg: OptimConfig, facts: Facts = None) -> torch.optim.Optimizer:
        return ClippedSGD(build_param_groups(named, cfg, facts=facts), lr=cfg.lr, rule=rule,
                          gamma=cfg.gamma if rule in ("gclip", "dgclip") else None,
                          delta=cfg.delta if rule == "dgclip" else 0.0,
                          beta=cfg.beta if rule == "normalized" else 0.0,
                          momentum=cfg.momentum or 0.0, nesterov=bool(cfg.nesterov),
                          weight_decay=cfg.weight_decay, weight_decay_mode=cfg.weight_decay_mode,
                          norm_scope=cfg.norm_scope, backend=cfg.backend)
    return build


def _scion_family(clipped: bool, constrained: bool) -> Callable[..., torch.optim.Optimizer]:
    def build(named: NamedParams, cfg: OptimConfig, facts: Facts = None) -> torch.optim.Optimizer:
        return ClippedScion(build_param_groups(named, cfg, extra={"alpha": cfg.alpha}, facts=facts), lr=cfg.lr,
                            rho=cfg.rho if clipped else None, alpha=cfg.alpha, constrained=constrained,
                            rho_scaling=cfg.rho_scaling, ns_steps=cfg.ns_steps, ns_dtype=cfg.ns_dtype,
                            split_across_ranks=cfg.split_orthogonalization, backend=cfg.backend,
                            spectral_lmo=cfg.spectral_lmo, clamp_gap=cfg.clamp_gap, variant=cfg.s3cg_variant)
    return build


_BUILDERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "muon": _muon,
    "sgd": _sgd_family("none"),
    "gclip": _sgd_family("gclip"),
    "normalized_sgd": _sgd_family("normalized"),
    "dgclip": _sgd_family("dgclip"),
    "scion": _scion_family(clipped=False, constrained=True),
    "unconstrained_scion": _scion_family(clipped=False, constrained=False),
    "clipped_scion": _scion_family(clipped=True, constrained=True),
    "unconstrained_clipped_scion": _scion_family(clipped=True, constrained=False),
}
if _BUILDERS.keys() != OPTIMIZERS.keys():
    raise ImportError(f"optim/config.py OPTIMIZERS and optim/registry.py builders differ: "
                      f"{sorted(_BUILDERS.keys() ^ OPTIMIZERS.keys())}")

REGISTRY: dict[str, OptimizerEntry] = {
    name: OptimizerEntry(_BUILDERS[name], spec.keys, spec.summary) for name, spec in OPTIMIZERS.items()}


def build(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.name` over `model`'s parameters, grouped by `cfg.groups` (validated first); on a model
    whose parameter names no pattern matches, by module (optim/module_roles.py)."""
    cfg.validate()
    return REGISTRY[cfg.name].build(list(model.named_parameters()), cfg, module_facts(model))
