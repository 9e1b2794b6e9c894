"""The embedded default corpus: English documentation text of the Python standard library.

``stdlib_docs.jsonl`` (committed; see README.md here for source and license) is tokenized into
train and val shards by the same code as FineWeb (``data.prepare``), on first use, into
``data/cache/embedded/`` (git-ignored). Later calls verify the shards and return at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

CORPUS_PATH = Path(__file__).resolve().parent / "stdlib_docs.jsonl"
DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "cache" / "embedded"
PREFIX = "stdlib_docs"
VAL_TOKENS = 2**16  # about 10% of the corpus
SHARD_TOKENS = 2**18


def ensure_embedded_shards(out_dir: Optional[Union[str, Path]] = None, progress: bool = False) -> Path:
    """Tokenize the embedded corpus into ``out_dir`` (default ``data/cache/embedded``) unless
    already done; return the directory, which holds ``stdlib_docs_val_000000.bin`` and
    ``stdlib_docs_train_00000N.bin``."""
    from data.prepare import PrepareConfig, SourceSpec, prepare

    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT_DIR
    config = PrepareConfig(
        source=SourceSpec(source=str(CORPUS_PATH)),
        out_dir=out,
        prefix=PREFIX,
        shard_tokens=SHARD_TOKENS,
        val_tokens=VAL_TOKENS,
        workers=0,
        batch_documents=64,
        progress=progress,
    )
    # Concurrent callers (e.g. the ranks of a torchrun test) wait for the first; shards made by
    # another version of this function or from another checkout path are rebuilt.
    prepare(config, wait_for_lock=True, rebuild_on_mismatch=True)
    return out
