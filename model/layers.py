"""Building blocks of the GPT: norms, rotary embeddings, causal self-attention, MLP and the pre-norm block."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019, eq. 4): y = x / sqrt(mean(x^2) + eps) * g, over the last dimension."""

    def __init__(self, dim: int, eps: float, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)  # bf16 q/k under autocast: fused kernel
        return F.rms_norm(x, (self.dim,), weight, self.eps)


def build_norm(cfg: ModelConfig, dim: int) -> nn.Module:
    """The config's normalization over `dim` features: LayerNorm (bias iff `cfg.bias`) or RMSNorm."""
    if cfg.norm == "layernorm":
        return nn.LayerNorm(dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine, bias=cfg.bias and cfg.norm_affine)
    return RMSNorm(dim, eps=cfg.norm_eps, affine=cfg.norm_affine)  # model.norm is checked by ModelConfig


def rope_tables(head_dim: int, max_len: int, base: float, dtype: torch.dtype = torch.float32):
    """RoPE angles (Su et al. 2021, eq. 15): theta_{t,i} = t * base^(-2i/head_dim) for t < max_len, i < head_dim/2.

    Returns (cos, sin), each (max_len, head_dim/2), computed in float64 and cast to `dtype`.
    """
    if head_dim % 2 != 0:
        raise ValueError(f"model.head_dim must be even for RoPE, got {head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class RotaryEmbedding(nn.Module):
    """Holds the RoPE cos/sin tables for positions 0..max_len-1 in fp32 as non-persistent buffers (not in the state
    dict); one instance is shared by every block."""

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        cos, sin = rope_tables(head_dim, max_len, base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, seq_len: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of positions start..start+seq_len-1, each (seq_len, head_dim/2)."""
        return self.cos[start:start + seq_len], self.sin[start:start + seq_len]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, H, D) by its positions' angles (Su et al. 2021, eq. 34), pairs (x[..., i], x[..., i + D/2])
    (the half-split layout of GPT-NeoX): (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos), i.e. (x1 + i x2) e^{i theta}.

    Every head gets the same rotation, so <R_m q, R_n k> depends on the positions only through m - n.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = cos[None, :, None, :].to(x.dtype)
    sin = sin[None, :, None, :].to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


RopeTables = Optional[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention (Vaswani et al. 2017): softmax(q k^T / sqrt(head_dim) + causal mask) v, then proj.

    Optional QK-norm (parameter-shared across heads, RMSNorm over head_dim) is applied before RoPE, as in the Clipped
    Scion NanoGPT.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.dropout = cfg.dropout
        attn_dim = cfg.n_head * cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * attn_dim, bias=cfg.bias)
        self.proj = nn.Linear(attn_dim, cfg.n_embd, bias=cfg.bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, eps=cfg.norm_eps, affine=cfg.norm_affine)
            self.k_norm = RMSNorm(cfg.head_dim, eps=cfg.norm_eps, affine=cfg.norm_affine)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: torch.Tensor, rope: RopeTables = None, kv=None) -> torch.Tensor:
        """`kv` (generation, model/kv_cache.py): this layer's cache of the earlier positions' keys and values; x then
        holds the next T positions, which attend to the cached ones and causally among themselves."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        mask = None
        if kv is not None:
            k, v = kv.extend(k, v)  # (B, start + T, H, D)
            mask = kv.causal_mask(T, x.device)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0, is_causal=kv is None or kv.start == 0,
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    """Position-wise MLP: proj(act(fc(x))), act = GELU (Hendrycks & Gimpel 2016: x * Phi(x) exactly, or its tanh
    approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) that OpenAI's GPT-2 used, HF's `gelu_new`) or
    (sqrt(2) * relu(x))^2 (Clipped Scion NanoGPT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_ratio * cfg.n_embd
        self.fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.activation = cfg.mlp  # checked by ModelConfig: "gelu", "gelu_tanh" or "relu2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        else:
            h = (math.sqrt(2.0) * F.relu(h)).square()
        return self.proj(h)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)) (GPT-2's layout)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = build_norm(cfg, cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = build_norm(cfg, cfg.n_embd)
        self.mlp = MLP(cfg)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: RopeTables = None, kv=None) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.norm1(x), rope, kv))
        return x + self.resid_dropout(self.mlp(self.norm2(x)))
