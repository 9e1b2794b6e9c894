"""Our GPT in Hugging Face's GPT-2 format (transformers' `GPT2LMHeadModel`), both ways, with no transformers import.

The conversion is a table of names and transposes (`weight_table`): HF's GPT-2 keeps its attention and MLP
matrices in `Conv1D` modules, stored (in, out), i.e. the transpose of our `nn.Linear` (out, in); embeddings and
norms are the same tensors under other names. The fused q/k/v matrix has the same row order in both (q, k, v
blocks of n_head * head_dim rows each), so it needs only the transpose.

Settings and what they map to (`config_from_hf`, `hf_config`): norm = LayerNorm (eps `layer_norm_epsilon`),
learned positions (`n_positions` = block_size), MLP activation `gelu` (exact) or `gelu_new` / `gelu_pytorch_tanh`
(our `gelu_tanh`), hidden width `n_inner` (= mlp_ratio * n_embd), `tie_word_embeddings`. HF's GPT-2 always has
biases and norm gains; ours without them export exactly as zero biases and unit gains.

The vocabulary: HF holds the tokenizer's rows only (50257 for GPT-2); our head may be padded past them
(model.vocab_size, rows >= model.tokenizer_vocab_size have logits -inf), so export drops the padded rows and import
adds zero ones.
"""

from __future__ import annotations

import json
from pathlib import Path
import torch

from configs.base import ConfigError
from model.config import PRESETS, ModelConfig

# HF's activation_function -> our model.mlp
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
IGNORED_HF_KEYS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers versions
PAD_MULTIPLE = 128  # the vocabulary padding rule of model.vocab_size's default (50257 -> 50304)


# ----------------------------------------------------------------------------- configs

def read_hf_config(directory: str | Path, key: str = "model.init_from") -> dict:
    """The config.json of a local HF model directory; errors name `key` and the path."""
    directory = Path(directory)
    path = directory / "config.json"
    if not directory.is_dir():
        raise ConfigError(f"{key}={str(directory)!r}: no such directory (a local Hugging Face GPT-2 directory "
                          f"with config.json and {' or '.join(WEIGHT_FILES)})")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{key}={str(directory)!r}: no config.json in it") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{key}: {path} is not readable JSON ({err})") from None


