"""HellaSwag accuracy of a run's checkpoint (Zellers et al. 2019), scored the way build-nanogpt does.

    python -m evals.hellaswag --run out/gpt2-124m --data data/hellaswag/hellaswag_val.jsonl
    torchrun --nproc_per_node=8 -m evals.hellaswag --run-dir out/gpt2-124m --data Rowan/hellaswag   # hub, online

(Under torchrun write `--run-dir`: torchrun's own parser reads `--run` as an abbreviation of its `--run-path`.)

Each example is a context and (usually four) endings, one of them right (`label`). The model reads the GPT-2
tokens of `ctx` followed by those of " " + ending (the raw text, no preprocessing), and scores ending i by the
log-likelihood of its n_i tokens given everything before them, LL_i = sum_t log p(token_t | tokens before t):

    hellaswag_acc       picks argmax_i LL_i          (the lowest summed loss)
    hellaswag_acc_norm  picks argmax_i LL_i / n_i    (the lowest mean loss per token; build-nanogpt's number)

lm-eval's `hellaswag` task differs in two ways, so its numbers are not these: (1) its acc_norm divides LL_i by
the ending's length in characters, len(ending) without the leading space (its `acc_bytes` divides by the UTF-8
bytes instead; its `acc` is the same rule as ours); (2) it preprocesses the text: the context becomes
activity_label + ": " + ctx_a + " " + ctx_b.capitalize(), and context and endings are stripped, " [title]"
becomes ". ", bracketed tags such as "[header]" are removed and double spaces collapsed. To get lm-eval's own
numbers run it on the checkpoint: `python -m evals.lm_eval --run RUN --tasks hellaswag` (evals/lm_eval.py).
Contexts longer than the model's block lose their earliest tokens.

`--data` is a local jsonl in the original HellaSwag format (one example a line with `ctx`, `endings` and an int
or string `label`, as in rowanz/hellaswag's hellaswag_val.jsonl) or, when online, a hub dataset id (the
`datasets` package; `--split`, default validation). Under torchrun every rank scores its share. The last line
printed is one JSON object {"hellaswag_acc", "hellaswag_acc_norm", "n"}; the same, with the checkpoint and data,
goes to <run>/evals/hellaswag_step_<step>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from configs.base import ConfigError
from configs.cli import HelpFormatter
from evals.checkpoint_model import add_checkpoint_arguments


class HellaSwagFormatError(ValueError):
    """A line of a HellaSwag jsonl that is not an example; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    ctx: str
    endings: tuple[str, ...]
    label: int


def parse_example(record: object, where: str) -> Example:
    """One HellaSwag record (dict with ctx, endings, label) -> Example; errors start with `where`."""
    if not isinstance(record, dict):
        raise HellaSwagFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("ctx", "endings", "label") if k not in record]
    if missing:
        raise HellaSwagFormatError(f"{where}: missing key(s) {', '.join(missing)} (a HellaSwag example has ctx, "
                                   f"endings, label)")
    ctx, endings, label = record["ctx"], record["endings"], record["label"]
    if not isinstance(ctx, str) or not ctx:
        raise HellaSwagFormatError(f"{where}: ctx must be a non-empty string, got {ctx!r}")
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e for e in endings):
        raise HellaSwagFormatError(f"{where}: endings must be a list of at least 2 non-empty strings, got "
                                   f"{endings!r}")
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
        raise HellaSwagFormatError(f"{where}: label must be an index into the {len(endings)} endings (int or "
                                   f"string), got {record['label']!r}")
    return Example(ctx, tuple(endings), label)


def read_jsonl(path: str | Path) -> list[Example]:
    path = Path(path)
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise HellaSwagFormatError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            examples.append(parse_example(record, f"{path}:{number}"))
    if not examples:
        raise HellaSwagFormatError(f"{path}: no examples")
    return examples


# The original validation file, the format read_jsonl expects (10,042 examples).
LOCAL_VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


