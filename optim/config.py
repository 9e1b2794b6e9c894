"""The `optim` section of the config tree: `OptimConfig`, its nested `GroupRules` and `GRConfig`, and `OPTIMIZERS`.

`OPTIMIZERS` is the one table of optimizer names: for each, the `optim.*` keys it reads and a summary. The registry
(optim/registry.py) maps the same names to builders; `OptimConfig.check()` rejects a key set away from its default
that the chosen `optim.name` does not read, naming the key and listing the ones it does. Keys are declared with
`configs.base.field` (type, default, help, per-key `check`); this module imports nothing from the rest of `optim`.

Per-optimizer settings: an `optim` table may hold one sub-table per optimizer name (`[optim.sgd] lr = 0.3`), the
settings that optimizer gets when it is chosen; `split_optimizer_tables` separates and checks them and
`configs.schema.load_config` applies the chosen one under the preset's own `[optim]` keys and the CLI flags.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional, Union

import re

from configs.base import (Check, ConfigError, Section, at_least, build_section, field, in_range, non_empty,
                          non_negative, positive, validate_tree)


@dataclass(frozen=True)
class OptimizerSpec:
    """What `optim.name` reads: the OptimConfig keys beyond COMMON_KEYS, and a one-line summary."""
    keys: frozenset[str]
    summary: str


# Keys every optimizer reads (never reported as unused).
COMMON_KEYS = frozenset({"name", "lr", "backend", "groups", "gr", "cuda_graph", "norm_in_backward"})
_SGD = frozenset({"momentum", "nesterov", "weight_decay", "weight_decay_mode"})
_SCION = frozenset({"alpha", "ns_steps", "ns_dtype", "split_orthogonalization", "spectral_lmo"})
_CLIPPED_SCION = _SCION | {"rho", "rho_scaling", "clamp_gap"}

OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw": OptimizerSpec(frozenset({"weight_decay", "beta1", "beta2", "eps", "max_grad_norm", "fused"}),
                           "torch AdamW (fused where possible), decoupled weight decay"),
    "muon": OptimizerSpec(frozenset({"weight_decay", "momentum", "nesterov", "beta1", "beta2", "eps", "adamw_lr",
                                     "ns_steps", "ns_dtype", "split_orthogonalization", "spectral_lmo",
                                     "max_grad_norm"}),
                          "Muon (Nesterov 0.95, Newton-Schulz) on spectral roles, AdamW elsewhere"),
    "sgd": OptimizerSpec(_SGD, "SGD with optional (Nesterov) momentum"),
    "gclip": OptimizerSpec(_SGD | {"gamma", "norm_scope"}, "clipped GD, step lr*min(1, gamma/||g||)"),
    "normalized_sgd": OptimizerSpec(_SGD | {"beta", "norm_scope"}, "normalized GD, step lr/(||g|| + beta)"),
    "dgclip": OptimizerSpec(_SGD | {"gamma", "delta", "norm_scope"},
                            "delta-GClip, step lr*min(1, max(delta, gamma/||g||))"),
    "scion": OptimizerSpec(_SCION, "Scion (constrained, Frank-Wolfe)"),
    "unconstrained_scion": OptimizerSpec(_SCION, "Unconstrained Scion (uSCG)"),
    "clipped_scion": OptimizerSpec(_CLIPPED_SCION | {"s3cg_variant"}, "Clipped Scion (S3CG, short-step conditional gradient)"),
    "unconstrained_clipped_scion": OptimizerSpec(_CLIPPED_SCION, "Unconstrained Clipped Scion (GGNC)"),
}
OPTIMIZER_NAMES: tuple[str, ...] = tuple(OPTIMIZERS)
OptimizerName = Literal[OPTIMIZER_NAMES]  # the type of optim.name: exactly the names above
NormName = Literal["spectral", "sign", "colnorm", "rownorm", "bias_rms"]


_SPLIT_RULE = re.compile(r".+=[1-9][0-9]*(,[1-9][0-9]*)*(@[01])?")
split_rules = Check(lambda v: all(isinstance(x, str) and _SPLIT_RULE.fullmatch(x) for x in v),
                    "a list of 'GLOB=N' (N equal parts) or 'GLOB=a,b,c' (sizes) strings, each optionally "
                    "with '@0' or '@1' (the axis)")


@dataclass
class GroupRule(Section):
    """How one role of parameters (matched by name) is optimized."""
    patterns: list[str] = field(default_factory=list, check=non_empty,
                                help="fnmatch globs over parameter names (from model.named_parameters())")
    norm: NormName = field("spectral", help="Scion-family layer norm / LMO of this role (muon: spectral = "
                                            "Newton-Schulz, else AdamW)")
    radius: float = field(1.0, check=positive, help="Scion-family radius r_l of this role's norm ball")
    lr_mult: float = field(1.0, check=non_negative, help="multiplier of optim.lr for this role")
    weight_decay: bool = field(True, help="whether optim.weight_decay applies to this role")
    normalized: Optional[bool] = field(None, help="LMO hidden-layer scaling (unset: the norm's default, see "
                                                  "optim/lmo.py)")
    transpose: bool = field(False, help="stored tensor is (d_in, d_out), e.g. an embedding table, for the LMO "
                                        "scaling")
    splits: list[str] = field(default_factory=list, check=split_rules,
                              help="fused parameters as several layers for the Scion LMOs / Muon: 'GLOB=N' (N equal "
                                   "parts) or 'GLOB=a,b,c' (sizes) along the output axis (dim 0; dim 1 with "
                                   "transpose), or with an explicit axis 'GLOB=N@1', e.g. 'blocks.*.attn.qkv.weight=3' "
                                   "(optim/splits.py)")


def _role_rule(name: str, doc: str, **defaults) -> type:
    """A GroupRule subclass whose defaults are this role's (help and check kept), so a partial TOML table keeps
    the other defaults."""
    base = {f.name: f for f in dataclasses.fields(GroupRule)}

    def redeclared(key, value):
        meta = base[key].metadata
        if isinstance(value, list):
            return field(default_factory=lambda: list(value), help=meta["help"], check=meta["check"])
        return field(value, help=meta["help"], check=meta["check"])

    return dataclasses.make_dataclass(name, [(k, base[k].type, redeclared(k, v)) for k, v in defaults.items()],
                                      bases=(GroupRule,), namespace={"__doc__": doc, "__module__": __name__})


EmbedRule = _role_rule("EmbedRule", "Rule of the token (and learned position) embeddings.",
                       patterns=["embed.weight", "pos_embed.weight"], norm="sign", radius=3000.0)
HiddenRule = _role_rule("HiddenRule", "Rule of the 2-D matrices inside the blocks (q, k, v: three layers of the "
                        "fused qkv).",
                        patterns=["blocks.*.attn.qkv.weight", "blocks.*.attn.proj.weight", "blocks.*.mlp.fc.weight",
                                  "blocks.*.mlp.proj.weight"], norm="spectral", radius=50.0,
                        splits=["blocks.*.attn.qkv.weight=3"])
HeadRule = _role_rule("HeadRule", "Rule of the untied output head.", patterns=["head.weight"], norm="sign",
                      radius=3000.0)
VectorRule = _role_rule("VectorRule", "Rule of the 1-D parameters: norm gains and biases (q, k, v biases of a "
                        "fused qkv apart).",
                        patterns=["*norm*.weight", "*.bias"], norm="bias_rms", radius=1.0, weight_decay=False,
                        splits=["blocks.*.attn.qkv.bias=3"])


@dataclass
class GroupRules(Section):
    """Parameter roles (names from the model's parameter contract, see model/gpt.py). Each parameter must match
    exactly one role; the tied embedding/head tensor is listed once, as `embed.weight`, so it takes the `embed`
    rule. Defaults: the Clipped Scion NanoGPT recipe (Sign -> Spectral -> Sign, radii 3000 / 50 / 3000); vectors
    (norm gains, biases) BiasRMS with radius 1."""
    KEY = "optim.groups"

    embed: EmbedRule = field(default_factory=EmbedRule, help="token and position embeddings")
    hidden: HiddenRule = field(default_factory=HiddenRule, help="2-D matrices inside the blocks")
    head: HeadRule = field(default_factory=HeadRule, help="untied output head")
    vector: VectorRule = field(default_factory=VectorRule, help="norm gains and biases (1-D)")

    def items(self) -> list[tuple[str, GroupRule]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclass
class GRConfig(Section):
    """Gradient regularization (Zhao et al., ICML 2024): g = (1-alpha) g1 + alpha grad L(theta + r g1/||g1||)."""
    KEY = "optim.gr"

    enabled: bool = field(False, help="turn gradient regularization on (a second forward/backward per step)")
    r: float = field(0.1, check=non_negative, help="finite-difference step / perturbation radius r "
                                                   "(lambda = alpha * r)")
    alpha: float = field(0.8, check=in_range(0, 1), help="mixing weight alpha = lambda / r of the perturbed "
                                                         "gradient (1 = SAM)")
    warmup: Literal["none", "r", "lambda", "zero"] = field(
        "none", help="GR warmup: ramp r, ramp alpha (lambda), or plain gradients (zero) during warmup_steps")
    warmup_steps: int = field(0, check=non_negative, help="length of the GR warmup in optimizer steps (match the LR "
                                                          "warmup)")
    normalized_g1: bool = field(False, help="mix g1/||g1|| instead of g1 (the reference code's default); false = "
                                            "the paper's formula, the exact gradient of L + lambda ||grad L||")
    eps: float = field(1e-12, check=positive, help="guard added to ||g1|| in divisions")
    sync_perturbations: bool = field(True, help="one global perturbation from the all-rank g1 (world-size free); "
                                                "false = each rank perturbs with its own local g1, mixed gradients "
                                                "averaged after (the reference code's default)")

    def check(self) -> None:
        if self.warmup != "none" and self.warmup_steps == 0:
            raise ConfigError(f"optim.gr.warmup={self.warmup!r} needs optim.gr.warmup_steps > 0, got 0")


@dataclass
class OptimConfig(Section):
    """Optimizer choice and hyperparameters. Keys not read by `name` (see OPTIMIZERS) must stay at their defaults."""
    KEY = "optim"

    name: OptimizerName = field("adamw", help="optimizer: " + ", ".join(OPTIMIZER_NAMES))
    lr: float = field(1e-3, check=non_negative, help="base learning rate (the schedule multiplies it); Scion "
                                                     "family: the code's lr = gamma*rho")
    backend: Literal["auto", "triton", "torch"] = field("auto", help="kernels backend for norms and updates")
    weight_decay: float = field(0.0, check=non_negative, help="weight decay coefficient (roles with "
                                                              "weight_decay=false are exempt)")
    weight_decay_mode: Literal["coupled", "decoupled"] = field(
        "coupled", help="SGD family: coupled = the delta-GClip code's p -= lr*c*(u + wd*p); decoupled = "
                        "p *= 1 - lr*wd")
    momentum: Optional[float] = field(None, check=in_range(0, 1, high_open=True),
                                      help="heavy-ball momentum beta (unset: 0 for the SGD family, 0.95 for muon)")
    nesterov: Optional[bool] = field(None, help="Nesterov momentum (unset: false for the SGD family, true for muon)")
    gamma: float = field(1.0, check=positive, help="gclip/dgclip gradient-norm threshold gamma: factor "
                                                   "min(1, gamma/||g||)")
    delta: float = field(0.0, check=in_range(0, 1), help="dgclip floor delta of the relative step size, factor in "
                                                         "[delta, 1]; 0 = GClip")
    beta: float = field(1e-8, check=non_negative, help="normalized_sgd: factor 1/(||g|| + beta)")
    norm_scope: Literal["global", "group", "tensor"] = field(
        "global", help="gradient norm of the clip factor: over all parameters (the papers), per parameter group, or "
                       "per tensor (the per-tensor delta-GClip variant)")
    alpha: float = field(0.1, check=in_range(0, 1, low_open=True), help="Scion family averaging "
                                                                        "d = (1-alpha) d + alpha g (1 = no averaging)")
    rho: float = field(150.0, check=positive, help="clipped Scion threshold rho on G = sum_l r_l ||d_l||_* "
                                                   "(world-size-free units)")
    rho_scaling: Literal["world_size_free", "reference"] = field(
        "world_size_free", help="reference = the public code's G summed over DDP ranks (rho acts as rho/world_size)")
    clamp_gap: bool = field(False, help="clipped Scion: clip factor >= 0 (a negative Frank-Wolfe gap freezes the "
                                        "step); false = the reference code's eta < 0 step")
    s3cg_variant: Literal[1, 2] = field(2, help="clipped_scion short step: 2 = min(1, G/rho) (the paper's runs), "
                                                "1 = min(1, 4G/(rho ||v||^2)) (eq. 4.8a)")
    beta1: float = field(0.9, check=in_range(0, 1, high_open=True), help="AdamW beta1 (adamw, and muon's AdamW "
                                                                         "part)")
    beta2: float = field(0.95, check=in_range(0, 1, high_open=True), help="AdamW beta2 (adamw, and muon's AdamW "
                                                                          "part)")
    eps: float = field(1e-8, check=positive, help="AdamW epsilon")
    adamw_lr: float = field(0.0018, check=non_negative, help="muon: base lr of the AdamW part (parameters whose "
                                                             "rule norm is not spectral)")
    max_grad_norm: Optional[float] = field(
        None, check=positive, help="adamw, muon: clip the gradients to this global L2 norm inside the step (torch's "
                                   "clip_grad_norm_; unset = off); the logged grad_norm is the pre-clip norm")
    fused: Union[Literal["auto"], bool] = field(
        "auto", help="adamw: torch's fused kernel (auto: where the device and contiguity allow it; false: foreach ops)")
    ns_steps: int = field(5, check=at_least(1), help="Newton-Schulz iterations of the spectral LMO / Muon")
    ns_dtype: Literal["bfloat16", "float32"] = field("bfloat16", help="Newton-Schulz compute dtype")
    spectral_lmo: Literal["newton_schulz", "svd"] = field(
        "newton_schulz", help="orthogonalization of the spectral LMO / Muon: svd = exact UV^T (for tests; slow, syncs "
                              "the host on CUDA)")
    split_orthogonalization: bool = field(True, help="under DDP each rank orthogonalizes its share of the "
                                                     "matrices")
    cuda_graph: bool = field(
        False, help="record optimizer.step() in a CUDA graph after 3 eager warm-up steps and replay it every step "
                    "(one process on CUDA; lr and every per-step value read from device memory, optim/capture.py)")
    norm_in_backward: bool = field(
        False, help="take the global gradient norm during backward (hooks: post-accumulate-grad in one process and "
                    "fsdp/hsdp, the DDP communication hook under ddp), so step() reads the gradients once; off by "
                    "default until a GPU measures it faster (optim/backward_norm.py); not with optim.gr")
    groups: GroupRules = field(default_factory=GroupRules, help="parameter-group rules by parameter name")
    gr: GRConfig = field(default_factory=GRConfig, help="gradient regularization (training-step option)")

    def check(self) -> None:
        unused = self.unused_keys()
        if unused:
            taken = sorted(COMMON_KEYS | OPTIMIZERS[self.name].keys)
            raise ConfigError(f"optim.name={self.name!r} does not read {', '.join('optim.' + k for k in unused)} "
                              f"(set away from the default); keys it reads: {', '.join(taken)}")

    def unused_keys(self) -> list[str]:
        """Keys set away from their default that `name` does not read."""
        default = OptimConfig()
        keys = COMMON_KEYS | OPTIMIZERS[self.name].keys
        return [f.name for f in dataclasses.fields(self)
                if f.name not in keys and getattr(self, f.name) != getattr(default, f.name)]


def split_optimizer_tables(values: dict) -> tuple[dict, dict[str, dict]]:
    """Split the values of an `optim` table into its own keys and the per-optimizer tables `optim.<name>`. Each
    table may hold only keys its optimizer reads (not `name`), with valid values; errors name `optim.<name>.<key>`."""
    own = {key: value for key, value in values.items() if key not in OPTIMIZERS}
    tables = {key: value for key, value in values.items() if key in OPTIMIZERS}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"optim.{name} must be a table of the settings of optimizer {name!r} "
                              f"(e.g. [optim.{name}] lr = 0.1), got {table!r}")
        reads = sorted((COMMON_KEYS - {"name"}) | OPTIMIZERS[name].keys)
        unread = sorted(set(table) - set(reads))
        if unread:
            raise ConfigError(f"optim.{name}.{unread[0]}: optimizer {name!r} does not read {unread[0]!r}; a table "
                              f"[optim.{name}] may set: {', '.join(reads)}")
        validate_tree(build_section(OptimConfig, {**table, "name": name}, prefix=f"optim.{name}"), f"optim.{name}.")
    return own, tables
