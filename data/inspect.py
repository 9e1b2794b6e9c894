"""Look inside token shards: ``python -m data.inspect PATH``.

For a shard file: its header, token count, number of documents and the first tokens decoded.
For a directory: validates every shard (header, size, token ids < vocab) and prints a table,
totals per split and the preparation status from ``progress.json``; exits 1 if any shard is bad.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from data import shards
from data.scan import scan_directory
from data.tokenizer import EOT, VOCAB_SIZE, gpt2_encoding


def count_documents(tokens: np.ndarray, chunk: int = 1 << 23) -> int:
    """Number of ``<|endoftext|>`` tokens, counted in chunks of a memory-mapped shard."""
    return sum(int(np.count_nonzero(tokens[i : i + chunk] == EOT)) for i in range(0, len(tokens), chunk))


def describe_shard(path: Path, n_decode: int, vocab_size: int) -> list[str]:
    header = shards.read_header(path)
    tokens = shards.open_shard(path, vocab_size=vocab_size)
    head = np.asarray(tokens[:n_decode]).tolist()
    text = gpt2_encoding().decode(head)
    return [
        f"{path}",
        f"  header: magic {header.magic}, version {header.version}, {header.num_tokens:,} tokens "
        f"({header.file_size:,} bytes)",
        f"  documents starting in this shard: {count_documents(tokens):,}",
        f"  first {len(head)} tokens: {head}",
        "  decoded: " + repr(text),
    ]


def validate_directory(directory: Path, vocab_size: int) -> tuple[list[str], int]:
    """Lines describing every shard of ``directory`` and the number of problems (invalid shards, shards the
    manifest does not list, another tokenizer: the trainer's start-up checks, ``data/scan.py``)."""
    scan = scan_directory(directory, vocab_size, scan_tokens=False, write_cache=False)
    lines = [f"  INVALID {p}" for p in scan.problems] + [f"  note: {n}" for n in scan.notes]
    bad = len(scan.problems)
    totals = {split: [0, 0, 0] for split in ("val", "train")}  # shards, tokens, documents
    for split in totals:
        for path in shards.list_shards(directory, split):
            try:
                tokens = shards.open_shard(path, vocab_size=vocab_size)
            except shards.ShardError as exc:
                bad += 1
                lines.append(f"  INVALID {exc}")
                continue
            documents = count_documents(tokens)
            totals[split][0] += 1
            totals[split][1] += len(tokens)
            totals[split][2] += documents
            lines.append(f"  ok  {path.name:40s} {len(tokens):>14,} tokens {documents:>10,} documents")
    for split, (n_shards, n_tokens, n_docs) in totals.items():
        lines.append(f"{split:5s}: {n_shards} shards, {n_tokens:,} tokens, {n_docs:,} documents")
    progress_path = directory / "progress.json"
    if progress_path.exists():
        progress = json.loads(progress_path.read_text(encoding="utf-8"))
        state = "finished" if progress.get("finished") else "in progress (re-run the preparation to resume)"
        lines.append(f"preparation: {state}, {len(progress.get('shards', []))} shards recorded")
    if not any(totals[s][0] for s in totals) and not bad:
        lines.append(f"no *_train_*.bin or *_val_*.bin shards in {directory}")
        bad += 1
    return lines, bad


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a shard file or a directory of shards")
    parser.add_argument("--tokens", type=int, default=64, help="how many tokens to decode from a shard")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help="token ids must be below this")
    args = parser.parse_args(argv)
    try:
        if args.path.is_dir():
            lines, bad = validate_directory(args.path, args.vocab_size)
            print(f"{args.path}:")
            print("\n".join(lines))
            return 1 if bad else 0
        print("\n".join(describe_shard(args.path, args.tokens, args.vocab_size)))
        return 0
    except (shards.ShardError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
