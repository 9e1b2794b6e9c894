"""Prepare FineWeb (or any text dataset) as GPT-2 token shards for training.

    python -m data.fineweb --out data/fineweb10B                       # FineWeb sample-10BT, streamed
    python -m data.fineweb --source HuggingFaceFW/fineweb-edu --sample sample-10BT --out data/edu10B
    python -m data.fineweb --source my_texts/ --out data/mine --max-tokens 50M   # local parquet/jsonl/txt

Writes ``<prefix>_val_000000.bin`` (the first ``--val-tokens`` tokens) and
``<prefix>_train_000001.bin``, ... in the llm.c / modded-nanogpt format, plus ``manifest.json``
and ``progress.json``. Re-running the same command after an interruption resumes exactly; a directory prepared
with other options is refused, or rebuilt with ``--overwrite``. A source smaller than the validation shard is
refused (no train shard), naming a ``--val-tokens`` that fits.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Optional

from configs.cli import HelpFormatter
from data.prepare import PrepareConfig, PrepareError, SourceSpec, prepare
from data.prepare.sources import TEXT_SAMPLE_BY, is_local

DEFAULT_SOURCE = "HuggingFaceFW/fineweb"
DEFAULT_SAMPLE = "sample-10BT"
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def parse_count(text: str) -> int:
    """``100000000``, ``1e8``, ``100M``, ``10_000`` -> int."""
    cleaned = text.strip().lower().replace("_", "").replace(",", "")
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([kmbg]?)", cleaned)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a token count such as 100000000, 1e8 or 100M, got {text!r}")
    value = float(match[1]) * _SUFFIXES[match[2]]
    if value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number of tokens, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data.fineweb",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    source = parser.add_argument_group("source")
    source.add_argument("--source", default=DEFAULT_SOURCE,
                        help="hub dataset id, or a local parquet/jsonl/txt file, a directory of them, "
                             "or a directory written by datasets' save_to_disk")
    source.add_argument("--sample", default=None,
                        help=f"hub dataset config, e.g. sample-10BT, sample-100BT (default {DEFAULT_SAMPLE} for "
                             "HuggingFaceFW datasets; local sources have none)")
    source.add_argument("--split", default="train", help="dataset split to read")
    source.add_argument("--text-column", default="text", help="column holding the document text")
    source.add_argument("--text-sample-by", choices=TEXT_SAMPLE_BY, default="document",
                        help="plain-text files: one document per file, per paragraph or per line")
    source.add_argument("--no-streaming", dest="streaming", action="store_false",
                        help="hub sources: download and cache the whole dataset first instead of streaming it")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, required=True, help="output directory for the shards")
    output.add_argument("--prefix", default=None, help="shard name prefix (default: from the source name)")
    output.add_argument("--shard-tokens", type=parse_count, default=10**8, help="tokens per training shard")
    output.add_argument("--val-tokens", type=parse_count, default=10**8,
                        help="tokens of the validation shard (the first shard)")
    output.add_argument("--max-tokens", type=parse_count, default=None,
                        help="stop after this many tokens in all (a small slice)")
    output.add_argument("--overwrite", action="store_true",
                        help="if --out was prepared by this tool with other options, delete its shards, manifest and "
                             "progress and prepare them anew (without it: an error listing the options that differ)")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                     help="tokenizer worker processes (0: tokenize in the main process; default: the CPU "
                          "cores less one, here %(default)s)")
    run.add_argument("--batch-docs", type=int, default=256, help="documents per batch handed to a worker")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    for path in (args.out, *args.out.parents):  # refused before anything is written or downloaded
        if path.exists() and not path.is_dir():
            what = "is a file" if path == args.out else f"cannot be made: its parent {path} is a file"
            raise PrepareError(f"--out {args.out} {what}, not a directory; give a directory for the shards")
    local = is_local(args.source)
    if local and args.sample is not None:
        raise PrepareError(f"--sample applies to hub datasets; {args.source} is a local source")
    sample = args.sample
    if sample is None and not local and args.source.startswith("HuggingFaceFW/"):
        sample = DEFAULT_SAMPLE
    spec = SourceSpec(
        source=args.source,
        name=sample,
        split=args.split,
        text_column=args.text_column,
        streaming=args.streaming,
        text_sample_by=args.text_sample_by,
    )
    return PrepareConfig(
        source=spec,
        out_dir=args.out,
        prefix=args.prefix,
        shard_tokens=args.shard_tokens,
        val_tokens=args.val_tokens,
        max_tokens=args.max_tokens,
        workers=args.workers,
        batch_documents=args.batch_docs,
        progress=args.progress,
    )


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = prepare(config_from_args(args), rebuild_on_mismatch=args.overwrite)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; finished shards are kept in {args.out}: re-run the same command to resume",
              file=sys.stderr)
        return 130
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