def read_hub(name: str, split: str) -> list[Example]:
    from data.prepare.sources import hub_offline_mode, hub_unreachable
    why = None if hub_offline_mode() else hub_unreachable()
    if why is not None:  # fail at once, not after the hub client's retries (and before importing datasets)
        raise ConfigError(f"--data {name}: not a local file, and the Hugging Face Hub cannot be reached ({why}). "
                          f"Pass a local file instead: --data PATH/hellaswag_val.jsonl (rowanz/hellaswag's "
                          f"{LOCAL_VAL_URL}, fetched on a machine with network), or set HF_HUB_OFFLINE=1 to use a "
                          f"copy in the datasets cache")
    try:
        import datasets  # lazily: only the hub path needs it (and the network)
    except ImportError:
        raise ConfigError(f"--data {name}: not a local file, and the `datasets` package is not installed") from None
    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as err:  # noqa: BLE001 - offline, unknown name, unknown split: say which and why
        raise ConfigError(f"--data {name}: not a local file and not loadable from the hub "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    return [parse_example(dict(row), f"{name}[{split}] row {i}") for i, row in enumerate(rows)]


def load_examples(source: str, split: str = "validation") -> list[Example]:
    """A local jsonl file, or else a hub dataset id."""
    if Path(source).is_file():
        return read_jsonl(source)
    if Path(source).suffix in (".jsonl", ".json") or source.startswith((".", "/")):
        raise ConfigError(f"--data {source}: no such file")
    return read_hub(source, split)


# ----------------------------------------------------------------------------- scoring

def example_rows(example: Example, encode, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, mask), each (n_endings, length): context + ending per row, right-padded with 0; mask marks the
    ending tokens. Rows longer than block_size + 1 lose their earliest (context) tokens."""
    ctx = encode(example.ctx)
    rows, masks = [], []
    for ending in example.endings:
        end = encode(" " + ending)
        row, mask = (ctx + end)[-(block_size + 1):], ([0] * len(ctx) + [1] * len(end))[-(block_size + 1):]
        rows.append(row)
        masks.append(mask)
    length = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (row, m) in enumerate(zip(rows, masks)):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.bool)
    return tokens, mask


@torch.no_grad()
def ending_losses(model, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed, mean) cross-entropy of each row's masked (ending) tokens, each given all tokens before it."""
    logits, _ = model(tokens[:, :-1])
    losses = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")  # (rows, T-1); GPT: fp32
    target_mask = mask[:, 1:].to(losses.dtype)
    summed = (losses * target_mask).sum(dim=1)
    return summed, summed / target_mask.sum(dim=1).clamp(min=1)


def score(model, examples, encode, *, rank: int = 0, world_size: int = 1, autocast=None,
          progress: bool = False) -> dict:
    """Count correct predictions over this rank's share (examples rank, rank + world_size, ...), then sum over
    ranks: {"hellaswag_acc", "hellaswag_acc_norm", "n"}. Every rank runs the same number of forwards (a short
    share repeats an example without counting it), as a sharded (FSDP) model needs."""
    from contextlib import nullcontext

    from tqdm import tqdm

    from trainer.distributed import all_reduce_sum

    device = next(model.parameters()).device
    block = model.config.block_size
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # n, correct by sum, correct by mean
    rounds = -(-len(examples) // world_size)
    for j in tqdm(range(rounds), desc="hellaswag", unit="ex", disable=not progress, file=sys.stderr):
        i = rank + j * world_size
        counted = i < len(examples)
        example = examples[i if counted else 0]
        tokens, mask = example_rows(example, encode, block)
        with autocast or nullcontext():
            summed, mean = ending_losses(model, tokens.to(device), mask.to(device))
        if counted:
            counts += torch.stack([torch.ones((), device=device, dtype=torch.float64),
                                   (summed.argmin() == example.label).double(),
                                   (mean.argmin() == example.label).double()])
    model.train(was_training)
    n, correct, correct_norm = all_reduce_sum(counts).tolist()
    return {"hellaswag_acc": correct / max(n, 1), "hellaswag_acc_norm": correct_norm / max(n, 1), "n": int(n)}


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    add_checkpoint_arguments(parser, "scored")
    parser.add_argument("--data", required=True, help="HellaSwag jsonl file, or a hub dataset id (e.g. "
                                                      "Rowan/hellaswag; needs the network)")
    parser.add_argument("--split", default="validation", help="split of a hub dataset")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N examples (0 = all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when available (under torchrun: the rank's local GPU)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--out", help="result file (default: <run>/evals/hellaswag_step_<step>.json)")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error(f"--limit must be >= 0, got {args.limit}")
    return args


def main(argv: list[str] | None = None) -> int:
    from data.tokenizer import gpt2_encoding
    from evals.checkpoint_model import autocast, load_model
    from trainer.distributed import init_distributed, shutdown

    args = parse_args(argv)
    try:
        examples = load_examples(args.data, args.split)
        loaded = load_model(args.run, args.checkpoint, device="cpu", allow_unverified=args.allow_unverified)
    except (ConfigError, HellaSwagFormatError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    examples = examples[:args.limit] if args.limit else examples
    dist = init_distributed(args.device)
    try:
        model = loaded.model.to(dist.device)
        if dist.is_main:
            print(f"{loaded.path} (step {loaded.step}): {len(examples)} examples from {args.data} on "
                  f"{dist.world_size} rank(s)", file=sys.stderr)
        encode = gpt2_encoding().encode_ordinary
        result = score(model, examples, encode, rank=dist.rank, world_size=dist.world_size,
                       autocast=autocast(dist.device), progress=args.progress and dist.is_main)
        if dist.is_main:
            run_dir = Path(args.run) if args.run else loaded.path.parent.parent
            out = Path(args.out) if args.out else run_dir / "evals" / f"hellaswag_step_{loaded.step:07d}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({**result, "step": loaded.step, "checkpoint": str(loaded.path),
                                       "data": args.data, "world_size": dist.world_size}, indent=2) + "\n")
            print(f"wrote {out}", file=sys.stderr)
            print(json.dumps(result), flush=True)
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
