"""Source -> tokenized batches -> shards: the one code path of FineWeb and the embedded corpus.

The first shard (index 0) is validation and holds ``val_tokens`` tokens; the training shards
(index 1, 2, ...) hold ``shard_tokens`` each, the last one what is left. A document that does
not fit in the current shard continues in the next, as in the reference tools. After each
shard the exact source position (document, token within it) is saved, so an interrupted run
continues with byte-identical output.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from data import shards

from .sources import PrepareError, SourceSpec, open_text_batches
from .state import (
    Position,
    Progress,
    ShardRecord,
    check_manifest,
    load_verified_progress,
    make_manifest,
    remove_unrecorded_files,
    save_progress,
    write_json_atomic,
    MANIFEST_NAME,
    OptionsMismatch,
    remove_prepared_files,
)
from .tokenize import TokenizedBatch, tokenize_batches


@dataclass
class PrepareConfig:
    """Options of one preparation run (``workers``, ``batch_documents`` and ``progress`` do not
    change the output; the others are recorded in the manifest and must match to resume)."""

    source: SourceSpec
    out_dir: Path
    prefix: Optional[str] = None  # default: derived from the source name
    shard_tokens: int = 10**8
    val_tokens: int = 10**8
    max_tokens: Optional[int] = None
    workers: int = 1
    batch_documents: int = 256
    progress: bool = True

    def validate(self) -> None:
        if self.shard_tokens <= 0 or self.shard_tokens > shards.MAX_SHARD_TOKENS:
            raise PrepareError(f"shard_tokens must be in 1..{shards.MAX_SHARD_TOKENS}, got {self.shard_tokens}")
        if self.val_tokens <= 0 or self.val_tokens > shards.MAX_SHARD_TOKENS:
            raise PrepareError(f"val_tokens must be in 1..{shards.MAX_SHARD_TOKENS}, got {self.val_tokens}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise PrepareError(f"max_tokens must be > 0, got {self.max_tokens}")
        if self.max_tokens is not None and self.max_tokens <= self.val_tokens:
            raise PrepareError(f"--max-tokens ({self.max_tokens:,}) is not above --val-tokens ({self.val_tokens:,}): "
                               f"every token would go to the validation shard and none to training; pass a smaller "
                               f"--val-tokens, e.g. --val-tokens {max(1, self.max_tokens // 10)}")
        if self.workers < 0:
            raise PrepareError(f"workers must be >= 0, got {self.workers}")
        if self.batch_documents <= 0:
            raise PrepareError(f"batch_documents must be > 0, got {self.batch_documents}")

    @property
    def shard_prefix(self) -> str:
        return self.prefix or default_prefix(self.source.source)

    def recorded_options(self) -> dict:
        spec = self.source
        return {
            "source": spec.source,
            "name": spec.name,
            "split": spec.split,
            "text_column": spec.text_column,
            "text_sample_by": spec.text_sample_by,
            "prefix": self.shard_prefix,
            "shard_tokens": self.shard_tokens,
            "val_tokens": self.val_tokens,
            "max_tokens": self.max_tokens,
        }


def default_prefix(source: str) -> str:
    """``HuggingFaceFW/fineweb`` -> ``fineweb``; ``/x/my_docs.jsonl`` -> ``my_docs``."""
    stem = Path(source.rstrip("/")).name.split(".")[0] or "data"
    return re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_").lower() or "data"


@dataclass
class Summary:
    out_dir: Path
    shards: dict = field(default_factory=dict)  # split -> count
    tokens: dict = field(default_factory=dict)  # split -> count
    documents: int = 0
    seconds: float = 0.0
    tokens_this_run: int = 0
    resumed: bool = False
    already_complete: bool = False
    warnings: list = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.tokens_this_run / self.seconds if self.seconds > 0 else 0.0
        state = "already complete" if self.already_complete else ("resumed, done" if self.resumed else "done")
        out = [f"{state}: {self.out_dir}"]
        for split in ("val", "train"):
            out.append(f"  {split:5s} {self.shards.get(split, 0):4d} shards {self.tokens.get(split, 0):15,d} tokens")
        out.append(f"  {self.documents:,d} documents; this run {self.tokens_this_run:,d} tokens in "
                   f"{self.seconds:.1f} s ({rate:,.0f} tokens/s)")
        out.extend(f"  warning: {w}" for w in self.warnings)
        return out


class ShardSequenceWriter:
    """Fills shards in order (val first), writes each atomically and then records progress."""

    def __init__(self, config: PrepareConfig, progress: Progress):
        self.config = config
        self.out_dir = Path(config.out_dir)
        self.prefix = config.shard_prefix
        self.progress = progress
        self.buffer = np.empty(0, dtype=shards.TOKEN_DTYPE)
        self.fill = 0
        self.shard_start = progress.position
        self._open_next_shard()

    def _split(self, index: int) -> str:
        return "val" if index == 0 else "train"

    def _capacity(self, index: int) -> int:
        return self.config.val_tokens if index == 0 else self.config.shard_tokens

    def _open_next_shard(self) -> None:
        index = self.progress.next_index
        capacity = self._capacity(index)
        if self.buffer.size != capacity:
            self.buffer = np.empty(capacity, dtype=shards.TOKEN_DTYPE)
        self.fill = 0
        self.shard_start = self.progress.position

    def remaining_budget(self) -> Optional[int]:
        if self.config.max_tokens is None:
            return None
        written = sum(s.tokens for s in self.progress.shards)
        return self.config.max_tokens - written - self.fill

    def add(self, batch: TokenizedBatch, first_document: int, skip_tokens: int = 0) -> bool:
        """Append a batch whose first document has global index ``first_document``, starting at
        its token ``skip_tokens``. Returns False once ``max_tokens`` is reached."""
        ends = np.cumsum(batch.doc_lengths)
        tokens = batch.tokens
        pos = skip_tokens
        while pos < len(tokens):
            budget = self.remaining_budget()
            if budget is not None and budget <= 0:
                return False
            take = min(len(self.buffer) - self.fill, len(tokens) - pos)
            if budget is not None:
                take = min(take, budget)
            self.buffer[self.fill : self.fill + take] = tokens[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == len(self.buffer):
                position, done = _position_in_batch(ends, pos, first_document)
                self._flush(position, done)
        budget = self.remaining_budget()
        return budget is None or budget > 0

    def _flush(self, position: Position, documents_done: int) -> None:
        index = self.progress.next_index
        self._write(index, self.buffer[: self.fill], position, documents_done)
        self._open_next_shard()

    def _write(self, index: int, tokens: np.ndarray, position: Position, documents_done: int) -> None:
        name = shards.shard_filename(self.prefix, self._split(index), index)
        shards.write_shard(self.out_dir / name, tokens)
        self._record_shard(index, len(tokens), position, documents_done)

    def _record_shard(self, index: int, n_tokens: int, position: Position, documents_done: int) -> None:
        name = shards.shard_filename(self.prefix, self._split(index), index)
        self.progress.shards.append(ShardRecord(name, self._split(index), n_tokens, self.shard_start))
        self.progress.position = position
        self.progress.documents_done = documents_done
        save_progress(self.out_dir, self.progress)

    def finish(self, position: Position, documents_done: int) -> None:
        """Write the partly filled last shard, if any, and mark the run finished."""
        if self.fill:
            self._write(self.progress.next_index, self.buffer[: self.fill], position, documents_done)
            self.fill = 0
        self.progress.position = position
        self.progress.documents_done = documents_done
        self.progress.finished = True
        save_progress(self.out_dir, self.progress)


def _position_in_batch(ends: np.ndarray, pos: int, first_document: int) -> tuple[Position, int]:
    """Source position of token ``pos`` of a batch, and the number of documents completed."""
    completed = int(np.searchsorted(ends, pos, side="right"))
    start_of_doc = int(ends[completed - 1]) if completed else 0
    return Position(first_document + completed, pos - start_of_doc), first_document + completed


LOCK_NAME = ".prepare.lock"


@contextlib.contextmanager
def _exclusive(out_dir: Path, wait: bool):
    """Hold an advisory lock on ``out_dir`` so two preparations never write it at once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(out_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise PrepareError(f"another preparation is writing {out_dir}; wait for it or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(config: PrepareConfig, wait_for_lock: bool = False, rebuild_on_mismatch: bool = False) -> Summary:
    """Prepare (or resume, or confirm) the shards of ``config.out_dir``; see the module docstring.

    With ``wait_for_lock``, a run that finds another one writing the directory waits for it
    (then usually finds the work done) instead of failing. With ``rebuild_on_mismatch``, shards
    this tool made with other options are deleted and rebuilt instead of raising
    ``OptionsMismatch`` (for caches such as the embedded corpus).
    """
    config.validate()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir, wait_for_lock):
        return _prepare_locked(config, out_dir, rebuild_on_mismatch)


def _prepare_locked(config: PrepareConfig, out_dir: Path, rebuild_on_mismatch: bool) -> Summary:
    manifest = make_manifest(config.recorded_options())
    try:
        has_manifest = check_manifest(out_dir, manifest)
    except OptionsMismatch:
        if not rebuild_on_mismatch:
            raise
        remove_prepared_files(out_dir)
        has_manifest = False
    progress, warning = load_verified_progress(out_dir) if has_manifest else (Progress(), None)
    summary = Summary(out_dir=out_dir, resumed=progress.next_index > 0 and not progress.finished)
    if warning:
        summary.warnings.append(warning)
    start = time.perf_counter()
    if progress.finished:
        summary.already_complete = True
    else:
        # Open the source first: a bad source fails before anything is written.
        batches = open_text_batches(config.source, config.batch_documents, progress.position.document)
        if not has_manifest:
            write_json_atomic(out_dir / MANIFEST_NAME, manifest)
        remove_unrecorded_files(out_dir, config.shard_prefix, progress)
        summary.tokens_this_run = _run(config, progress, batches)
    summary.seconds = time.perf_counter() - start
    for split in ("val", "train"):
        summary.shards[split] = sum(1 for s in progress.shards if s.split == split)
        summary.tokens[split] = progress.tokens(split)
    summary.documents = progress.documents_done
    if not summary.shards["train"]:  # a corpus smaller than the validation shard: nothing to train on
        remove_prepared_files(out_dir)
        total = summary.tokens["val"]
        raise PrepareError(
            f"{config.source.source} gave {total:,} tokens in all, every one inside the validation shard "
            f"(--val-tokens {config.val_tokens:,}), so no train shard could be written; the files are removed from "
            f"{out_dir}. Re-run with a validation part smaller than the corpus, e.g. --val-tokens "
            f"{max(1, total // 10)} (a tenth of it)"
        )
    return summary


def _run(config: PrepareConfig, progress: Progress, batches) -> int:
    """Tokenize from the saved position to the end (or ``max_tokens``); returns tokens written."""
    from tqdm import tqdm

    start = progress.position
    writer = ShardSequenceWriter(config, progress)
    written_before = sum(s.tokens for s in progress.shards)
    document, skip = start.document, start.offset
    total = config.max_tokens
    bar = tqdm(total=total, initial=written_before, unit="tok", unit_scale=True, disable=not config.progress,
               desc=f"tokenizing {config.source.source}", dynamic_ncols=True)
    tokenized = tokenize_batches(batches, config.workers)
    try:
        for batch in tokenized:
            before = writer.fill + sum(s.tokens for s in progress.shards)
            more = writer.add(batch, document, skip_tokens=skip)
            after = writer.fill + sum(s.tokens for s in progress.shards)
            bar.update(after - before)
            bar.set_postfix(docs=f"{document + len(batch.doc_lengths):,}", shards=progress.next_index, refresh=False)
            if not more:
                position, done = _position_in_batch(np.cumsum(batch.doc_lengths), skip + (after - before), document)
                writer.finish(position, done)
                break
            document += len(batch.doc_lengths)
            skip = 0
        else:
            writer.finish(Position(document, 0), document)
    finally:
        tokenized.close()  # stops the worker pool at once, also on errors and at max_tokens
        bar.close()
    return sum(s.tokens for s in progress.shards) - written_before
