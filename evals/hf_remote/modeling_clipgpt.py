"""The clipgpt GPT as a Hugging Face causal LM (written by clipgpt's `python -m evals.export_hf`).

    AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)

The same computation as clipgpt's model/gpt.py and model/layers.py, with the same parameter names: pre-norm
blocks x + attn(norm1(x)), x + mlp(norm2(x)); norms LayerNorm or RMSNorm (optionally without gains); learned
positions or RoPE (half-split pairs, angles t * base^(-2i/head_dim)); optional QK-norm (RMSNorm over head_dim,
before RoPE); MLP activation gelu, gelu_tanh or relu2 = (sqrt(2) relu(x))^2; a tied or untied head. It computes
the full sequence each call (no KV cache), and only a causal mask: `attention_mask` must be all ones.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

try:
    from .configuration_clipgpt import ClipGPTConfig
except ImportError:  # loaded as a plain module
    from configuration_clipgpt import ClipGPTConfig


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, affine):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x):
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, (self.dim,), weight, self.eps)


def build_norm(cfg, dim):
    if cfg.norm == "layernorm":
        return nn.LayerNorm(dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine,
                            bias=cfg.bias and cfg.norm_affine)
    return RMSNorm(dim, cfg.norm_eps, cfg.norm_affine)


def rope_tables(head_dim, seq_len, base, device):
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64, device=device), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        width = cfg.n_head * cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * width, bias=cfg.bias)
        self.proj = nn.Linear(width, cfg.n_embd, bias=cfg.bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps, cfg.norm_affine)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps, cfg.norm_affine)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, rope):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.activation = cfg.mlp

    def forward(self, x):
        h = self.fc(x)
        if self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        else:
            h = (math.sqrt(2.0) * F.relu(h)).square()
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.attn = build_norm(cfg, cfg.n_embd), Attention(cfg)
        self.norm2, self.mlp = build_norm(cfg, cfg.n_embd), MLP(cfg)

    def forward(self, x, rope):
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class ClipGPTForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ClipGPTConfig
    base_model_prefix = "clipgpt"
    _no_split_modules = ["Block"]
    _tied_weights_keys = {"head.weight": "embed.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_embed = nn.Embedding(config.block_size, config.n_embd) if config.pos_emb == "learned" else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.final_norm = build_norm(config, config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def get_output_embeddings(self):
        return self.head

    def set_output_embeddings(self, value):
        self.head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("clipgpt: attention_mask with padding (zeros) is not supported; pass unpadded rows")
        T = input_ids.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"clipgpt: sequence length {T} exceeds block_size {self.config.block_size}")
        x = self.embed(input_ids)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(T, device=input_ids.device))
        rope = None
        if self.config.pos_emb == "rope":
            rope = rope_tables(self.config.head_dim, T, self.config.rope_base, input_ids.device)
        for block in self.blocks:
            x = block(x, rope)
        logits = self.head(self.final_norm(x))
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids[:, -self.config.block_size:]}
