"""Tokenize batches of documents, in worker processes, in source order, with bounded memory."""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from data.shards import MAX_TOKEN_ID
from data.tokenizer import EOT, gpt2_encoding

from .sources import PrepareError


@dataclass
class TokenizedBatch:
    """The tokens of consecutive documents, each preceded by ``<|endoftext|>``.

    ``doc_lengths[i]`` counts document i's tokens including its EOT, so the batch's documents
    can be told apart (needed to resume at an exact document).
    """

    tokens: np.ndarray  # uint16
    doc_lengths: np.ndarray  # int64


def tokenize_documents(texts: list[str]) -> TokenizedBatch:
    """``[EOT, *encode(text)]`` for each text, concatenated as uint16 (ids checked to fit)."""
    encoding = gpt2_encoding()
    flat: list[int] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = encoding.encode_ordinary(text)
        lengths[i] = len(ids) + 1
        flat.append(EOT)
        flat.extend(ids)
    tokens = np.array(flat, dtype=np.int64)
    if tokens.size and (int(tokens.max()) > MAX_TOKEN_ID or int(tokens.min()) < 0):
        raise ValueError(f"token id {int(tokens.max())} does not fit uint16 (max {MAX_TOKEN_ID})")
    return TokenizedBatch(tokens=tokens.astype(np.uint16), doc_lengths=lengths)


class WorkerPoolError(PrepareError):
    """The tokenizer worker processes died (e.g. could not start)."""


def tokenize_batches(batches: Iterable[list[str]], workers: int) -> Iterator[TokenizedBatch]:
    """Tokenized batches in input order.

    ``workers == 0`` tokenizes in this process. Otherwise a pool of ``workers`` processes does,
    with at most ``2 * workers + 1`` batches in flight: unlike ``Pool.imap``, whose feeder thread
    drains the whole input, reading stops while the workers are busy, so memory stays bounded
    however large the source. A worker that dies raises ``WorkerPoolError`` (``multiprocessing.Pool``
    would replace it and wait forever).
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        for texts in batches:
            yield tokenize_documents(texts)
        return
    max_in_flight = 2 * workers + 1
    # spawn, not fork: the parent may hold pyarrow / datasets threads, which fork does not copy safely.
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))
    pending: collections.deque = collections.deque()
    try:
        for texts in batches:
            pending.append(executor.submit(tokenize_documents, texts))
            if len(pending) >= max_in_flight:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def die_with_parent(parent_pid: int) -> None:
    """Worker start-up: end this process when the parent dies, even by ``kill -9`` (no orphaned workers).

    Linux delivers SIGTERM on the parent's death (``PR_SET_PDEATHSIG``); elsewhere a thread polls the
    parent pid. A parent already gone before this runs is caught by the pid check.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _result(future):
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise WorkerPoolError(
            f"a tokenizer worker process died ({exc}); if they cannot start here (e.g. a script read "
            "from stdin), use workers=0 (--workers 0)"
        ) from exc
