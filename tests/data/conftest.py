"""Small local sources for the preparation tests, written by the tests themselves."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from data.tokenizer import EOT, gpt2_encoding

_WORDS = ("the model reads tokens from shards and every rank takes its own slice of the stream while "
          "validation loss falls slowly naïve café 東京 3.14 don't won't").split()


def make_documents(n: int = 120, seed: int = 0) -> list[str]:
    """Varied documents: short, long, empty, unicode, with newlines."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        length = rng.choice([0, 1, 5, 40, 200, 600]) if i % 17 else 0
        words = [rng.choice(_WORDS) for _ in range(length)]
        docs.append(" ".join(words).replace(" the ", "\nthe ", 2))
    return docs


def expected_stream(docs: list[str]) -> np.ndarray:
    """[EOT, *tokens(doc)] for each document, concatenated: what all shards together must hold."""
    enc = gpt2_encoding()
    out = []
    for doc in docs:
        out.append(EOT)
        out.extend(enc.encode_ordinary(doc))
    return np.array(out, dtype=np.uint16)


def write_jsonl(path, docs, column="text"):
    with open(path, "w", encoding="utf-8") as handle:
        for i, doc in enumerate(docs):
            handle.write(json.dumps({column: doc, "id": i}) + "\n")
    return path


def write_parquet(path, docs, column="text", rows_per_group=25):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: docs, "id": list(range(len(docs)))})
    pq.write_table(table, path, row_group_size=rows_per_group)
    return path


@pytest.fixture(scope="session")
def documents():
    return make_documents()


@pytest.fixture(scope="session")
def jsonl_source(tmp_path_factory, documents):
    return write_jsonl(tmp_path_factory.mktemp("src") / "docs.jsonl", documents)
