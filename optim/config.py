"""The `optim` section of the config tree: `OptimConfig`, its nested `GroupRules` and `GRConfig`.

Every optimizer in the registry (optim/registry.py) declares the config keys it reads; `validate()` rejects a key set
away from its default that the chosen `optim.name` does not read, naming the key and listing the ones it does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional, get_args

OptimizerName = Literal["adamw", "muon", "sgd", "gclip", "normalized_sgd", "dgclip", "scion", "unconstrained_scion",
                        "clipped_scion", "unconstrained_clipped_scion"]
NormName = Literal["spectral", "sign", "colnorm", "rownorm", "bias_rms"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
# Keys every optimizer reads (never reported as unused).
COMMON_KEYS = frozenset({"name", "lr", "backend", "groups", "gr"})


def _f(default, help: str, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class GroupRule:
    """How one role of parameters (matched by name) is optimized."""
    patterns: list[str] = _f(None, "fnmatch globs over parameter names (from model.named_parameters())",
                             factory=list)
    norm: NormName = _f("spectral", "Scion-family layer norm / LMO of this role (muon: spectral = Newton-Schulz, "
                                    "else AdamW)")
    radius: float = _f(1.0, "Scion-family radius r_l of this role's norm ball")
    lr_mult: float = _f(1.0, "multiplier of optim.lr for this role")
    weight_decay: bool = _f(True, "whether optim.weight_decay applies to this role")
    normalized: Optional[bool] = _f(None, "LMO hidden-layer scaling (unset: the norm's default, see optim/lmo.py)")
    transpose: bool = _f(False, "stored tensor is (d_in, d_out), e.g. an embedding table, for the LMO scaling")

    def validate(self, key: str) -> None:
        if not self.patterns:
            raise ValueError(f"{key}.patterns must list at least one glob, got []")
        if not self.radius > 0:
            raise ValueError(f"{key}.radius must be > 0, got {self.radius}")
        if not self.lr_mult >= 0:
            raise ValueError(f"{key}.lr_mult must be >= 0, got {self.lr_mult}")


def _role_rule(name: str, patterns: list[str], norm: str, radius: float, weight_decay: bool, doc: str) -> type:
    """A GroupRule subclass whose defaults are this role's, so a partial TOML table keeps the other defaults."""
    cls = dataclasses.make_dataclass(name, [
        ("patterns", list[str], _f(None, GroupRule.__dataclass_fields__["patterns"].metadata["help"],
                                   factory=lambda: list(patterns))),
        ("norm", NormName, _f(norm, GroupRule.__dataclass_fields__["norm"].metadata["help"])),
        ("radius", float, _f(radius, GroupRule.__dataclass_fields__["radius"].metadata["help"])),
        ("weight_decay", bool, _f(weight_decay, GroupRule.__dataclass_fields__["weight_decay"].metadata["help"])),
    ], bases=(GroupRule,), namespace={"__doc__": doc, "__module__": __name__})
    return cls


EmbedRule = _role_rule("EmbedRule", ["embed.weight", "pos_embed.weight"], "sign", 3000.0, True,
                       "Rule of the token (and learned position) embeddings.")
HiddenRule = _role_rule("HiddenRule", ["blocks.*.attn.qkv.weight", "blocks.*.attn.proj.weight",
                                       "blocks.*.mlp.fc.weight", "blocks.*.mlp.proj.weight"], "spectral", 50.0, True,
                        "Rule of the 2-D matrices inside the blocks.")
HeadRule = _role_rule("HeadRule", ["head.weight"], "sign", 3000.0, True, "Rule of the untied output head.")
VectorRule = _role_rule("VectorRule", ["*norm*.weight", "*.bias"], "bias_rms", 1.0, False,
                        "Rule of the 1-D parameters: norm gains and biases.")


