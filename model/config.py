"""The `model` section of the config tree: `ModelConfig` and the size presets.

Presets and explicit values: `preset` names a row of `PRESETS`, which supplies `n_layer`, `n_head` and `n_embd`.
A preset only fills the fields left at None, so explicit values always win; e.g. `preset="gpt2-124m"` with
`n_head=6` is GPT-2 124M with head dim 128 (the Clipped Scion NanoGPT shape). Without a preset all three must be
given. `resolved()` returns the filled-in copy the model is built from. Each key's own range is declared on its
field (`check=`); `check()` holds the constraints between keys, on the resolved copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from configs.base import ConfigError, Section, at_least, field, greater_than, in_range, one_of, positive

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


@dataclass
class ModelConfig(Section):
    """GPT architecture. Defaults (with a size preset) give classic GPT-2; see docs/model.md for the modern recipe."""

    KEY = "model"

    preset: Optional[str] = field(None, check=one_of(sorted(PRESETS)),
                                  help="size preset filling n_layer/n_head/n_embd left unset (see model/config.py)")
    n_layer: Optional[int] = field(None, check=at_least(1), help="number of transformer blocks")
    n_head: Optional[int] = field(None, check=at_least(1), help="attention heads per block")
    n_embd: Optional[int] = field(None, check=at_least(1), help="residual stream width d")
    head_dim: Optional[int] = field(None, check=at_least(1), help="width of one attention head; unset = "
                                                                   "n_embd // n_head (attention width n_head*head_dim)")
    vocab_size: int = field(50304, check=at_least(1), help="embedding/head rows: GPT-2's 50257 tokens padded up to "
                                                             "a multiple of 128 (faster matmuls)")
    tokenizer_vocab_size: Optional[int] = field(50257, check=at_least(1), help="ids the tokenizer can emit (GPT-2: "
                                                "50257); the padded rows from here to vocab_size get logits -inf, so "
                                                "they take no probability in the loss, evaluation or sampling "
                                                "(None, or >= vocab_size: no padding)")
    block_size: int = field(1024, check=at_least(1), help="maximum sequence length (context) in tokens")
    norm: Literal["layernorm", "rmsnorm"] = field("layernorm", help="normalization of the pre-norm blocks and the "
                                                                    "final norm")
    norm_affine: bool = field(True, help="learnable norm gains (False: parameter-free norms as in the Scion NanoGPT)")
    norm_eps: float = field(1e-5, check=positive, help="epsilon inside LayerNorm/RMSNorm")
    pos_emb: Literal["learned", "rope"] = field("learned", help="positions: learned absolute table (GPT-2) or "
                                                                "rotary (RoPE)")
    rope_base: float = field(10000.0, check=greater_than(1), help="RoPE base theta (frequencies "
                                                                   "base^(-2i/head_dim))")
    mlp: Literal["gelu", "gelu_tanh", "relu2"] = field("gelu", help="MLP activation: gelu (exact, erf), gelu_tanh "
                                                                    "(the tanh approximation of OpenAI's GPT-2 and "
                                                                    "HF's gelu_new) or relu2 = (sqrt(2)*relu(x))^2 "
                                                                    "(Clipped Scion)")
    mlp_ratio: int = field(4, check=at_least(1), help="MLP hidden width as a multiple of n_embd")
    qk_norm: bool = field(False, help="RMSNorm queries and keys per head before attention")
    tie_embeddings: bool = field(True, help="output head shares the token embedding matrix")
    bias: bool = field(True, help="biases in linear layers and LayerNorm (GPT-2: true)")
    dropout: float = field(0.0, check=in_range(0, 1, high_open=True), help="dropout on embeddings, attention and "
                                                                           "residual branches")
    init_std: float = field(0.02, check=positive, help="std of the normal init of weights and embeddings")
    loss_chunk_mib: Optional[float] = field(None, check=positive, help="memory budget (MiB) of one chunk of fp32 "
                                            "logits in the training loss (model/loss.py); unset = 1024 on a GPU "
                                            "(2^28 logits), 128 elsewhere")
    init_from: Optional[str] = field(None, help="local Hugging Face GPT-2 directory (config.json + model.safetensors "
                                                "or pytorch_model.bin): the shape comes from its config (a differing "
                                                "explicit setting is an error), the weights from its files")
    proj_init: Literal["scaled", "zero"] = field("scaled", help="residual output projections: scaled = "
                                                                "init_std/sqrt(2*n_layer) (GPT-2), zero (Scion code)")

    def resolved(self) -> "ModelConfig":
        """A copy with `n_layer/n_head/n_embd` filled from `preset` where unset and `head_dim` filled in."""
        filled = {}
        for key in ("n_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if value is None:
                if self.preset is None:
                    raise ConfigError(f"model.{key} is not set: give it or choose model.preset from "
                                      f"{sorted(PRESETS)}")
                value = PRESETS[self.preset][key]
            filled[key] = value
        cfg = dataclasses.replace(self, **filled)
        if cfg.head_dim is None and cfg.n_head > 0 and cfg.n_embd % cfg.n_head == 0:
            cfg.head_dim = cfg.n_embd // cfg.n_head
        return cfg

    def check(self) -> None:
        """Constraints between keys (each key's own range is its field's `check`)."""
        cfg = self.resolved()
        if self.head_dim is None and cfg.n_embd % cfg.n_head != 0:
            raise ConfigError(f"model.n_embd ({cfg.n_embd}) must be divisible by model.n_head ({cfg.n_head}) "
                              "when model.head_dim is unset; set model.head_dim to decouple them")
        if cfg.pos_emb == "rope" and cfg.head_dim % 2 != 0:
            raise ConfigError(f"model.head_dim must be even for model.pos_emb='rope', got {cfg.head_dim}")

    @property
    def padded_from(self) -> Optional[int]:
        """First padded vocabulary row (its logits are -inf), or None when every row is a token."""
        limit = self.tokenizer_vocab_size
        return limit if limit is not None and limit < self.vocab_size else None

    @property
    def attn_dim(self) -> int:
        """Attention width n_head * head_dim (rows of q, k and v each); call on a resolved config."""
        return self.n_head * self.head_dim

