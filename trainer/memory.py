"""A lower bound on a run's memory, checked before anything is built, so an impossible shape (e.g.
``--model.block_size=100000000``) is refused with one line instead of meeting the OOM killer minutes later.

The bound counts only what a step cannot do without, per rank, in bytes:

- weights, gradients and two optimizer buffers in fp32: 16 bytes per parameter (split over the ranks under fsdp), where the parameters are
  ``n_layer * (C*A*4 + 2*C*mlp_ratio*C)`` (attention q/k/v/proj of width ``A = n_head*head_dim``, the MLP) plus the
  vocabulary matrix (twice when untied) and a learned position table (``block_size * C``);
- RoPE's cos/sin tables: ``2 * block_size * head_dim/2`` fp32 values (built whole at model construction);
- the activations one micro-batch keeps for the backward: at least ``12 * C`` values per token and layer (q, k, v,
  the attention output, the MLP's input and its ``mlp_ratio * C`` hidden values, norms and residual), in 2 bytes
  under bf16 autocast, else 4; attention scores are not counted (flash/memory-efficient kernels avoid them).

Real use is higher (fp32 logits chunks, allocator slack, the CPU attention's score matrix, compile workspaces), so
a run refused here could never have run; one that passes may still not fit.
"""
from __future__ import annotations

import os

import torch

from configs.base import ConfigError


def _total_memory(device: str) -> tuple[int, str] | None:
    """(bytes, what) of the memory a rank may use: the GPU's total memory, or the machine's RAM."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory, f"the GPU's {props.total_memory / 2**30:.0f} GiB ({props.name})"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return ram, f"this machine's {ram / 2**30:.0f} GiB of RAM"


def estimate(cfg, world_size: int = 1) -> dict[str, int]:
    """Lower bounds in bytes per rank of each part (see the module docstring; under fsdp the weights' part is split
    over all ``world_size`` ranks, the most any sharding can split it)."""
    m, t = cfg.model.resolved(), cfg.train  # n_layer/n_head/n_embd from model.preset where unset
    width, layers, T = m.n_embd, m.n_layer, m.block_size
    head_dim = m.head_dim or width // m.n_head
    attn = m.n_head * head_dim
    params = layers * (4 * width * attn + 2 * m.mlp_ratio * width * width)
    params += m.vocab_size * width * (1 if m.tie_embeddings else 2)
    params += T * width if m.pos_emb == "learned" else 0
    half = t.device != "cpu" and torch.cuda.is_available() and t.dtype in ("auto", "bfloat16")
    shards = world_size if t.parallel != "ddp" else 1
    parts = {"weights, gradients and optimizer state": 16 * params // shards,
             "activations of one micro-batch": t.micro_batch_size * T * layers * 12 * width * (2 if half else 4)}
    if m.pos_emb == "rope":
        parts["RoPE tables"] = 2 * T * (head_dim // 2) * 4
    return parts


def check_fits(cfg, world_size: int = 1) -> None:
    """Raise ConfigError naming the settings when the lower bound exceeds the memory of a rank's device."""
    parts, total = estimate(cfg, world_size), _total_memory(cfg.train.device)
    if total is None or sum(parts.values()) <= total[0]:
        return
    need = sum(parts.values())
    detail = ", ".join(f"{name} {size / 2**30:,.1f} GiB" for name, size in parts.items())
    raise ConfigError(f"model.block_size={cfg.model.block_size} with train.micro_batch_size="
                     f"{cfg.train.micro_batch_size} needs at least {need / 2**30:,.0f} GiB per rank ({detail}), more "
                     f"than {total[1]}; lower model.block_size or train.micro_batch_size (or the model's size)")
