"""Export a run's checkpoint to a Hugging Face model directory.

    python -m evals.export_hf --run out/tiny-gpt2 --out out/tiny-gpt2-hf
    python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('out/tiny-gpt2-hf')"

Writes model.safetensors, config.json, generation_config.json and the GPT-2 tokenizer files (vocab.json,
merges.txt, tokenizer_config.json, special_tokens_map.json; built offline from the vendored ranks,
data/hf_tokenizer.py). Which model class computes the checkpoint:

- GPT-2 settings (model.norm='layernorm', pos_emb='learned', mlp 'gelu' or 'gelu_tanh', no QK-norm, head_dim *
  n_head = n_embd; tied or not, biases or not): transformers' own `GPT2LMHeadModel`, no code of ours
  (model/hf_gpt2.py holds the name table). Its logits equal ours on the tokenizer's 50257 ids.
- Every other setting (RMSNorm, RoPE, ReLU^2, QK-norm, a decoupled head_dim: the modern block): the directory also
  gets our model's modeling file (evals/hf_remote/modeling_clipgpt.py, plain torch + transformers), loaded with
  `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`; its logits equal ours too.

The padded vocabulary rows (model.vocab_size past model.tokenizer_vocab_size) are dropped: they never carry
probability. Weights are written in float32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from configs.base import ConfigError
from configs.cli import HelpFormatter
from evals.checkpoint_model import add_checkpoint_arguments
from model.hf_gpt2 import exported_vocab, gpt2_export_problems, hf_config, to_hf_state_dict

REMOTE_DIR = Path(__file__).resolve().parent / "hf_remote"


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ConfigError("export needs the safetensors package: pip install -e '.[hf]'") from None
    save_file(tensors, str(path), metadata={"format": "pt"})


def export(model, out: str | Path) -> str:
    """Write `model` (our GPT) as an HF directory `out`; return the class that loads it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    vocab = exported_vocab(cfg)
    if not gpt2_export_problems(cfg):
        config, tensors, loader = hf_config(cfg), to_hf_state_dict(model), "GPT2LMHeadModel"
    else:
        from evals.hf_remote.export import remote_config, remote_state_dict

        config, tensors = remote_config(cfg), remote_state_dict(model)
        for name in ("configuration_clipgpt.py", "modeling_clipgpt.py"):
            shutil.copyfile(REMOTE_DIR / name, out / name)
        loader = "AutoModelForCausalLM (trust_remote_code=True)"
    save_safetensors(tensors, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    eot = vocab - 1
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": eot, "eos_token_id": eot}, indent=2) + "\n")
    from data.hf_tokenizer import write_tokenizer_files
    from data.tokenizer import VOCAB_SIZE

    if vocab == VOCAB_SIZE:
        write_tokenizer_files(out, model_max_length=cfg.block_size)
    else:
        print(f"note: no tokenizer files: the model's vocabulary ({vocab} ids) is not GPT-2's {VOCAB_SIZE}",
              file=sys.stderr)
    return loader


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_checkpoint_arguments(parser, "exported")
    parser.add_argument("--out", required=True, help="output directory (created; files in it are overwritten)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from evals.checkpoint_model import load_model

    args = parse_args(argv)
    try:
        loaded = load_model(args.run, args.checkpoint, device="cpu", allow_unverified=args.allow_unverified)
        loader = export(loaded.model, args.out)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {loaded.path} (step {loaded.step}) to {args.out}: load it with transformers' {loader}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
