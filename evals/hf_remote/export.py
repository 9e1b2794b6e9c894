"""Config and weights of an export through the remote code of this folder (settings GPT-2 cannot compute)."""

from __future__ import annotations

import torch

from model.hf_gpt2 import exported_vocab


def remote_config(cfg) -> dict:
    """config.json for configuration_clipgpt.ClipGPTConfig / modeling_clipgpt.ClipGPTForCausalLM."""
    cfg = cfg.resolved()
    vocab = exported_vocab(cfg)
    keys = ("n_layer", "n_head", "n_embd", "head_dim", "block_size", "norm", "norm_affine", "norm_eps", "pos_emb",
            "rope_base", "mlp", "mlp_ratio", "qk_norm", "bias")
    return {"architectures": ["ClipGPTForCausalLM"], "model_type": "clipgpt",
            "auto_map": {"AutoConfig": "configuration_clipgpt.ClipGPTConfig",
                         "AutoModelForCausalLM": "modeling_clipgpt.ClipGPTForCausalLM"},
            **{key: getattr(cfg, key) for key in keys}, "vocab_size": vocab,
            "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": vocab - 1, "eos_token_id": vocab - 1,
            "torch_dtype": "float32"}


def remote_state_dict(model) -> dict[str, torch.Tensor]:
    """Our parameters under their own names (the remote model uses them), padded rows dropped, fp32 on the CPU."""
    vocab = exported_vocab(model.config)
    out = {}
    for name, param in model.named_parameters():  # tied: head.weight is not listed (HF ties it on load)
        tensor = param.detach()[:vocab] if name in ("embed.weight", "head.weight") else param.detach()
        out[name] = tensor.float().cpu().contiguous().clone()
    return out