@dataclass
class GroupRules:
    """Parameter roles (contracts.md names). Each parameter must match exactly one role; the tied embedding/head
    tensor is listed once, as `embed.weight`, so it takes the `embed` rule. Defaults: the Clipped Scion NanoGPT
    recipe (Sign -> Spectral -> Sign, radii 3000 / 50 / 3000); vectors (norm gains, biases) BiasRMS with radius 1."""
    embed: EmbedRule = _f(None, "token and position embeddings", factory=EmbedRule)
    hidden: HiddenRule = _f(None, "2-D matrices inside the blocks", factory=HiddenRule)
    head: HeadRule = _f(None, "untied output head", factory=HeadRule)
    vector: VectorRule = _f(None, "norm gains and biases (1-D)", factory=VectorRule)

    def items(self) -> list[tuple[str, GroupRule]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    def validate(self) -> None:
        for role, rule in self.items():
            rule.validate(f"optim.groups.{role}")


@dataclass
class GRConfig:
    """Gradient regularization (Zhao et al., ICML 2024): g = (1-alpha) g1 + alpha grad L(theta + r g1/||g1||)."""
    enabled: bool = _f(False, "turn gradient regularization on (a second forward/backward per step)")
    r: float = _f(0.1, "finite-difference step / perturbation radius r (lambda = alpha * r)")
    alpha: float = _f(0.8, "mixing weight alpha = lambda / r of the perturbed gradient (1 = SAM)")
    warmup: Literal["none", "r", "lambda", "zero"] = _f(
        "none", "GR warmup: ramp r, ramp alpha (lambda), or plain gradients (zero) during warmup_steps")
    warmup_steps: int = _f(0, "length of the GR warmup in optimizer steps (match the LR warmup)")
    normalized_g1: bool = _f(False, "mix g1/||g1|| instead of g1 (the reference code's default); false = the "
                                    "paper's formula, the exact gradient of L + lambda ||grad L||")
    eps: float = _f(1e-12, "guard added to ||g1|| in divisions")

    def validate(self) -> None:
        if self.r < 0:
            raise ValueError(f"optim.gr.r must be >= 0, got {self.r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"optim.gr.alpha must be in [0, 1], got {self.alpha}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.gr.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup != "none" and self.warmup_steps == 0:
            raise ValueError(f"optim.gr.warmup={self.warmup!r} needs optim.gr.warmup_steps > 0, got 0")
        if self.eps <= 0:
            raise ValueError(f"optim.gr.eps must be > 0, got {self.eps}")


@dataclass
class OptimConfig:
    """Optimizer choice and hyperparameters. Keys not read by `name` must stay at their defaults."""
    name: OptimizerName = _f("adamw", "optimizer: " + ", ".join(OPTIMIZER_NAMES))
    lr: float = _f(1e-3, "base learning rate (the schedule multiplies it); Scion family: the code's lr = gamma*rho")
    backend: Literal["auto", "triton", "torch"] = _f("auto", "kernels backend for norms and updates")
    weight_decay: float = _f(0.0, "weight decay coefficient (roles with weight_decay=false are exempt)")
    weight_decay_mode: Literal["coupled", "decoupled"] = _f(
        "coupled", "SGD family: coupled = the delta-GClip code's p -= lr*c*(u + wd*p); decoupled = p *= 1 - lr*wd")
    momentum: Optional[float] = _f(None, "heavy-ball momentum beta (unset: 0 for the SGD family, 0.95 for muon)")
    nesterov: Optional[bool] = _f(None, "Nesterov momentum (unset: false for the SGD family, true for muon)")
    gamma: float = _f(1.0, "gclip/dgclip gradient-norm threshold gamma: factor min(1, gamma/||g||)")
    delta: float = _f(0.0, "dgclip floor delta of the relative step size, factor in [delta, 1]; 0 = GClip")
    beta: float = _f(1e-8, "normalized_sgd: factor 1/(||g|| + beta)")
    norm_scope: Literal["global", "group"] = _f(
        "global", "gradient norm of the clip factor: over all parameters (the papers) or per parameter group")
    alpha: float = _f(0.1, "Scion family averaging d = (1-alpha) d + alpha g (1 = no averaging)")
    rho: float = _f(150.0, "clipped Scion threshold rho on G = sum_l r_l ||d_l||_* (world-size-free units)")
    rho_scaling: Literal["world_size_free", "reference"] = _f(
        "world_size_free", "reference = the public code's G summed over DDP ranks (rho acts as rho/world_size)")
    beta1: float = _f(0.9, "AdamW beta1 (adamw, and muon's AdamW part)")
    beta2: float = _f(0.95, "AdamW beta2 (adamw, and muon's AdamW part)")
    eps: float = _f(1e-8, "AdamW epsilon")
    adamw_lr: float = _f(0.0018, "muon: base lr of the AdamW part (parameters whose rule norm is not spectral)")
    ns_steps: int = _f(5, "Newton-Schulz iterations of the spectral LMO / Muon")
    ns_dtype: Literal["bfloat16", "float32"] = _f("bfloat16", "Newton-Schulz compute dtype")
    split_orthogonalization: bool = _f(True, "under DDP each rank orthogonalizes its share of the matrices")
    groups: GroupRules = _f(None, "parameter-group rules by parameter name", factory=GroupRules)
    gr: GRConfig = _f(None, "gradient regularization (training-step option)", factory=GRConfig)

    def validate(self) -> None:
        from .registry import REGISTRY  # local import: the registry imports the optimizer classes (torch)

        if self.name not in REGISTRY:
            raise ValueError(f"optim.name: unknown optimizer {self.name!r}; valid: {', '.join(REGISTRY)}")
        checks = [
            (self.lr >= 0, f"optim.lr must be >= 0, got {self.lr}"),
            (self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}"),
            (self.momentum is None or 0 <= self.momentum < 1, f"optim.momentum must be in [0, 1), got {self.momentum}"),
            (self.gamma > 0, f"optim.gamma must be > 0, got {self.gamma}"),
            (0 <= self.delta <= 1, f"optim.delta must be in [0, 1], got {self.delta}"),
            (self.beta >= 0, f"optim.beta must be >= 0, got {self.beta}"),
            (0 < self.alpha <= 1, f"optim.alpha must be in (0, 1], got {self.alpha}"),
            (self.rho > 0, f"optim.rho must be > 0, got {self.rho}"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"optim.beta1/beta2 must be in [0, 1), got "
                                                           f"{self.beta1}/{self.beta2}"),
            (self.eps > 0, f"optim.eps must be > 0, got {self.eps}"),
            (self.adamw_lr >= 0, f"optim.adamw_lr must be >= 0, got {self.adamw_lr}"),
            (self.ns_steps >= 1, f"optim.ns_steps must be >= 1, got {self.ns_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        unused = self.unused_keys_set()
        if unused:
            taken = sorted(COMMON_KEYS | REGISTRY[self.name].keys)
            raise ValueError(f"optim.name={self.name!r} does not read {', '.join('optim.' + k for k in unused)} "
                             f"(set away from the default); keys it reads: {', '.join(taken)}")
        self.groups.validate()
        self.gr.validate()

    def unused_keys_set(self) -> list[str]:
        """Keys set away from their default that `name` does not read."""
        from .registry import REGISTRY

        default = OptimConfig()
        keys = COMMON_KEYS | REGISTRY[self.name].keys
        return [f.name for f in dataclasses.fields(self)
                if f.name not in keys and getattr(self, f.name) != getattr(default, f.name)]