def config_from_hf(hf: dict, where: str) -> dict:
    """Our `model` settings equal to an HF GPT-2 config (vocab_size is the tokenizer's rows, unpadded)."""
    if hf.get("model_type") != "gpt2":
        raise ConfigError(f"{where}: model_type {hf.get('model_type')!r} is not 'gpt2' (only GPT-2 checkpoints "
                          f"are imported)")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in HF_ACTIVATIONS:
        raise ConfigError(f"{where}: activation_function {activation!r} has no model.mlp equivalent (known: "
                          f"{sorted(HF_ACTIVATIONS)})")
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if hf.get(flag):
            raise ConfigError(f"{where}: {flag}=true has no equivalent in our GPT")
    if hf.get("scale_attn_weights", True) is not True:
        raise ConfigError(f"{where}: scale_attn_weights=false (no 1/sqrt(head_dim)) has no equivalent in our GPT")
    n_embd, n_head = int(hf["n_embd"]), int(hf["n_head"])
    inner = hf.get("n_inner") or 4 * n_embd
    if inner % n_embd:
        raise ConfigError(f"{where}: n_inner {inner} is not a multiple of n_embd {n_embd} (model.mlp_ratio)")
    return dict(n_layer=int(hf["n_layer"]), n_head=n_head, n_embd=n_embd, head_dim=n_embd // n_head,
                block_size=int(hf["n_positions"]), tokenizer_vocab_size=int(hf["vocab_size"]), norm="layernorm",
                norm_affine=True, norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), pos_emb="learned",
                mlp=HF_ACTIVATIONS[activation], mlp_ratio=inner // n_embd, qk_norm=False, bias=True,
                tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def fill_from_hf(model: dict) -> dict:
    """The `model` section's raw values (preset + flags) with the shape of `model.init_from` filled in.

    A key given explicitly (in the preset file, by model.preset, or as a flag) must equal the HF config's value;
    otherwise it is an error naming both. vocab_size, when not given, is the HF vocabulary padded up to a multiple
    of 128 (the padded rows take no probability); given, it must hold the HF vocabulary.
    """
    directory = model["init_from"]
    where = f"model.init_from={directory!r}"
    derived = config_from_hf(read_hf_config(directory), where)
    explicit = dict(model)
    if explicit.get("preset") in PRESETS:
        explicit = {**PRESETS[explicit["preset"]], **explicit}
    filled = dict(model)
    for key, value in derived.items():
        if key in explicit and explicit[key] is not None and explicit[key] != value:
            source = " (from model.preset)" if key not in model else ""
            raise ConfigError(f"model.{key}={explicit[key]!r}{source} conflicts with {where}, whose config gives "
                              f"{value!r}: drop the setting or make it {value!r}")
        filled[key] = value
    tokens = derived["tokenizer_vocab_size"]
    if "vocab_size" in model:
        if model["vocab_size"] < tokens:
            raise ConfigError(f"model.vocab_size={model['vocab_size']} is smaller than the vocabulary of {where} "
                              f"({tokens}): drop it or make it >= {tokens}")
    else:
        filled["vocab_size"] = -(-tokens // PAD_MULTIPLE) * PAD_MULTIPLE  # 50257 -> 50304
    return filled


def gpt2_export_problems(cfg: ModelConfig) -> list[str]:
    """The settings of `cfg` that HF's GPT2LMHeadModel cannot compute (empty: it computes exactly our GPT)."""
    cfg = cfg.resolved()
    problems = []
    if cfg.norm != "layernorm":
        problems.append(f"model.norm={cfg.norm!r} (GPT-2 has LayerNorm)")
    if cfg.pos_emb != "learned":
        problems.append(f"model.pos_emb={cfg.pos_emb!r} (GPT-2 has learned positions)")
    if cfg.mlp not in TO_HF_ACTIVATION:
        problems.append(f"model.mlp={cfg.mlp!r} (GPT-2 has gelu or gelu_tanh)")
    if cfg.qk_norm:
        problems.append("model.qk_norm=true (GPT-2 has no QK-norm)")
    if cfg.head_dim * cfg.n_head != cfg.n_embd:
        problems.append(f"model.head_dim={cfg.head_dim} with n_head={cfg.n_head} != n_embd={cfg.n_embd} "
                        f"(GPT-2's attention width is n_embd)")
    return problems


def exported_vocab(cfg: ModelConfig) -> int:
    """Rows that leave in an export: the tokenizer's, without the padding."""
    return cfg.padded_from or cfg.vocab_size


def hf_config(cfg: ModelConfig) -> dict:
    """config.json of a GPT2LMHeadModel computing our GPT `cfg` (check `gpt2_export_problems` first)."""
    cfg = cfg.resolved()
    eot = exported_vocab(cfg) - 1
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": exported_vocab(cfg), "n_positions": cfg.block_size, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.mlp_ratio * cfg.n_embd,
        "activation_function": TO_HF_ACTIVATION[cfg.mlp], "layer_norm_epsilon": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout, "initializer_range": cfg.init_std, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "use_cache": True,
        "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32",
    }


# ----------------------------------------------------------------------------- weights

