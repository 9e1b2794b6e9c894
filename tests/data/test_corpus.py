"""The embedded corpus: real English, tokenized by the FineWeb code path into val + train shards."""

import json

import numpy as np
import pytest

from data import corpus, shards
from data.tokenizer import EOT, gpt2_encoding


def test_corpus_file_is_english_documents():
    lines = corpus.CORPUS_PATH.read_text(encoding="utf-8").splitlines()
    documents = [json.loads(line)["text"] for line in lines]
    assert len(documents) > 300
    text = " ".join(documents)
    assert 1_000_000 < len(text) < 5_000_000
    words = text.split()
    common = {"the", "of", "is", "a", "to", "and"}
    assert sum(w in common for w in words) / len(words) > 0.08


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    return corpus.ensure_embedded_shards(tmp_path_factory.mktemp("embedded"))


def test_embedded_shards_split_and_token_counts(embedded_dir):
    val = shards.list_shards(embedded_dir, "val")
    train = shards.list_shards(embedded_dir, "train")
    assert [p.name for p in val] == ["stdlib_docs_val_000000.bin"]
    assert train and train[0].name == "stdlib_docs_train_000001.bin"
    n_val = len(shards.open_shard(val[0], vocab_size=50257))
    n_train = sum(len(shards.open_shard(p, vocab_size=50257)) for p in train)
    assert n_val == corpus.VAL_TOKENS
    assert 0.05 < n_val / (n_val + n_train) < 0.15


def test_embedded_shards_decode_to_the_corpus(embedded_dir):
    first_document = json.loads(corpus.CORPUS_PATH.open(encoding="utf-8").readline())["text"]
    tokens = np.asarray(shards.open_shard(embedded_dir / "stdlib_docs_val_000000.bin"))
    assert tokens[0] == EOT
    second_eot = int(np.flatnonzero(tokens == EOT)[1])
    assert gpt2_encoding().decode(tokens[1:second_eot].tolist()) == first_document


def test_ensure_is_idempotent(embedded_dir):
    before = {p.name: p.stat().st_mtime_ns for p in embedded_dir.iterdir()}
    assert corpus.ensure_embedded_shards(embedded_dir) == embedded_dir
    assert {p.name: p.stat().st_mtime_ns for p in embedded_dir.iterdir()} == before


def test_shards_from_another_checkout_path_are_rebuilt(tmp_path):
    out = corpus.ensure_embedded_shards(tmp_path / "emb")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["prepare"]["source"] = "/elsewhere/data/corpus/stdlib_docs.jsonl"
    manifest_path.write_text(json.dumps(manifest))
    (out / "stdlib_docs_train_000002.bin").write_bytes(b"junk")
    corpus.ensure_embedded_shards(out)
    assert json.loads(manifest_path.read_text())["prepare"]["source"] == str(corpus.CORPUS_PATH)
    assert len(shards.open_shard(out / "stdlib_docs_train_000002.bin")) == corpus.SHARD_TOKENS
