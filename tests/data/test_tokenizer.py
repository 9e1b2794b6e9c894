"""The offline GPT-2 encoding: known ids of known strings (tiktoken's gpt2 gives the same), round trips."""

import pytest

from data import tokenizer
from data.tokenizer import EOT, gpt2_encoding

# Ids from the GPT-2 vocabulary (encoder.json of the original release).
KNOWN = {
    "Hello world": [15496, 995],
    "hello": [31373],
    " the": [262],
    "The": [464],
    "!": [0],
    "\n\n": [628],
    "I'm": [40, 1101],
    "  spaces": [220, 9029],
}


@pytest.mark.parametrize("text, ids", list(KNOWN.items()))
def test_known_token_ids(text, ids):
    assert gpt2_encoding().encode_ordinary(text) == ids


def test_vocab_and_end_of_text():
    enc = gpt2_encoding()
    assert enc.n_vocab == 50257 and enc.max_token_value == 50256
    assert enc.eot_token == EOT == 50256
    assert enc.encode("<|endoftext|>", allowed_special="all") == [EOT]
    assert enc.decode([EOT]) == "<|endoftext|>"


def test_round_trip_on_mixed_text():
    text = "Ünïcödé — naïve café, 3.14159 and 'quotes' they're\n\tindented\r\n 中文 emoji 🚀."
    enc = gpt2_encoding()
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    assert all(0 <= i < 50256 for i in ids)


def test_encoding_is_cached():
    assert gpt2_encoding() is gpt2_encoding()


def test_ranks_checksum_is_enforced(tmp_path):
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(tokenizer.RANKS_PATH.read_bytes()[:-10])
    with pytest.raises(tokenizer.TokenizerAssetError, match="sha256"):
        tokenizer.load_ranks(bad)
    with pytest.raises(tokenizer.TokenizerAssetError, match="cannot read"):
        tokenizer.load_ranks(tmp_path / "missing.tiktoken")
