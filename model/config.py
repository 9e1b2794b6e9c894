"""The `model` section of the config tree: `ModelConfig` and the size presets.

Presets and explicit values: `preset` names a row of `PRESETS`, which supplies `n_layer`, `n_head` and `n_embd`.
A preset only fills the fields left at None, so explicit values always win; e.g. `preset="gpt2-124m"` with
`n_head=6` is GPT-2 124M with head dim 128 (the Clipped Scion NanoGPT shape). Without a preset all three must be
given. `resolved()` returns the filled-in copy the model is built from; `validate()` checks that copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

# Size presets: (n_layer, n_head, n_embd).
# gpt2-*: the four GPT-2 sizes (Radford et al. 2019; the nanoGPT `from_pretrained` table).
# scion-1b: the Clipped Scion paper's 1B NanoGPT (Pethick et al. 2025, Table 4: n_embd 2560, 20 heads, so head dim
# 128). The paper states "12 layers, head dim 128" for its NanoGPT runs and only widens the model for 1B, so we keep
# 12 layers: 943.7M non-embedding parameters, 1.072B in all with the tied 50304 x 2560 embedding (Scion recipe).
PRESETS: dict[str, dict[str, int]] = {
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-350m": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-774m": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-1.5b": dict(n_layer=48, n_head=25, n_embd=1600),
    "scion-1b": dict(n_layer=12, n_head=20, n_embd=2560),
}

NORMS = ("layernorm", "rmsnorm")
POS_EMBS = ("learned", "rope")
MLPS = ("gelu", "relu2")
PROJ_INITS = ("scaled", "zero")


@dataclass
class ModelConfig:
    """GPT architecture. Defaults (with a size preset) give classic GPT-2; see docs/model.md for the modern recipe."""

    preset: Optional[str] = field(
        default=None,
        metadata={"help": f"size preset filling n_layer/n_head/n_embd left unset: one of {sorted(PRESETS)}"},
    )
    n_layer: Optional[int] = field(default=None, metadata={"help": "number of transformer blocks"})
    n_head: Optional[int] = field(default=None, metadata={"help": "attention heads per block"})
    n_embd: Optional[int] = field(default=None, metadata={"help": "residual stream width d"})
    head_dim: Optional[int] = field(
        default=None,
        metadata={"help": "width of one attention head; unset = n_embd // n_head (attention width n_head*head_dim)"},
    )
    vocab_size: int = field(
        default=50304,
        metadata={"help": "embedding/head rows: GPT-2's 50257 tokens padded up to a multiple of 128 (faster matmuls)"},
    )
    block_size: int = field(default=1024, metadata={"help": "maximum sequence length (context) in tokens"})
    norm: Literal["layernorm", "rmsnorm"] = field(
        default="layernorm", metadata={"help": "normalization of the pre-norm blocks and the final norm"}
    )
    norm_affine: bool = field(
        default=True, metadata={"help": "learnable norm gains (False: parameter-free norms as in the Scion NanoGPT)"}
    )
    norm_eps: float = field(default=1e-5, metadata={"help": "epsilon inside LayerNorm/RMSNorm"})
    pos_emb: Literal["learned", "rope"] = field(
        default="learned", metadata={"help": "positions: learned absolute table (GPT-2) or rotary (RoPE)"}
    )
    rope_base: float = field(default=10000.0, metadata={"help": "RoPE base theta (frequencies base^(-2i/head_dim))"})
    mlp: Literal["gelu", "relu2"] = field(
        default="gelu", metadata={"help": "MLP activation: gelu (GPT-2) or relu2 = (sqrt(2)*relu(x))^2 (Clipped Scion)"}
    )
    mlp_ratio: int = field(default=4, metadata={"help": "MLP hidden width as a multiple of n_embd"})
    qk_norm: bool = field(default=False, metadata={"help": "RMSNorm queries and keys per head before attention"})
    tie_embeddings: bool = field(default=True, metadata={"help": "output head shares the token embedding matrix"})
    bias: bool = field(default=True, metadata={"help": "biases in linear layers and LayerNorm (GPT-2: true)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on embeddings, attention and residual branches"})
    init_std: float = field(default=0.02, metadata={"help": "std of the normal init of weights and embeddings"})
    proj_init: Literal["scaled", "zero"] = field(
        default="scaled",
        metadata={"help": "residual output projections: scaled = init_std/sqrt(2*n_layer) (GPT-2), zero (Scion code)"},
    )

    def resolved(self) -> "ModelConfig":
        """A copy with `n_layer/n_head/n_embd` filled from `preset` where unset and `head_dim` filled in."""
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"model.preset must be one of {sorted(PRESETS)} or unset, got {self.preset!r}")
        filled = {}
        for key in ("n_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if value is None:
                if self.preset is None:
                    raise ValueError(f"model.{key} is not set: give it or choose model.preset from {sorted(PRESETS)}")
                value = PRESETS[self.preset][key]
            filled[key] = value
        cfg = dataclasses.replace(self, **filled)
        if cfg.head_dim is None and cfg.n_head > 0 and cfg.n_embd % cfg.n_head == 0:
            cfg.head_dim = cfg.n_embd // cfg.n_head
        return cfg

    def validate(self) -> None:
        """Raise ValueError naming `model.<key>` and its valid values for the first bad field."""
        cfg = self.resolved()
        _check_choice("norm", cfg.norm, NORMS)
        _check_choice("pos_emb", cfg.pos_emb, POS_EMBS)
        _check_choice("mlp", cfg.mlp, MLPS)
        _check_choice("proj_init", cfg.proj_init, PROJ_INITS)
        for key in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "mlp_ratio"):
            value = getattr(cfg, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{key} must be an integer >= 1, got {value!r}")
        if self.head_dim is None and cfg.n_embd % cfg.n_head != 0:
            raise ValueError(
                f"model.n_embd ({cfg.n_embd}) must be divisible by model.n_head ({cfg.n_head}) "
                "when model.head_dim is unset; set model.head_dim to decouple them"
            )
        if isinstance(cfg.head_dim, bool) or not isinstance(cfg.head_dim, int) or cfg.head_dim < 1:
            raise ValueError(f"model.head_dim must be an integer >= 1 or unset, got {cfg.head_dim!r}")
        if cfg.pos_emb == "rope" and cfg.head_dim % 2 != 0:
            raise ValueError(f"model.head_dim must be even for model.pos_emb='rope', got {cfg.head_dim}")
        if not cfg.rope_base > 1.0:
            raise ValueError(f"model.rope_base must be > 1, got {cfg.rope_base}")
        if not cfg.norm_eps > 0.0:
            raise ValueError(f"model.norm_eps must be > 0, got {cfg.norm_eps}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
        if not cfg.init_std > 0.0:
            raise ValueError(f"model.init_std must be > 0, got {cfg.init_std}")

    @property
    def attn_dim(self) -> int:
        """Attention width n_head * head_dim (rows of q, k and v each); call on a resolved config."""
        return self.n_head * self.head_dim


def _check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"model.{key} must be one of {list(choices)}, got {value!r}")
