"""`optim.name` -> builder. Each entry declares the config keys it reads (OptimConfig.validate checks the rest)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .adamw import AdamW
from .clipped_sgd import ClippedSGD
from .config import OptimConfig
from .groups import build_param_groups
from .muon import Muon
from .scion import ClippedScion

NamedParams = list[tuple[str, torch.Tensor]]


@dataclass(frozen=True)
class OptimizerEntry:
    build: Callable[[NamedParams, OptimConfig], torch.optim.Optimizer]
    keys: frozenset[str]
    summary: str


def _adamw(named: NamedParams, cfg: OptimConfig) -> torch.optim.Optimizer:
    return AdamW(build_param_groups(named, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                 weight_decay=cfg.weight_decay, backend=cfg.backend)


def _muon(named: NamedParams, cfg: OptimConfig) -> torch.optim.Optimizer:
    spectral = [role for role, rule in cfg.groups.items() if rule.norm == "spectral"]
    others = [role for role, _ in cfg.groups.items() if role not in spectral]
    groups = (build_param_groups(named, cfg, roles=spectral, extra={"use_muon": True})
              + build_param_groups(named, cfg, lr=cfg.adamw_lr, roles=others, extra={"use_muon": False}))
    return Muon(groups, lr=cfg.lr, momentum=0.95 if cfg.momentum is None else cfg.momentum,
                nesterov=True if cfg.nesterov is None else cfg.nesterov, weight_decay=cfg.weight_decay,
                betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, ns_steps=cfg.ns_steps, ns_dtype=cfg.ns_dtype,
                split_across_ranks=cfg.split_orthogonalization, backend=cfg.backend)


def _sgd_family(rule: str) -> Callable[[NamedParams, OptimConfig], torch.optim.Optimizer]:
    def build(named: NamedParams, cfg: OptimConfig) -> torch.optim.Optimizer:
        return ClippedSGD(build_param_groups(named, cfg), lr=cfg.lr, rule=rule,
                          gamma=cfg.gamma if rule in ("gclip", "dgclip") else None,
                          delta=cfg.delta if rule == "dgclip" else 0.0,
                          beta=cfg.beta if rule == "normalized" else 0.0,
                          momentum=cfg.momentum or 0.0, nesterov=bool(cfg.nesterov),
                          weight_decay=cfg.weight_decay, weight_decay_mode=cfg.weight_decay_mode,
                          norm_scope=cfg.norm_scope, backend=cfg.backend)
    return build


def _scion_family(clipped: bool, constrained: bool) -> Callable[[NamedParams, OptimConfig], torch.optim.Optimizer]:
    def build(named: NamedParams, cfg: OptimConfig) -> torch.optim.Optimizer:
        return ClippedScion(build_param_groups(named, cfg, extra={"alpha": cfg.alpha}), lr=cfg.lr,
                            rho=cfg.rho if clipped else None, alpha=cfg.alpha, constrained=constrained,
                            rho_scaling=cfg.rho_scaling, ns_steps=cfg.ns_steps, ns_dtype=cfg.ns_dtype,
                            split_across_ranks=cfg.split_orthogonalization, backend=cfg.backend)
    return build


_SGD = frozenset({"momentum", "nesterov", "weight_decay", "weight_decay_mode"})
_SCION = frozenset({"alpha", "ns_steps", "ns_dtype", "split_orthogonalization"})
_CLIPPED_SCION = _SCION | {"rho", "rho_scaling"}

REGISTRY: dict[str, OptimizerEntry] = {
    "adamw": OptimizerEntry(_adamw, frozenset({"weight_decay", "beta1", "beta2", "eps"}),
                            "torch AdamW (fused), decoupled weight decay"),
    "muon": OptimizerEntry(_muon, frozenset({"weight_decay", "momentum", "nesterov", "beta1", "beta2", "eps",
                                             "adamw_lr", "ns_steps", "ns_dtype", "split_orthogonalization"}),
                           "Muon (Nesterov 0.95, Newton-Schulz) on spectral roles, AdamW elsewhere"),
    "sgd": OptimizerEntry(_sgd_family("none"), _SGD, "SGD with optional (Nesterov) momentum"),
    "gclip": OptimizerEntry(_sgd_family("gclip"), _SGD | {"gamma", "norm_scope"},
                            "clipped GD, step lr*min(1, gamma/||g||)"),
    "normalized_sgd": OptimizerEntry(_sgd_family("normalized"), _SGD | {"beta", "norm_scope"},
                                     "normalized GD, step lr/(||g|| + beta)"),
    "dgclip": OptimizerEntry(_sgd_family("dgclip"), _SGD | {"gamma", "delta", "norm_scope"},
                             "delta-GClip, step lr*min(1, max(delta, gamma/||g||))"),
    "scion": OptimizerEntry(_scion_family(False, True), _SCION, "Scion (constrained, Frank-Wolfe)"),
    "unconstrained_scion": OptimizerEntry(_scion_family(False, False), _SCION, "Unconstrained Scion (uSCG)"),
    "clipped_scion": OptimizerEntry(_scion_family(True, True), _CLIPPED_SCION,
                                    "Clipped Scion (S3CG, short-step conditional gradient)"),
    "unconstrained_clipped_scion": OptimizerEntry(_scion_family(True, False), _CLIPPED_SCION,
                                                  "Unconstrained Clipped Scion (GGNC)"),
}


def build(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.name` over `model`'s parameters, grouped by `cfg.groups` (validated first)."""
    cfg.validate()
    return REGISTRY[cfg.name].build(list(model.named_parameters()), cfg)