def weight_table(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """(our name, HF name, transposed) for every tensor of HF's GPT-2 computing `cfg` (`lm_head` only if untied)."""
    rows = [("embed.weight", "transformer.wte.weight", False), ("pos_embed.weight", "transformer.wpe.weight", False)]
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}", f"transformer.h.{i}"
        for our_part, hf_part, transposed in (("norm1", "ln_1", False), ("attn.qkv", "attn.c_attn", True),
                                              ("attn.proj", "attn.c_proj", True), ("norm2", "ln_2", False),
                                              ("mlp.fc", "mlp.c_fc", True), ("mlp.proj", "mlp.c_proj", True)):
            rows.append((f"{ours}.{our_part}.weight", f"{theirs}.{hf_part}.weight", transposed))
            rows.append((f"{ours}.{our_part}.bias", f"{theirs}.{hf_part}.bias", False))
    rows += [("final_norm.weight", "transformer.ln_f.weight", False),
             ("final_norm.bias", "transformer.ln_f.bias", False)]
    if not cfg.tie_embeddings:
        rows.append(("head.weight", "lm_head.weight", False))
    return rows


def _missing_tensor(model, name: str) -> torch.Tensor:
    """The value our GPT computes with where it has no tensor: zero biases, unit norm gains."""
    d = model.config.n_embd
    module_name, _, kind = name.rpartition(".")
    module = model.get_submodule(module_name)
    size = getattr(module, "out_features", None) or d
    device = model.embed.weight.device
    return torch.ones(size, device=device) if kind == "weight" else torch.zeros(size, device=device)


def to_hf_state_dict(model) -> dict[str, torch.Tensor]:
    """Our GPT's weights under HF GPT-2 names, contiguous fp32 copies on the CPU, padded rows dropped."""
    cfg = model.config
    ours = dict(model.named_parameters())
    vocab = exported_vocab(cfg)
    out = {}
    for name, hf_name, transposed in weight_table(cfg):
        tensor = ours[name].detach() if name in ours else _missing_tensor(model, name)
        if name in ("embed.weight", "head.weight"):
            tensor = tensor[:vocab]
        out[hf_name] = (tensor.t() if transposed else tensor).float().cpu().contiguous().clone()
    return out


def read_hf_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local HF checkpoint: model.safetensors (or its sharded index) or pytorch_model.bin."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"model.init_from={str(directory)!r} holds safetensors: pip install safetensors "
                              f"(or the extra: pip install -e '.[hf]')") from None
        if (directory / "model.safetensors").is_file():
            return load_file(directory / "model.safetensors")
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        tensors = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(load_file(directory / shard))
        return tensors
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ConfigError(f"model.init_from={str(directory)!r}: none of {', '.join(WEIGHT_FILES)} in it")


@torch.no_grad()
def load_hf_weights(model, directory: str | Path) -> None:
    """Copy a local HF GPT-2 checkpoint into our GPT (built with the settings `fill_from_hf` gives)."""
    cfg = model.config
    where = f"model.init_from={str(directory)!r}"
    tensors = {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
               for k, v in read_hf_weights(directory).items() if not k.endswith(IGNORED_HF_KEYS)}
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)  # tied: the same matrix as wte
    table = weight_table(cfg)
    expected = {hf_name for _, hf_name, _ in table}
    missing, unknown = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or unknown:
        raise ConfigError(f"{where}: its weights do not match its config: missing {missing[:4]}, unexpected "
                          f"{unknown[:4]}")
    params = dict(model.named_parameters())
    vocab = exported_vocab(cfg)
    for name, hf_name, transposed in table:
        tensor = tensors[hf_name].t() if transposed else tensors[hf_name]
        param = params[name]
        if name in ("embed.weight", "head.weight"):
            param.zero_()  # the padded rows: never used (logits -inf), zero
            param = param[:vocab]
        if tensor.shape != param.shape:
            raise ConfigError(f"{where}: {hf_name} has shape {tuple(tensors[hf_name].shape)}, our {name} needs "
                              f"{tuple(param.shape)}{' transposed' if transposed else ''}")
        param.copy_(tensor)


def from_pretrained(directory: str | Path, **overrides) -> "torch.nn.Module":
    """Our GPT with the shape and weights of a local HF GPT-2 directory (`overrides`: other model settings)."""
    from model.gpt import GPT

    settings = fill_from_hf({**overrides, "init_from": str(directory)})
    model = GPT(ModelConfig(**settings))
    load_hf_weights(model, directory)
    return model
