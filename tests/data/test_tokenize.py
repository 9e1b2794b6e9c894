"""Tokenizer workers: EOT placement, document lengths, order and bounded read-ahead."""

import numpy as np
import pytest

from data.prepare.tokenize import tokenize_batches, tokenize_documents
from data.tokenizer import EOT, gpt2_encoding


def test_eot_before_each_document_and_lengths():
    batch = tokenize_documents(["Hello world", "", "The"])
    assert batch.tokens.dtype == np.uint16
    assert batch.tokens.tolist() == [EOT, 15496, 995, EOT, EOT, 464]
    assert batch.doc_lengths.tolist() == [3, 1, 2]


def test_empty_batch():
    batch = tokenize_documents([])
    assert batch.tokens.size == 0 and batch.doc_lengths.size == 0


def test_in_process_batches_keep_order():
    texts = [[f"document {i} of batch {b}" for i in range(3)] for b in range(5)]
    out = list(tokenize_batches(iter(texts), workers=0))
    enc = gpt2_encoding()
    for got, batch in zip(out, texts):
        assert got.tokens.tolist() == [t for text in batch for t in [EOT, *enc.encode_ordinary(text)]]


@pytest.mark.slow
def test_worker_pool_reads_ahead_at_most_2w_plus_1_batches():
    pulled = []

    def source():
        for b in range(20):
            pulled.append(b)
            yield [f"batch {b} text"] * 4

    workers = 2
    expected = [tokenize_documents([f"batch {b} text"] * 4).tokens.tolist() for b in range(20)]
    for received, batch in enumerate(tokenize_batches(source(), workers=workers)):
        assert batch.tokens.tolist() == expected[received]
        assert len(pulled) - received <= 2 * workers + 1


@pytest.mark.slow
def test_workers_that_cannot_start_raise_instead_of_hanging():
    """A script read from stdin cannot be re-imported by spawned workers: an error, not a hang."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    script = (
        "from data.prepare.tokenize import tokenize_batches, WorkerPoolError\n"
        "try:\n"
        "    list(tokenize_batches(iter([['a b']]), workers=1))\n"
        "except WorkerPoolError as exc:\n"
        "    print('raised:', exc)\n"
    )
    result = subprocess.run([sys.executable, "-"], input=script, cwd=repo, capture_output=True, text=True,
                            timeout=120)
    assert "raised: a tokenizer worker process died" in result.stdout and "--workers 0" in result.stdout
