"""Sample text from a trained run: the newest valid checkpoint of RUN_DIR (or --checkpoint), with a KV cache.

    python sample.py --run out/tiny --prompt "The os module" --max-new-tokens 100 --seed 0
    python sample.py --checkpoint out/tiny/checkpoints/step_0000200.pt --num-samples 3 --temperature 0.8 --top-k 200

Prints each sample (the prompt followed by its continuation), separated by lines of dashes. The same seed gives
the same samples on the same device. `--prompt FILE:path` reads the prompt from a file; an empty prompt starts
from <|endoftext|> (a new document).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from configs.base import ConfigError
from configs.cli import HelpFormatter
from data.tokenizer import EOT, EOT_TEXT, VOCAB_SIZE, gpt2_encoding
from evals.checkpoint_model import add_allow_unverified, autocast, load_model
from model.generate import generate

SEPARATOR = "-" * 40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--run", help="run directory (train.out_dir); its newest valid checkpoint is used")
    parser.add_argument("--checkpoint", help="a checkpoint file instead of the run's newest")
    parser.add_argument("--prompt", default="\n", help="text to continue, or FILE:path to read it from a file "
                                                        "(default: %(default)r)")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate per sample")
    parser.add_argument("--num-samples", type=int, default=1, help="samples, generated together as one batch")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy")
    parser.add_argument("--top-k", type=int, default=200, help="sample among the k most likely tokens (0 = all)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the sampling generator")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    add_allow_unverified(parser)
    args = parser.parse_args(argv)
    for name in ("max_new_tokens", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k < 0:
        parser.error(f"--top-k must be >= 0, got {args.top_k}")
    return args


def prompt_text(prompt: str) -> str:
    if prompt.startswith("FILE:"):
        path = Path(prompt[5:])
        if not path.is_file():
            raise ConfigError(f"--prompt FILE:{path}: no such file")
        return path.read_text(encoding="utf-8")
    return prompt


def samples(loaded, text: str, *, max_new_tokens: int, num_samples: int = 1, temperature: float = 0.8,
            top_k: int | None = 200, seed: int = 1337) -> list[str]:
    """`num_samples` continuations of `text` (each returned with the prompt in front)."""
    enc = gpt2_encoding()
    device = next(loaded.model.parameters()).device
    ids = enc.encode(text, allowed_special={EOT_TEXT}) or [EOT]
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(loaded.model, idx, max_new_tokens, temperature=temperature, top_k=top_k or None,
                   generator=generator, vocab_limit=VOCAB_SIZE, autocast=autocast(device))
    return [enc.decode(row) for row in out.tolist()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        loaded = load_model(args.run, args.checkpoint, args.device, args.allow_unverified)
        text = prompt_text(args.prompt)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{loaded.path} (step {loaded.step})", file=sys.stderr)
    for i, sample in enumerate(samples(loaded, text, max_new_tokens=args.max_new_tokens,
                                       num_samples=args.num_samples, temperature=args.temperature,
                                       top_k=args.top_k, seed=args.seed)):
        if i:
            print(SEPARATOR)
        print(sample)
    return 0


if __name__ == "__main__":
    sys.exit(main())
