"""Key/value cache for autoregressive generation: each layer's keys and values of the positions seen so far.

With a cache, `GPT.forward(idx, cache=cache)` computes only the new positions: their queries attend to the cached
keys plus their own (causally), so generating n tokens costs n single-position forwards after one forward of the
prompt, instead of n forwards over the whole, growing sequence. The logits equal the full forward's
(tests/model/test_generate.py).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of `n_layer` layers for up to `max_len` positions of a batch, allocated on first use (in
    the dtype and device of the first keys, e.g. bf16 under autocast). `length` positions are filled."""

    def __init__(self, n_layer: int, max_len: int):
        self.n_layer, self.max_len = n_layer, max_len
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def layer(self, index: int) -> "LayerKV":
        return LayerKV(self, index, self.length)

    def advance(self, steps: int) -> None:
        """Called by the model once all layers have stored the new positions."""
        self.length += steps

    def reset(self, length: int = 0) -> None:
        """Forget the positions from `length` on."""
        self.length = length


class LayerKV:
    """One layer's view of the cache during one forward: the new positions start at `start`."""

    def __init__(self, cache: KVCache, index: int, start: int):
        self.cache, self.index, self.start = cache, index, start

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, T, H, D) at positions start..start+T-1; return the keys and values of 0..start+T-1."""
        cache, i, end = self.cache, self.index, self.start + k.shape[1]
        if end > cache.max_len:
            raise ValueError(f"KVCache: {end} positions exceed its max_len {cache.max_len}")
        if cache.keys[i] is None or cache.keys[i].shape[0] != k.shape[0]:
            shape = (k.shape[0], cache.max_len, *k.shape[2:])
            cache.keys[i] = k.new_zeros(shape)
            cache.values[i] = v.new_zeros(shape)
        cache.keys[i][:, self.start:end] = k
        cache.values[i][:, self.start:end] = v
        return cache.keys[i][:, :end], cache.values[i][:, :end]

    def causal_mask(self, steps: int, device: torch.device) -> torch.Tensor | None:
        """Boolean (steps, start+steps) mask letting new position start+i see keys 0..start+i; None where no mask
        or the plain causal one (start = 0) does."""
        if self.start == 0 or steps == 1:
            return None
        return torch.ones(steps, self.start + steps, dtype=torch.bool, device=device).tril(self.start)
