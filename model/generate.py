"""Sampling from a GPT with a KV cache: temperature, top-k, a seeded generator (deterministic on one device).

    tokens = generate(model, prompt_ids, max_new_tokens=100, temperature=0.8, top_k=200, generator=gen)

The prompt is run once to fill the cache; each new token is then one single-position forward. A sequence that
outgrows `block_size` keeps its last `block_size // 2` tokens as the new context (one forward refills the cache),
so a long generation costs ~2 forwards of the context per block_size / 2 tokens instead of one per token.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from model.kv_cache import KVCache


def sample_next(logits: torch.Tensor, *, temperature: float, top_k: Optional[int],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """(B, vocab) logits of the next position -> (B, 1) token ids: argmax if temperature == 0, else a draw from
    softmax(logits / temperature) restricted to the top_k most likely tokens (all if top_k is None)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
             vocab_limit: Optional[int] = None, autocast: Optional[contextlib.AbstractContextManager] = None,
             stop: Optional[Callable[[torch.Tensor], bool]] = None) -> torch.Tensor:
    """idx (B, T) prompt ids -> (B, T + max_new_tokens) ids. `vocab_limit`: never sample ids >= it (the padded
    rows of the embedding past the tokenizer's vocabulary); `autocast`: a context for the forwards (e.g. bf16);
    `stop`: called with the (B, n) ids generated so far after each new token, True ends the generation early
    (e.g. at a stop string; it reads the ids on the host)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"generate: idx must be (batch, seq_len) with seq_len >= 1, got {tuple(idx.shape)}")
    block = model.config.block_size
    was_training = model.training
    model.eval()
    cache = KVCache(model.config.n_layer, block)
    out = idx
    context = idx[:, -block:]
    try:
        for _ in range(max_new_tokens):
            if cache.length + context.shape[1] > block:  # outgrown: restart from the last block // 2 tokens
                cache.reset()
                context = out[:, -max(1, block // 2):]
            with autocast or contextlib.nullcontext():
                logits, _ = model(context, cache=cache)
            logits = logits[:, -1, :]
            if vocab_limit is not None and vocab_limit < logits.shape[-1]:
                logits[:, vocab_limit:] = float("-inf")
            context = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)
            out = torch.cat([out, context], dim=1)
            if stop is not None and stop(out[:, idx.shape[1]:]):
                break
    finally:
        model.train(was_training)
    return out
