"""The GPT: token (+ position) embedding, n_layer pre-norm blocks, final norm, linear head onto the vocabulary."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.kv_cache import KVCache
from model.layers import Block, RMSNorm, RotaryEmbedding, build_norm
from model.loss import chunk_elements, linear_cross_entropy

IGNORE_INDEX = -1  # targets equal to this are left out of the loss (nanoGPT / llm.c convention)


class GPT(nn.Module):
    """Decoder-only transformer (Radford et al. 2019) with the options of `ModelConfig`.

    Parameter names are a contract with `optim/` (its group rules, optim/config.py): `embed.weight`, `pos_embed.weight`,
    `blocks.{i}.{norm1,norm2}.*`, `blocks.{i}.attn.{qkv,proj,q_norm,k_norm}.*`, `blocks.{i}.mlp.{fc,proj}.*`,
    `final_norm.*`, and `head.weight` when untied. When tied, `head.weight is embed.weight`.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        cfg = cfg.resolved()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_embed = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos_emb == "learned" else None
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.block_size, cfg.rope_base) if cfg.pos_emb == "rope" else None
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_norm = build_norm(cfg, cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight  # registered first as embed.weight, so named once under that name
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init: weights and embeddings ~ N(0, init_std), biases 0, norm gains 1; the residual output
        projections (attn.proj, mlp.proj) get init_std / sqrt(2 * n_layer) (Radford et al. 2019, sec. 2.3), or 0 with
        proj_init='zero' (the Clipped Scion / modded-nanogpt code)."""
        cfg = self.config
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=cfg.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, (nn.LayerNorm, RMSNorm)):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        proj_std = cfg.init_std / math.sqrt(2 * cfg.n_layer)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                if cfg.proj_init == "zero":
                    nn.init.zeros_(proj.weight)
                else:
                    nn.init.normal_(proj.weight, mean=0.0, std=proj_std)

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None, *,
        return_logits: bool = True
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """idx (B, T) token ids -> (logits (B, T, vocab) in fp32, mean cross-entropy in fp32 or None); a float64
        model computes them in float64.

        The head matmul runs in the ambient (autocast) dtype; logits are upcast to fp32 before the softmax.
        Targets equal to -1 are ignored by the loss. The logits of padded vocabulary rows (from
        `config.padded_from` = tokenizer_vocab_size on) are -inf, so softmax, loss and sampling give them nothing.
        With a `cache` (generation), idx holds the positions after the `cache.length` cached ones, which it attends
        to; the cache then also holds these. ``return_logits=False`` (training) returns (None, loss) without
        materialising the batch's logits (model/loss.py).
        """
        if idx.dim() != 2:
            raise ValueError(f"GPT.forward: idx must have shape (batch, seq_len), got {tuple(idx.shape)}")
        T = idx.shape[1]
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"GPT.forward: sequence length {start + T} exceeds model.block_size "
                             f"{self.config.block_size}")
        x, rope = self.stem(idx, start)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, None if cache is None else cache.layer(i))
        if cache is not None:
            cache.advance(T)
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(f"GPT.forward: targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}")
        return self.tail(x, targets, return_logits)

    def stem(self, idx: torch.Tensor, start: int) -> tuple[torch.Tensor, Optional[tuple]]:
        """Token (and learned position) embeddings of idx at positions start.., and the RoPE tables for them."""
        T = idx.shape[1]
        x = self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(start, start + T, device=idx.device))
        x = self.embed_dropout(x)
        rope = self.rope(T, start) if self.rope is not None else None
        return x, rope

    def tail(self, x: torch.Tensor, targets: Optional[torch.Tensor],
             return_logits: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Final norm, head and loss of the blocks' output (see forward). The stem and the tail are separate
        methods so that a wrapper (trainer/parallel.py under FSDP) can compile them as graphs of their own."""
        x = self.final_norm(x)
        if targets is not None and not return_logits:
            return None, linear_cross_entropy(x, self.head.weight, targets, ignore_index=IGNORE_INDEX,
                                              chunk_elements=chunk_elements(self.config.loss_chunk_mib, x.device),
                                              classes=self.config.padded_from)
        logits = self.head(x)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 (fp64 stays fp64)
        if self.config.padded_from is not None:  # padded vocabulary rows are no tokens: probability 0
            logits[..., self.config.padded_from:] = float("-inf")
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (a tied matrix counted once). non_embedding=True leaves out every vocabulary or
        position matrix (embed, pos_embed and an untied head), as in Kaplan et al. 2020's N."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.embed.weight.numel()
            if self.pos_embed is not None:
                total -= self.pos_embed.weight.numel()
            if not self.config.tie_embeddings:
                total -= self.head.weight.numel()
        return total

    def flops_per_token(self, seq_len: Optional[int] = None) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B (Chowdhery et al. 2022):

            6 * (N + vocab * n_embd) + 12 * n_layer * (n_head * head_dim) * seq_len

        N = num_params(non_embedding=True); vocab * n_embd is the head matmul (tied or not; embedding lookups cost
        no FLOPs); the last term is q k^T and att v over all seq_len keys (no causal discount, as in PaLM and nanoGPT,
        so MFU compares with theirs). seq_len defaults to block_size.
        """
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        matmul_params = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.n_embd
        return 6 * matmul_params + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T
